"""Dataset store and CLI: bad names, damaged or half-written directories, config mismatches."""
import glob
import os

import pytest

from slnjax.data import (
    DatasetError, dataset_path, ensure_built, load_source, problems, make_builder,
    resolve_config, task_names)
from slnjax.data.__main__ import main
from slnjax.data.tasks import parity

CFG = resolve_config("parity", None, name="store", num_train=40, num_test=10)


def test_unknown_task_lists_valid_ones(tmp_path):
  for call in (lambda: ensure_built("additon", str(tmp_path)),
               lambda: load_source("additon", "train", str(tmp_path))):
    with pytest.raises(ValueError, match="unknown task 'additon'; valid tasks: addition, "):
      call()
  assert {"addition", "parity", "maze", "tictactoe", "facts", "gsm8k", "mbpp",
          "humaneval"} == set(task_names())


def test_unknown_split_and_config(tmp_path):
  ensure_built("parity", str(tmp_path), CFG)
  with pytest.raises(ValueError, match="unknown split 'validation'.*available: train, test"):
    load_source("parity", "validation", str(tmp_path), CFG)
  with pytest.raises(ValueError, match="unknown config 'big'.*interpolation, extrapolation"):
    ensure_built("parity", str(tmp_path), "big")
  with pytest.raises(ValueError, match="built-in name"):
    resolve_config("parity", "extrapolation", num_train=5)


def test_not_built_is_reported(tmp_path):
  with pytest.raises(DatasetError, match="not built.*python -m slnjax.data --task parity"):
    load_source("parity", "train", str(tmp_path), CFG)


def _shard(path, split):
  (file,) = glob.glob(os.path.join(path, f"*-{split}.array_record-*"))
  return file


@pytest.mark.parametrize("damage", ["truncate", "delete_shard", "delete_info", "garble_info"])
def test_damaged_dataset_is_detected_then_rebuilt(damage, tmp_path):
  data_dir = str(tmp_path)
  ensure_built("parity", data_dir, CFG)
  path = dataset_path("parity", data_dir, CFG)
  before = [load_source("parity", "train", data_dir, CFG)[i] for i in range(40)]
  shard, info = _shard(path, "train"), os.path.join(path, "dataset_info.json")
  if damage == "truncate":
    with open(shard, "r+b") as f:
      f.truncate(os.path.getsize(shard) // 2)
  elif damage == "delete_shard":
    os.remove(shard)
  elif damage == "delete_info":
    os.remove(info)
  else:
    with open(info, "w") as f:
      f.write("{not json")
  with pytest.raises(DatasetError, match="not usable|unreadable"):
    load_source("parity", "train", data_dir, CFG)
  ensure_built("parity", data_dir, CFG)
  source = load_source("parity", "train", data_dir, CFG)
  assert [source[i] for i in range(40)] == before


def test_wrong_record_count_is_detected(tmp_path):
  data_dir = str(tmp_path)
  ensure_built("parity", data_dir, CFG)
  other = resolve_config("parity", None, name="other", num_train=41, num_test=10)
  ensure_built("parity", data_dir, other)
  path = dataset_path("parity", data_dir, CFG)
  os.replace(_shard(dataset_path("parity", data_dir, other), "train"), _shard(path, "train"))
  assert any("has 41 records, dataset_info says 40" in p
             for p in problems(make_builder("parity", data_dir, CFG)))


def test_interrupted_build_is_reported_then_cleaned(tmp_path):
  data_dir = str(tmp_path)
  path = dataset_path("parity", data_dir, CFG)
  leftover = os.path.join(os.path.dirname(path), f"incomplete.AB12CD_{parity.Parity.VERSION}")
  os.makedirs(leftover)
  with open(os.path.join(leftover, "parity-train.array_record-00000-of-00001"), "wb") as f:
    f.write(b"half")
  with pytest.raises(DatasetError, match=f"interrupted build left .*incomplete.AB12CD_{parity.Parity.VERSION}"):
    load_source("parity", "train", data_dir, CFG)
  ensure_built("parity", data_dir, CFG)
  assert not os.path.exists(leftover)
  assert len(load_source("parity", "train", data_dir, CFG)) == 40


def test_same_name_other_fields_is_not_reused(tmp_path):
  data_dir = str(tmp_path)
  ensure_built("parity", data_dir, CFG)
  changed = resolve_config("parity", None, name="store", num_train=30, num_test=10)
  with pytest.raises(DatasetError, match="built with config fields"):
    load_source("parity", "train", data_dir, changed)
  ensure_built("parity", data_dir, changed)
  assert len(load_source("parity", "train", data_dir, changed)) == 30


def test_rebuild_flag_and_cli(tmp_path, capsys):
  data_dir = str(tmp_path)
  assert main(["--task", "tictactoe", "--data_dir", data_dir, "--check"]) == 1
  assert "not built" in capsys.readouterr().err
  assert main(["--task", "tictactoe", "--data_dir", data_dir]) == 0
  out = capsys.readouterr().out
  assert "train: 3616 examples, difficulty 1..9" in out and "test: 904 examples" in out
  assert main(["--task", "tictactoe", "--data_dir", data_dir, "--check"]) == 0
  marker = os.path.join(dataset_path("tictactoe", data_dir), "marker")
  open(marker, "w").close()
  assert main(["--task", "tictactoe", "--data_dir", data_dir]) == 0
  assert os.path.exists(marker)  # a sound dataset is reused
  assert main(["--task", "tictactoe", "--data_dir", data_dir, "--rebuild"]) == 0
  assert not os.path.exists(marker)
  assert main(["--task", "nope", "--data_dir", data_dir]) == 1
  assert "valid tasks: addition" in capsys.readouterr().err
  assert main(["--list"]) == 0
  assert "parity" in capsys.readouterr().out


def test_config_from_mapping():
  cfg = resolve_config("parity", {"base": "extrapolation", "name": "mine", "num_train": 7})
  assert (cfg.name, cfg.length, cfg.num_train) == ("mine", 96, 7)
  assert tuple(cfg.test_nonzero) == (49, 96)
  assert resolve_config("parity", {"base": "extrapolation"}).name == "extrapolation"
  with pytest.raises(TypeError):
    resolve_config("parity", {"name": "x", "no_such_field": 1})
