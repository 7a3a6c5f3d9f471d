"""The float64 numpy oracle of the Adasum tree accord computes: accord.testing.adasum_tree
(shipped with the package, so accord.bench checks its results with the same reference)."""
from accord.testing import adasum_tree  # noqa: F401
