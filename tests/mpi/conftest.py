# Scripts here are distributed workers launched by tests/launch.py, never pytest modules.
collect_ignore_glob = ["*.py"]
