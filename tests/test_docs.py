"""The docs do not lie: every code block of README.md and docs/*.md runs here, at smoke size.

What is extracted: each fenced block (```LANG ... ```) of README.md and docs/*.md.
  bash / sh / shell / console   run as one bash script (set -euo pipefail), after SMOKE
  python / py                   run as one Python program (CHECKS may add assertions)
  text / json / yaml / toml / output / diff   data, not run
  anything else, or no label    an error: label the fence
A file's blocks run in document order and share one temporary directory (a later block may
read what an earlier block wrote, e.g. a workdir under /tmp); blocks of different files do
not share anything. `python` is the interpreter running the tests; PYTHONPATH is the
repository; the working directory is the repository root.

Smoke size. A documented command runs as written except for the rewrites of SMOKE below,
applied in order to each command (continuation lines joined): `--config experiments/X.py`
gets `:smoke` (every experiment has that argument), `--config.steps=N` is dropped (the
smoke config's own few steps), `/tmp/` becomes the block's temporary directory,
`/ckpt/pythia-70m` a tiny random GPT-NeoX saved with transformers, launchers get
`--dry_run`, `make X` becomes `make -n X` and `pip install` is not run (its extras must
exist in setup.py). Keep commands runnable under these rules in ~60 s on a CPU.

Blocks that need a TPU, a GPU cluster or hours: put `<!-- doctest: skip (reason) -->` on the
line right before the fence. They still run in a dry form: every repository path they name
exists, `python -m MODULE args` is run with `--help` appended (so the module imports and
the config file, its argument and its --config.* overrides load), launchers print their
--help, Python blocks compile and their `slnjax` imports resolve.

Everywhere else in the docs (prose, inline code, indented blocks) every repository path
(experiments/, launch/, docs/, slnjax/, tests/, benchmarks/) must exist and every
`python -m MODULE` must be an importable module.
"""
from __future__ import annotations

import ast
import dataclasses
import glob
import importlib
import importlib.util
import os
import re
import resource
import shlex
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                              for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
SHELL, PYTHON, DATA = ("bash", "sh", "shell", "console"), ("python", "py"), (
    "text", "json", "yaml", "toml", "output", "diff")
SKIP = re.compile(r"^\s*<!--\s*doctest:\s*skip\s*\((?P<reason>[^)]*\S[^)]*)\)\s*-->\s*$")
BLOCK_TIMEOUT_S = 900  # a safeguard on a busy machine, not a target

# (what, pattern, replacement): how a documented command is shrunk to smoke size. {tmp} is the
# file's temporary directory, {hf} a tiny random Hugging Face GPT-NeoX checkpoint directory.
SMOKE = [
    ("experiments run at their :smoke size",
     r"(--config[ =]experiments/\w+\.py)(?=\s|$)", r"\1:smoke"),
    ("pretrained experiments: their smoke=1 argument",
     r"(--config[ =]experiments/\w+_pretrained\.py:\S+)", r"\1,smoke=1"),
    ("the smoke config's own number of steps", r"\s--config\.steps[ =]\d+(?=\s|$)", ""),
    ("/tmp paths: the file's temporary directory", r"(?<![\w./])/tmp/", "{tmp}/"),
    ("a pretrained checkpoint: a tiny random one", r"/ckpt/pythia-70m\b", "{hf}"),
    ("launchers print their commands", r"((?:^|\s)(?:bash\s+)?launch/\w+\.sh)(?=\s|$)",
     r"\1 --dry_run"),
    ("slurm prints its command", r"^sbatch\s+(?:--\S+\s+)*(launch/slurm\.sbatch)",
     r"DRY_RUN=1 bash \1"),
    ("make: print the recipe only", r"^make\s+(?!-n)", "make -n "),
    ("pip install is not run (its extras are checked)", r"^pip3?\s+install\b.*", "true"),
]

# Assertions appended to the Python block that contains the key (a stale key is an error).
CHECKS = {
    # README journey 2: the loss at the halting turn trains; turn max_turns ([-1]) would not.
    "d.at_halt(d.left_logp_target_NBM)": """
import numpy as np
assert np.isfinite(float(loss)) and float(loss) != 0, loss
assert sum(float(abs(g).sum()) for g in jax.tree.leaves(grads)) > 0, "zero gradient"
_d = jax.jit(lambda p: sln.unroll(model, p, prompt_ids_BP, prompt_len_B, jax.random.key(3),
                                  tau=0.001, target_BM=target_BM))(params)
_halted = np.asarray(_d.turns_B) < model.spec.loop.max_turns
assert _halted.any() and (np.asarray(_d.left_logp_target_NBM[-1])[_halted] == 0).all()
""",
}

