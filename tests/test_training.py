"""Short real training runs (sklearn digits, 4 ranks) for the gradient-aggregation ops."""
import pytest
from launch import requires_mpi, run_mpi

pytestmark = pytest.mark.mpi


@requires_mpi
def test_training_reaches_accuracy():
    result = run_mpi("training_worker.py", 4, timeout=240)
    assert "all methods reached" in result.output, result.output[-3000:]


@pytest.mark.parametrize("skew", [False, True])
def test_digits_shards_partition_the_training_set(skew):
    """accord.demo.digits_shards (the data of these runs and benchmarks/averaging.py): disjoint
    test and training sets, shards that cover the training set once, label-sorted shards with
    ``skew``; a rank outside [0, size) is refused."""
    pytest.importorskip("sklearn")
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    from accord.demo import digits_shards

    size = 3
    parts = [digits_shards(r, size, skew=skew) for r in range(size)]
    (_, train, test), rows = parts[0], lambda x: {tuple(v) for v in x.numpy()}
    assert all(torch.equal(p[1][0], train[0]) and torch.equal(p[2][0], test[0]) for p in parts)
    shards = [p[0] for p in parts]
    assert sum(len(s[1]) for s in shards) == len(train[1])
    assert len(test[1]) == (len(train[1]) + len(test[1])) // 5
    shard_rows = set().union(*(rows(s[0]) for s in shards))
    assert shard_rows == rows(train[0]) and not rows(train[0]) & rows(test[0])
    if skew:
        labels = np.concatenate([s[1].numpy() for s in shards])
        assert np.all(np.diff(labels) >= 0)
    else:
        assert np.array_equal(shards[1][1].numpy(), train[1].numpy()[1::size])
    with pytest.raises(ValueError, match="rank 3 is not in"):
        digits_shards(3, size)
