"""The ablation runner: trains each setting, writes a markdown table and a PNG plot."""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(tempfile.gettempdir(), "slnjax_test_data")
ENV = {**os.environ, "JAX_PLATFORMS": "cpu",
       "JAX_COMPILATION_CACHE_DIR": os.path.join(tempfile.gettempdir(), "slnjax_test_jax_cache"),
       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
       "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
       "XLA_FLAGS": "--xla_backend_optimization_level=0"}


def test_sweep_writes_table_and_plot(tmp_path):
  path = tmp_path / "sweep_exp.py"
  path.write_text(
      "from slnjax import config\n"
      "def get_config(arg=None):\n"
      f"  return config.experiment(smoke=True, task=dict(data_dir={DATA_DIR!r}), steps=2,\n"
      "                           eval_every=2)\n"
      "def get_sweep(arg=None):\n"
      "  return {'key': 'model.loop.max_turns', 'values': [1, 2], 'labels': ['one', 'two']}\n")
  out = tmp_path / "out"
  r = subprocess.run([sys.executable, "-m", "slnjax.sweep", f"--config={path}",
                      f"--workdir={out}"], capture_output=True, text=True, env=ENV, cwd=ROOT,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  table = (out / "sweep.md").read_text()
  assert "| model.loop.max_turns |" in table and "| one |" in table and "| two |" in table
  assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  rows = json.loads((out / "sweep.json").read_text())
  assert [r["label"] for r in rows] == ["one", "two"]
  assert all(r["memory_bytes"] > 0 for r in rows)
  assert rows[0]["turns"] == 1.0  # one turn allowed -> one turn used
