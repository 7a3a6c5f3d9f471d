"""float64 numpy oracle of the Adasum tree accord computes (see accord.adasum's module doc).

It lives in the installed package (accord.bench checks its own results with it) and is plain
numpy, independent of the kernels and of accord.adasum's VHDD.
"""
from accord.bench.allreduce import adasum_tree  # noqa: F401
