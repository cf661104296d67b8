"""Layer order: no module of slnjax/ imports from a layer above its own.

The layers are the table at the top of docs/ARCHITECTURE.md (`| N name | modules | ... |`,
modules as backticked paths; a path ending in / is a package). Imports are read with ast,
top-level and inside functions alike, relative ones resolved."""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = os.path.join(ROOT, "docs", "ARCHITECTURE.md")


def layer_table(text: str) -> dict[str, float]:
  """{path or package/: layer} from the table's rows; "4½" is 4.5."""
  rows = {}
  for line in text.splitlines():
    m = re.match(r"\|\s*(\d+)(½)?\s[^|]*\|([^|]*)\|", line)
    if m:
      for path in re.findall(r"`(slnjax/[^`]*)`", m.group(3)):
        rows[path] = int(m.group(1)) + (0.5 if m.group(2) else 0.0)
  return rows


def layer_of(path: str, rows: dict[str, float]) -> float | None:
  """The layer of the most specific row naming ``path`` (the file or a package above it)."""
  hits = [p for p in rows if path == p or (p.endswith("/") and path.startswith(p))]
  return rows[max(hits, key=len)] if hits else None


def _resolve(dotted: str, root: str) -> str | None:
  """slnjax.a.b -> the file that defines it (a module or a package's __init__.py)."""
  base = os.path.join(root, *dotted.split("."))
  for f in (base + ".py", os.path.join(base, "__init__.py")):
    if os.path.exists(f):
      return os.path.relpath(f, root).replace(os.sep, "/")
  return None


def imported_files(path: str, source: str, root: str = ROOT):
  """(line, file) for every slnjax module the source imports; `from pkg import name` counts
  as pkg/name.py when that file exists, else as pkg itself."""
  pkg = os.path.dirname(path).replace("/", ".")
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
      for name in names:
        if name.split(".")[0] == "slnjax":
          yield node.lineno, _resolve(name, root)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = pkg.split(".")
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      if base.split(".")[0] != "slnjax":
        continue
      for a in node.names:
        yield node.lineno, _resolve(f"{base}.{a.name}", root) or _resolve(base, root)


def modules(root: str = ROOT) -> list[str]:
  out = []
  for d, _, files in os.walk(os.path.join(root, "slnjax")):
    out += [os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
            for f in files if f.endswith(".py")]
  return sorted(p for p in out if p != "slnjax/__init__.py")


def violations(root: str = ROOT, arch_text: str | None = None) -> list[str]:
  if arch_text is None:
    with open(os.path.join(root, "docs", "ARCHITECTURE.md"), encoding="utf-8") as f:
      arch_text = f.read()
  rows = layer_table(arch_text)
  found = []
  for path in modules(root):
    mine = layer_of(path, rows)
    if mine is None:
      found.append(f"{path} is in no row of docs/ARCHITECTURE.md's layer table")
      continue
    with open(os.path.join(root, path), encoding="utf-8") as f:
      source = f.read()
    for line, target in imported_files(path, source, root):
      if target is None or target == "slnjax/__init__.py":
        continue
      theirs = layer_of(target, rows)
      if theirs is not None and theirs > mine:
        found.append(f"{path}:{line} (layer {mine:g}) imports {target} (layer {theirs:g})")
  return found


def test_the_table_names_the_layers():
  with open(ARCH, encoding="utf-8") as f:
    rows = layer_table(f.read())
  assert rows["slnjax/config.py"] == 0 and rows["slnjax/lobes/"] == 1
  assert rows["slnjax/train.py"] > rows["slnjax/sln.py"] > rows["slnjax/loop/"]
  for path in rows:
    assert os.path.exists(os.path.join(ROOT, path)), f"docs/ARCHITECTURE.md names {path}"


def test_no_module_imports_from_a_layer_above_its_own():
  assert not violations(), "\n".join(violations())


@pytest.mark.parametrize("source,expect", [
    ("from slnjax import train\n", "imports slnjax/train.py (layer 8)"),
    ("def f():\n  import slnjax.sln\n", "imports slnjax/sln.py (layer 4)"),
    ("def f():\n  from . import objectives\n", "imports slnjax/objectives/__init__.py"),
    ("from slnjax.lobes import config\n", None),
])
def test_an_upward_import_is_found(tmp_path, source, expect):
  """A copy of the package with one bad line added to soft_tokens.py (layer 2)."""
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.copytree(os.path.join(ROOT, "slnjax"), tmp_path / "slnjax",
                  ignore=shutil.ignore_patterns("*.cc", "*.so", "__pycache__"))
  with open(tmp_path / "slnjax" / "soft_tokens.py", "a", encoding="utf-8") as f:
    f.write("\n" + source)
  with open(ARCH, encoding="utf-8") as f:
    found = violations(str(tmp_path), f.read())
  if expect is None:
    assert not found, found
  else:
    assert len(found) == 1 and found[0].startswith("slnjax/soft_tokens.py:") and expect in found[0], found


def test_a_module_missing_from_the_table_is_named(tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.copytree(os.path.join(ROOT, "slnjax"), tmp_path / "slnjax",
                  ignore=shutil.ignore_patterns("*.cc", "*.so", "__pycache__"))
  (tmp_path / "slnjax" / "stray.py").write_text("x = 1\n")
  with open(ARCH, encoding="utf-8") as f:
    assert violations(str(tmp_path), f.read()) == [
        "slnjax/stray.py is in no row of docs/ARCHITECTURE.md's layer table"]
