"""grain pipeline: batch layout, seeded shuffle, per-process sharding, resumable state, packing,
and global batch assembly."""
import grain
import jax
import numpy as np
import pytest

from slnjax.data import (
    ByteTokenizer, encode_record, ensure_built, global_batch, load_source, make_dataset,
    make_task_dataset, per_process_batch_size, resolve_config, shard_range, verify_batch)

P, M = 16, 8
CFG = resolve_config("addition", None, name="pipe", num_train=45, num_test=13, num_test_longer=5)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("data"))
  ensure_built("addition", d, CFG)
  return d


@pytest.fixture(scope="module")
def source(data_dir):
  return load_source("addition", "train", data_dir, CFG)


def take(ds_or_it, n):
  it = iter(ds_or_it)
  return [next(it) for _ in range(n)]


def test_batch_layout_masks_and_index(source):
  tok = ByteTokenizer()
  (batch,) = take(make_dataset(source, tok, batch_size=4, prompt_len=P, target_len=M), 1)
  shapes = {k: v.shape for k, v in batch.items()}
  assert shapes == {"prompt_ids": (4, P), "prompt_len": (4,), "target_ids": (4, M),
                    "target_len": (4,), "ids": (4, P + M), "prompt_mask": (4, P + M),
                    "loss_mask": (4, P + M), "difficulty": (4,), "index": (4,), "valid": (4,)}
  assert all(v.dtype == np.int32 for v in batch.values())
  for b in range(4):
    rec = source[int(batch["index"][b])]
    pl, tl = batch["prompt_len"][b], batch["target_len"][b]
    assert batch["prompt_ids"][b, 0] == tok.bos_id
    assert tok.decode(batch["prompt_ids"][b]) == rec["prompt"].decode()
    assert batch["target_ids"][b, tl - 1] == tok.eos_id
    assert tok.decode(batch["target_ids"][b]) == rec["target"].decode()
    assert (batch["prompt_ids"][b, pl:] == tok.pad_id).all()
    ids = batch["ids"][b]
    np.testing.assert_array_equal(ids[:pl], batch["prompt_ids"][b, :pl])
    np.testing.assert_array_equal(ids[pl:pl + tl], batch["target_ids"][b, :tl])
    assert (ids[pl + tl:] == tok.pad_id).all()
    np.testing.assert_array_equal(np.flatnonzero(batch["prompt_mask"][b]), np.arange(pl))
    np.testing.assert_array_equal(np.flatnonzero(batch["loss_mask"][b]), np.arange(pl, pl + tl))
    assert batch["difficulty"][b] == rec["difficulty"] and batch["valid"][b] == 1
  answers = [tok.decode(t) for t in batch["target_ids"]]
  assert verify_batch("addition", source, batch["index"], answers).all()
  assert not verify_batch("addition", source, batch["index"], ["x"] * 4).any()


def test_seeded_shuffle_is_deterministic_and_reshuffles_each_epoch(source):
  kw = dict(batch_size=5, prompt_len=P, target_len=M, shard=grain.sharding.NoSharding())
  a = [b["index"] for b in take(make_dataset(source, seed=3, **kw), 18)]
  b = [b["index"] for b in take(make_dataset(source, seed=3, **kw), 18)]
  c = [b["index"] for b in take(make_dataset(source, seed=4, **kw), 18)]
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  flat = np.concatenate(a)
  epoch1, epoch2 = flat[:45], flat[45:90]
  assert sorted(epoch1) == sorted(epoch2) == list(range(45))  # every record once per epoch
  assert not np.array_equal(epoch1, epoch2)


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_two_processes_cover_the_data_exactly_once(source, drop_remainder):
  seen = []
  for index in range(2):
    shard = grain.sharding.ShardOptions(index, 2, drop_remainder=drop_remainder)
    ds = make_dataset(source, batch_size=4, prompt_len=P, target_len=M, num_epochs=1,
                      shard=shard, drop_remainder=False)
    seen.append(np.concatenate([b["index"] for b in ds]))
  assert not set(seen[0]) & set(seen[1])
  together = sorted(np.concatenate(seen))
  assert together == (list(range(44)) if drop_remainder else list(range(45)))
  assert len(seen[0]) - len(seen[1]) == (0 if drop_remainder else 1)


def test_shard_range_matches_grain_semantics():
  ranges = [shard_range(10, grain.sharding.ShardOptions(i, 4)) for i in range(4)]
  assert ranges == [(0, 3), (3, 6), (6, 8), (8, 10)]
  ranges = [shard_range(10, grain.sharding.ShardOptions(i, 4, drop_remainder=True))
            for i in range(4)]
  assert ranges == [(0, 2), (2, 4), (4, 6), (6, 8)]


