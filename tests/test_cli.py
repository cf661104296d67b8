"""Entry points that take --config FILE.py: a file that cannot be read is one error line that
names the closest existing files, with a non-zero exit code and no traceback."""
import os
import subprocess
import sys

import pytest

from slnjax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  return subprocess.run(["timeout", "-s", "KILL", "120", sys.executable, "-m", *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("module,extra", [
    ("slnjax.main", ["--workdir", "/tmp/never_made", "--config.steps=2000"]),
    ("slnjax.main", ["--workdir=/tmp/never_made"]),
    ("slnjax.sweep", ["--workdir", "/tmp/never_made"]),
    ("slnjax.aot", ["--topology", "v5e-16"]),
])
def test_missing_config_file_is_one_error_line_naming_close_files(module, extra):
  p = _run(module, "--config", "experiments/lateralized.py", *extra)
  assert p.returncode == 2, p.stderr
  lines = p.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
  assert "experiments/lateralized.py' does not exist" in lines[0]
  assert "experiments/ablation_f_lateralized.py" in lines[0], lines[0]
  assert not os.path.exists("/tmp/never_made")


def test_config_that_is_a_directory_or_fails_to_load_is_one_error_line(tmp_path):
  p = _run("slnjax.main", "--config=experiments", f"--workdir={tmp_path}/w")
  assert p.returncode == 2 and p.stderr.startswith("error: config file 'experiments' is a "
                                                    "directory"), p.stderr
  bad = tmp_path / "reads_a_file.py"
  bad.write_text("def get_config(arg=None):\n  return open('/nonexistent/x.json').read()\n")
  p = _run("slnjax.main", f"--config={bad}", f"--workdir={tmp_path}/w", "--config.seed=1")
  lines = p.stderr.strip().splitlines()
  assert p.returncode == 2 and len(lines) == 1, p.stderr
  assert lines[0].startswith("error: cannot load the config file") and "/nonexistent/x.json" in (
      lines[0]), lines[0]


@pytest.mark.parametrize("config,says", [
    ("experiments/tall_pretrained.py:foo=1", "ValueError: Unknown config argument 'foo'"),
    ("experiments/ablation_f_lateralized.py:big", "ValueError: Unknown experiment argument"),
])
def test_a_config_whose_get_config_raises_is_one_error_line(config, says, tmp_path):
  p = _run("slnjax.main", f"--config={config}", f"--workdir={tmp_path}/w")
  lines = p.stderr.strip().splitlines()
  assert p.returncode == 2 and len(lines) == 1, p.stderr
  assert lines[0].startswith(f"error: config {config}: {says}"), lines[0]


def test_closest_files():
  assert cli.closest_files("experiments/lateralized.py")[0] in (
      "experiments/lateralized_wide.py", "experiments/ablation_f_lateralized.py")
  assert "experiments/tbptt_depth.py" in cli.closest_files("experiments/tbtt_depth.py")
  assert cli.config_file_problem(["--config", "experiments/sft.py:smoke"]) is None


@pytest.mark.parametrize("module,extra", [
    ("slnjax.aot", ["--topology", "v5e-16"]),
    ("slnjax.import_hf", ["--out=/tmp/never_made"]),
])
def test_unknown_config_key_is_one_error_line_in_every_entry_point(module, extra):
  p = _run(module, "--config=experiments/llama8b_tall.py:smoke", "--config.mesh.icx=1", *extra)
  lines = p.stderr.strip().splitlines()
  assert p.returncode == 2 and len(lines) == 1, p.stderr
  assert lines[0].startswith("error: unknown config key config.mesh.icx"), lines[0]