_PATH = re.compile(r"(?<![\w./-])((?:experiments|launch|docs|slnjax|tests|benchmarks)"
                   r"/[\w./-]*[\w/])")
_MODULE = re.compile(r"python3?\s+-m\s+([\w.]+)")


@dataclasses.dataclass
class Block:
  file: str
  line: int  # of the opening fence
  lang: str
  code: str
  skip: str | None  # the reason, for a skip-marked block

  @property
  def where(self) -> str:
    return f"{self.file} line {self.line} (```{self.lang}" + (
        f", skip: {self.skip})" if self.skip else ")")


def extract(text: str, file: str) -> list[Block]:
  """The fenced blocks of a markdown text; ValueError for an unlabeled or unknown fence."""
  blocks, lines, i = [], text.splitlines(), 0
  while i < len(lines):
    m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
    if not m:
      i += 1
      continue
    indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
    start, body = i, []
    i += 1
    while i < len(lines) and not lines[i].strip().startswith(fence):
      body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
      i += 1
    i += 1
    if lang not in SHELL + PYTHON + DATA:
      raise ValueError(f"{file} line {start + 1}: fence label {lang!r}: label code blocks "
                       f"```bash or ```python (run by tests/test_docs.py) or ```text (not run).")
    prev = lines[start - 1] if start else ""
    skip = SKIP.match(prev)
    if "doctest" in prev and not skip:
      raise ValueError(f"{file} line {start}: malformed marker {prev.strip()!r}; write "
                       "<!-- doctest: skip (why it cannot run here) -->")
    blocks.append(Block(file, start + 1, lang, "\n".join(body) + "\n",
                        skip.group("reason").strip() if skip else None))
  return blocks


def commands(code: str) -> list[str]:
  """The shell commands of a block: continuation lines joined, comments and blanks dropped."""
  out, cur = [], ""
  for raw in code.splitlines():
    line = re.sub(r"^\s*\$ ", "", raw.rstrip())  # a console prompt
    if not cur and (not line.strip() or line.lstrip().startswith("#")):
      continue
    if line.endswith("\\"):
      cur += line[:-1].strip() + " "
      continue
    out.append((cur + line.strip()).strip())
    cur = ""
  if cur:
    out.append(cur.strip())
  return out


def shrink(cmd: str, tmp: str, hf: str) -> str:
  for _, pattern, repl in SMOKE:
    cmd = re.sub(pattern, repl, cmd)
  return cmd.replace("{tmp}", tmp).replace("{hf}", hf)