def test_padded_eval_batches_equal_across_processes(data_dir):
  source = load_source("addition", "test", data_dir, CFG)  # 13 records
  per_process = []
  for index in range(3):
    ds = make_dataset(source, batch_size=2, prompt_len=P, target_len=M, shuffle=False,
                      num_epochs=1, pad_final_batch=True,
                      shard=grain.sharding.ShardOptions(index, 3))
    per_process.append(list(ds))
  assert [len(b) for b in per_process] == [3, 3, 3]  # shards of 5, 4, 4 records
  valid = [np.concatenate([b["index"][b["valid"] == 1] for b in bs]) for bs in per_process]
  assert sorted(np.concatenate(valid)) == list(range(13))
  assert [int(sum(b["valid"].sum() for b in bs)) for bs in per_process] == [5, 4, 4]


@pytest.mark.parametrize("pack", [False, True])
def test_iterator_state_round_trips(source, pack):
  ds = make_dataset(source, batch_size=4, prompt_len=P, target_len=M, seed=7, pack=pack)
  it = iter(ds)
  take(it, 5)
  state = it.get_state()
  expected = take(it, 15)  # runs past an epoch boundary
  resumed = iter(make_dataset(source, batch_size=4, prompt_len=P, target_len=M, seed=7,
                              pack=pack))
  resumed.set_state(state)
  for want, got in zip(expected, take(resumed, 15)):
    assert want.keys() == got.keys()
    for k in want:
      np.testing.assert_array_equal(want[k], got[k])


def test_packing_segments(source):
  tok = ByteTokenizer()
  (batch,) = take(make_dataset(source, tok, batch_size=3, prompt_len=P, target_len=M,
                               seq_len=40, pack=True), 1)
  assert set(batch) == {"ids", "prompt_mask", "loss_mask", "segment_ids", "positions"}
  assert batch["ids"].shape == (3, 40)
  seg, ids = batch["segment_ids"], batch["ids"]
  assert seg.max() >= 2  # several examples share a row
  for row in range(3):
    for s in range(1, seg[row].max() + 1):
      where = np.flatnonzero(seg[row] == s)
      assert ids[row, where[0]] == tok.bos_id and ids[row, where[-1]] == tok.eos_id
      np.testing.assert_array_equal(batch["positions"][row, where], np.arange(len(where)))
      both = batch["prompt_mask"][row, where] + batch["loss_mask"][row, where]
      assert (both == 1).all()
    assert (ids[row][seg[row] == 0] == tok.pad_id).all()


def test_overflow_error_and_truncate():
  tok = ByteTokenizer()
  rec = {"prompt": b"123456789+1=", "target": b"123456790", "difficulty": 9}
  with pytest.raises(ValueError, match="record 7: prompt 13 tokens \\(limit 8\\)"):
    encode_record(rec, 7, tok, prompt_len=8, target_len=4, seq_len=12)
  out = encode_record(rec, 7, tok, prompt_len=8, target_len=4, seq_len=12, overflow="truncate")
  assert out["prompt_ids"][0] == tok.bos_id and tok.decode(out["prompt_ids"]) == "6789+1="
  assert out["target_len"] == 4 and tok.decode(out["target_ids"]) == "1234"
  assert out["loss_mask"].sum() == 4


def test_make_task_dataset_and_batch_size_helper(data_dir):
  ds, source = make_task_dataset("addition", "test_longer", data_dir=data_dir, config=CFG,
                                 batch_size=5, prompt_len=32, target_len=16, num_epochs=1)
  (batch,) = list(ds)
  assert sorted(batch["index"]) == list(range(len(source)))
  assert per_process_batch_size(32, process_count=4) == 8
  with pytest.raises(ValueError, match="does not split"):
    per_process_batch_size(30, process_count=4)


def test_global_batch_shards_the_batch_axis(source):
  n = len(jax.devices())
  mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(n, 1), ("data", "fsdp"))
  (local,) = take(make_dataset(source, batch_size=2 * n, prompt_len=P, target_len=M), 1)
  arrays = global_batch(local, mesh)
  assert arrays.keys() == local.keys()
  ids = arrays["ids"]
  assert ids.shape == (2 * n * jax.process_count(), P + M)
  assert ids.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
  np.testing.assert_array_equal(np.asarray(ids), local["ids"])
  only_data = global_batch(local, mesh, batch_axes=("data", "expert"))  # unknown axis ignored
  assert only_data["ids"].sharding.spec == jax.sharding.PartitionSpec(("data",))


def test_iterator_state_through_orbax(source, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")

  def make():
    return make_dataset(source, batch_size=3, prompt_len=P, target_len=M, seed=2)

  it = iter(make())
  take(it, 4)
  manager = ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("data",))
  manager.save(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  manager.wait_until_finished()
  expected = [b["index"] for b in take(it, 20)]
  resumed = iter(make())
  manager.restore(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  np.testing.assert_array_equal(expected, [b["index"] for b in take(resumed, 20)])
