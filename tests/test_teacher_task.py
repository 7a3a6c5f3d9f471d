"""The studies' teacher-network task: deterministic, the digits_shards interface, shards
partition the training set."""
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from accord.demo import teacher_shards  # noqa: E402


@pytest.mark.parametrize("skew", [False, True])
def test_teacher_shards_partition_and_determinism(skew):
    parts = [teacher_shards(r, 4, seed=3, skew=skew, n=1000) for r in range(4)]
    train, test = parts[0][1], parts[0][2]
    assert train[0].shape == (800, 64) and test[0].shape == (200, 64)
    assert train[0].dtype == torch.float32 and int(train[1].max()) < 10
    shard_x = torch.cat([p[0][0] for p in parts])
    assert shard_x.shape == train[0].shape
    # every training sample is in exactly one shard (rows compared as sorted sets)
    key = lambda x: x[:, 0].sort().values  # noqa: E731
    assert torch.equal(key(shard_x), key(train[0]))
    again = teacher_shards(2, 4, seed=3, skew=skew, n=1000)
    assert torch.equal(again[0][0], parts[2][0][0]) and torch.equal(again[0][1], parts[2][0][1])
    if skew:  # label-sorted blocks: each rank sees few classes
        assert all(len(p[0][1].unique()) <= 5 for p in parts)


def test_teacher_shards_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank 4"):
        teacher_shards(4, 4)
