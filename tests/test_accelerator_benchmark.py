"""The accelerator benchmark (benchmarks/accelerator) at --tiny size on the CPU: every section
writes its rows, the FLOPs formula counts exactly the step's products, and a failing or
overrunning measurement is recorded without losing the rest."""
import argparse
import json
import os
import subprocess
import sys

import jax
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from benchmarks.accelerator import __main__ as cli  # noqa: E402
from benchmarks.accelerator import report, train_step  # noqa: E402
from slnjax import aot, lobes  # noqa: E402


def test_tiny_run_writes_every_section(tmp_path):
  assert cli.main(["--tiny", "--in-process", "--out", str(tmp_path)]) == 0
  res = json.loads((tmp_path / "results.json").read_text())
  secs = res["sections"]
  assert [c["error"] for s in secs.values() for c in s["children"]] == [None] * 7
  dev = secs["device"]["rows"][0]
  assert dev["matmul_flops_per_s"] > 0 and dev["copy_bytes_per_s"] > 0
  train = secs["train"]["rows"]
  assert [(r["lobe"], r["remat"]) for r in train] == [("tiny", "none"), ("tiny", "full")]
  for r in train:
    assert r["min_s"] > 0 and r["model_flops_per_s"] > 0 and r["loss"] > 0
    # tiny lobes: norms, softmaxes and AdamW weigh next to the products; remat adds more
    assert 1.0 < r["flops_check"]["xla_over_formula"] < 2.5
  assert train[1]["flops_check"]["xla_over_formula"] > train[0]["flops_check"]["xla_over_formula"]
  for name, key in (("bptt", "n_tokens"), ("decoding", "batch")):
    rows = secs[name]["rows"]
    sides = sorted({r["side"] for r in rows})
    assert len(sides) == 2 and all(r["min_s"] > 0 for r in rows)
    assert {r[key] for r in rows if r["side"] == sides[0]} == {
        r[key] for r in rows if r["side"] == sides[1]}
  assert all(r["new_ids_shape"] == [2, r["batch"], 4] for r in secs["decoding"]["rows"]
             if r["side"] == "slnjax")
  s = res["summary"]
  assert [b["speedup"] > 0 for b in s["bptt"]] == [True] and len(s["decoding"]) == 2
  md = (tmp_path / "RESULTS.md").read_text()
  for head in ("## 0. Device", "## 1. Train step", "## 2. Soft-token BPTT", "## 3. Rollout"):
    assert head in md
  assert "Errors" not in md


@pytest.mark.parametrize("family", ["neox", "llama"])
def test_formula_counts_every_product_of_the_step(family):
  """6 N tokens + attention equals the matmul FLOPs of the step's jaxpr (up to the score
  heads' dot products with one vector)."""
  cfg = lobes.tiny(family, d_model=64, d_ff=256, vocab_size=512)
  _, _, init, step = train_step.build(cfg)
  b, r = train_step.synthetic(cfg, 2, 16)
  got, _ = aot.jaxpr_flops(jax.make_jaxpr(step)(jax.eval_shape(init, jax.random.key(0)), b, r))
  assert train_step.model_flops(cfg, 2, 16)["total"] == pytest.approx(got, rel=1e-4)


def test_a_failing_or_overrunning_child_is_recorded(tmp_path):
  args = argparse.Namespace(dtype="auto", tiny=True)
  bad = cli._spawn("nosuch:jax", args, 120, str(tmp_path / "bad.log"))
  assert bad["rc"] == 1 and "KeyError" in bad["error"] and bad["rows"] == []
  slow = cli._spawn("device", args, 0.5, str(tmp_path / "slow.log"))
  assert slow["rc"] is None and "killed after" in slow["error"]


def test_bad_arguments_give_one_error_line(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["--tiny", "--sections", "train,gpu", "--budgets", "train=x", "--out", str(tmp_path)])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: unknown section(s) ['gpu']")
  assert "train=x" in err[0]


def test_limits_of_an_h200_and_given_ones():
  res = {"machine": {"gpus": [{"name": "NVIDIA H200"}]}, "sections": {}, "given_limits": {}}
  assert report.limits(res)["datasheet_flops"] == 989e12
  res = {"machine": {"gpus": []}, "sections": {}, "given_limits": {"datasheet_flops": 1e15}}
  assert report.limits(res) == {"datasheet_flops": 1e15}


def test_benchmark_path_imports_nothing_a_gpu_image_lacks():
  """The GPU machine has no ml_collections, grain, TFDS or TensorFlow: importing every
  module of the benchmark (and what its children run) must not need them."""
  code = (
      "import importlib.abc, sys\n"
      "BLOCK = ('ml_collections', 'grain', 'tensorflow_datasets', 'array_record', 'tensorflow')\n"
      "class B(importlib.abc.MetaPathFinder):\n"
      "  def find_spec(self, name, path, target=None):\n"
      "    if name.split('.')[0] in BLOCK: raise ImportError('blocked ' + name)\n"
      "sys.meta_path.insert(0, B())\n"
      "import benchmarks.accelerator.__main__, benchmarks.accelerator.bptt\n"
      "import benchmarks.accelerator.decoding, benchmarks.accelerator.train_step\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=cli.ROOT, capture_output=True,
                        text=True, env={**os.environ, "PYTHONPATH": cli.ROOT})
  assert proc.returncode == 0, proc.stderr[-2000:]
