"""Runs `python -m accord.demo` with this script's arguments (launched by tests/test_demo.py:
tests/launch.py starts scripts, not modules)."""
import sys

from _worker import worker_main


def main():
    from accord.demo import main as demo_main

    demo_main(sys.argv[1:])


if __name__ == "__main__":
    worker_main(main)