def _env(tmp: str) -> dict:
  bindir = os.path.join(tmp, ".bin")
  os.makedirs(bindir, exist_ok=True)
  for name in ("python", "python3"):  # a wrapper: a symlink would lose the venv
    path = os.path.join(bindir, name)
    if not os.path.exists(path):
      with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
      os.chmod(path, 0o755)
  path = os.pathsep.join([bindir, os.path.dirname(sys.executable),  # the venv's scripts
                          os.environ.get("PATH", "")])
  return {**os.environ, "PATH": path,
          "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "PYTHON": sys.executable}


def _cpu_s() -> float:
  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def _run(args, tmp, stdin=None, timeout=BLOCK_TIMEOUT_S):
  t0 = time.time()
  try:
    p = subprocess.run(["timeout", "-s", "KILL", str(timeout), *args], cwd=ROOT,
                       env=_env(tmp), input=stdin, capture_output=True, text=True, check=False)
  except OSError as e:
    return 1, str(e), time.time() - t0
  out = (p.stdout + p.stderr)[-3000:]
  if p.returncode in (124, 137):
    out += f"\n(killed after {timeout} s: make the documented command smoke-sized)"
  return p.returncode, out, time.time() - t0


def _pip_extras_exist(cmd: str) -> str | None:
  setup = open(os.path.join(ROOT, "setup.py")).read()
  extras = set(re.findall(r'^\s*"([\w-]+)":\s*\[', setup, re.M))
  for group in re.findall(r"\.\[([\w,-]+)\]", cmd):
    missing = sorted(set(group.split(",")) - extras)
    if missing:
      return f"`{cmd}` names extras {missing} that setup.py does not define ({sorted(extras)})"
  return None


def run_block(block: Block, tmp: str, hf: str) -> tuple[bool, str, float]:
  """(ok, what went wrong, seconds) for one block, run in full or (skip-marked) dry."""
  if block.skip:
    return dry_run(block, tmp)
  if block.lang in DATA:
    return True, "", 0.0
  if block.lang in PYTHON:
    code = block.code.replace("/tmp/", tmp + "/")
    code += "".join(check for key, check in CHECKS.items() if key in block.code)
    rc, out, dt = _run([sys.executable, "-"], tmp, stdin=code)
    return rc == 0, out, dt
  script = ["set -euo pipefail"]
  for cmd in commands(block.code):
    problem = _pip_extras_exist(cmd) if re.match(r"^pip3?\s+install", cmd) else None
    if problem:
      return False, problem, 0.0
    script.append(shrink(cmd, tmp, hf))
  rc, out, dt = _run(["bash", "-c", "\n".join(script)], tmp)
  return rc == 0, "ran:\n  " + "\n  ".join(script[1:]) + f"\noutput:\n{out}", dt


def dry_run(block: Block, tmp: str) -> tuple[bool, str, float]:
  """A skip-marked block: its paths exist, its modules load with their arguments."""
  t0, problems = time.time(), missing_paths(block.code)
  if block.lang in PYTHON:
    problems += python_imports_problems(block.code)
  elif block.lang in SHELL:
    for cmd in commands(block.code):
      try:
        words = shlex.split(cmd.replace("/tmp/", tmp + "/"))
      except ValueError as e:
        problems.append(f"`{cmd}`: cannot split it into words ({e})")
        continue
      while words and re.match(r"^\w+=", words[0]):
        words = words[1:]
      if words[:1] in (["python"], ["python3"]) and words[1:2] == ["-m"]:
        rc, out, _ = _run([sys.executable, *words[1:], "--help"], tmp, timeout=120)
        if rc not in (0, 1) or re.search(r"^error:|Traceback", out, re.M):
          problems.append(f"`{cmd} --help` failed (rc {rc}):\n{out}")
      elif words and re.match(r"^(bash\s+)?launch/", " ".join(words)) or words[:1] == ["sbatch"]:
        script = next((w for w in words if w.startswith("launch/")), None)
        rc, out, _ = (_run(["bash", script, "--help"], tmp, timeout=60) if script
                      else (1, "no launch/ script named", 0))
        if rc != 0:
          problems.append(f"`bash {script} --help` failed (rc {rc}):\n{out}")
      elif re.match(r"^pip3?\s+install", cmd):
        problems += [p for p in [_pip_extras_exist(cmd)] if p]
  return not problems, "\n".join(problems), time.time() - t0


def missing_paths(text: str) -> list[str]:
  out = []
  for path in sorted(set(_PATH.findall(text))):
    if "*" in path or "NAME" in path or "FILE" in path or "<" in path:
      continue
    if not os.path.exists(os.path.join(ROOT, path.split(":")[0].rstrip("."))):
      out.append(f"{path} does not exist")
  return out


def missing_modules(text: str) -> list[str]:
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  out = []
  for mod in sorted(set(_MODULE.findall(text))):
    mod = mod.rstrip(".")
    if mod in ("pip", "pytest", "venv", "tensorboard"):
      continue
    try:
      found = importlib.util.find_spec(mod) is not None
    except ModuleNotFoundError:
      found = False
    if not found:
      out.append(f"python -m {mod}: no such module")
  return out


def python_imports_problems(code: str) -> list[str]:
  try:
    tree = ast.parse(code)
  except SyntaxError as e:
    return [f"syntax error: {e}"]
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("slnjax"):
      mod = importlib.import_module(node.module)
      out += [f"from {node.module} import {a.name}: no such name" for a in node.names
              if not hasattr(mod, a.name) and importlib.util.find_spec(
                  f"{node.module}.{a.name}") is None]
    elif isinstance(node, ast.Import):
      out += [f"import {a.name}: no such module" for a in node.names
              if a.name.startswith("slnjax") and importlib.util.find_spec(a.name) is None]
  return out


def _read(file):
  with open(os.path.join(ROOT, file)) as f:
    return f.read()


_HF = {}


def tiny_hf(tmp_root: str) -> str:
  """A random 2-layer GPT-NeoX (vocab 300) saved by transformers: what /ckpt/pythia-70m
  stands for. Made once per test process, when a block names it."""
  if "dir" not in _HF:
    path = os.path.join(tmp_root, "tiny-pythia")
    code = ("import sys, torch, transformers\ntorch.manual_seed(0)\n"
            "c = transformers.GPTNeoXConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2,"
            " num_attention_heads=4, intermediate_size=64, max_position_embeddings=256,"
            " rotary_pct=0.25)\ntransformers.GPTNeoXForCausalLM(c).save_pretrained(sys.argv[1])\n")
    subprocess.run([sys.executable, "-c", code, path], check=True, capture_output=True)
    _HF["dir"] = path
  return _HF["dir"]


@pytest.mark.parametrize("file", DOCS)
def test_code_blocks_run(file, tmp_path):
  blocks = extract(_read(file), file)
  hf = tiny_hf(str(tmp_path.parent)) if "/ckpt/pythia-70m" in _read(file) else "/nonexistent"
  failures, times = [], []
  for block in blocks:
    cpu = _cpu_s()
    ok, msg, dt = run_block(block, str(tmp_path), hf)
    times.append(f"{block.where}: {dt:.0f} s wall, {_cpu_s() - cpu:.0f} s CPU")
    if not ok:
      failures.append(f"{block.where} failed:\n{msg}")
  print("\n".join(times))
  assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("file", DOCS)
def test_paths_and_modules_named_anywhere_exist(file):
  text = _read(file)
  problems = missing_paths(text) + missing_modules(text)
  assert not problems, f"{file}: " + "; ".join(problems)


def test_every_check_matches_a_block():
  code = "".join(b.code for f in DOCS for b in extract(_read(f), f) if b.lang in PYTHON)
  stale = [key for key in CHECKS if key not in code]
  assert not stale, f"CHECKS keys no Python block contains (update tests/test_docs.py): {stale}"


OLD_README = """\
**1. Launch sharded jobs.**

```bash
python -m slnjax.main --config experiments/lateralized.py --workdir /tmp/sln --config.steps=2000
```

```python
from slnjax import lobes, loop, sln
model = sln.build("lateralized", lobes.tiny(), None, loop.LoopConfig(turn_len=8, max_turns=4))
params = sln.init(model, jax.random.key(0))
```

```
make demo
```
"""


def test_a_readme_that_lies_fails(tmp_path):
  """The old journeys 1 and 2 (a config that never existed; a snippet without `import jax`)
  and an unlabeled fence: each fails, named by file and line."""
  with pytest.raises(ValueError, match=r"OLD.md line 13: fence label ''"):
    extract(OLD_README, "OLD.md")
  bash, python = extract(OLD_README.split("```\nmake")[0], "OLD.md")
  ok, msg, _ = run_block(bash, str(tmp_path), "/nonexistent")
  assert not ok and "experiments/lateralized.py' does not exist" in msg, msg
  assert bash.where == "OLD.md line 3 (```bash)"
  assert missing_paths(OLD_README) == ["experiments/lateralized.py does not exist"]
  ok, msg, _ = run_block(python, str(tmp_path), "/nonexistent")
  assert not ok and "NameError: name 'jax' is not defined" in msg, msg


def test_smoke_rewrites():
  cmd = ("python -m slnjax.main --config experiments/ablation_f_lateralized.py --workdir /tmp/sln"
         " --config.steps=2000")
  assert shrink(cmd, "/T", "/H") == ("python -m slnjax.main --config experiments/"
                                     "ablation_f_lateralized.py:smoke --workdir /T/sln")
  assert shrink("python -m slnjax.import_hf --config=experiments/tall_pretrained.py:left="
                "/ckpt/pythia-70m --out=/tmp/x", "/T", "/H") == (
      "python -m slnjax.import_hf --config=experiments/tall_pretrained.py:left=/H,smoke=1 "
      "--out=/T/x")
  assert shrink("launch/local.sh -n 2 -- --config=experiments/x.py:smoke", "/T", "/H") == (
      "launch/local.sh --dry_run -n 2 -- --config=experiments/x.py:smoke")
  assert shrink("sbatch --nodes=4 launch/slurm.sbatch --config=a.py", "/T", "/H") == (
      "DRY_RUN=1 bash launch/slurm.sbatch --config=a.py")
  assert shrink("make demo", "/T", "/H") == "make -n demo"
  assert commands("# c\nfoo a \\\n   b\n\n$ bar\n") == ["foo a b", "bar"]


def test_a_skipped_block_still_fails_on_a_wrong_module_path_or_override(tmp_path):
  text = ("<!-- doctest: skip (needs libtpu) -->\n```bash\n"
          "python -m slnjax.aot --config experiments/llama8b_tall.py --topology v5p-128 \\\n"
          "    --config.mesh.icx=\"(2,-1,1)\"\n"
          "sbatch launch/slurm.sbatch --config=experiments/no_such.py\n```\n")
  (block,) = extract(text, "X.md")
  assert block.skip == "needs libtpu"
  ok, msg, _ = run_block(block, str(tmp_path), "/nonexistent")
  assert not ok and "experiments/no_such.py does not exist" in msg, msg
  assert "unknown config key config.mesh.icx" in msg, msg
  with pytest.raises(ValueError, match="malformed marker"):
    extract("<!-- doctest: skip -->\n```bash\nls\n```\n", "X.md")
