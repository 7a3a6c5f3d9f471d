"""Runs ``python -m accord.bench`` with this script's arguments (launch.run_mpi and run_torch
take a script path, not ``-m module``). Launched by tests/test_bench.py."""
import sys

from accord.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
