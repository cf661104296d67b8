"""Command-line checks shared by the entry points that take ``--config FILE.py[:arg]``
(slnjax.main, slnjax.sweep, slnjax.aot): a config file that cannot be read is one
``error:`` line naming the closest existing files, never ml_collections' traceback."""
from __future__ import annotations

import difflib
import glob
import os
import re
import sys

from absl import flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_flag(help_text: str) -> flags.FlagHolder:
  """The ``--config FILE.py[:arg]`` flag (locked config). Entry points are separate programs,
  but a process that imports several of them (the test suite) would define it twice: the
  second import then shares the first one's flag."""
  if "config" in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS["config"])
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  return config_flags.DEFINE_config_file("config", None, help_text, lock_config=True)


def config_arg(argv: list[str], name: str = "config") -> str | None:
  """The value of --NAME (``--config=X`` or ``--config X``) in argv, or None."""
  for i, a in enumerate(argv):
    if a.startswith(f"--{name}="):
      return a.split("=", 1)[1]
    if a == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def closest_files(path: str, n: int = 3) -> list[str]:
  """Existing .py files whose paths look most like ``path``: its own directory's, then
  experiments/ (as given relative to the working directory and the repository)."""
  dirs = [os.path.dirname(path) or ".", "experiments", os.path.join(_ROOT, "experiments")]
  cands = []
  for d in dirs:
    for f in sorted(glob.glob(os.path.join(d, "*.py"))):
      rel = os.path.relpath(f) if not os.path.relpath(f).startswith("..") else f
      if rel not in cands and not os.path.basename(f).startswith("__"):
        cands.append(rel)
  names = {c: os.path.basename(c) for c in cands}
  want = os.path.basename(path)
  ranked = sorted(cands, key=lambda c: -max(
      difflib.SequenceMatcher(None, want, names[c]).ratio(),
      difflib.SequenceMatcher(None, path, c).ratio()))
  close = [c for c in ranked if difflib.SequenceMatcher(None, want, names[c]).ratio() >= 0.5
           or want.removesuffix(".py") in names[c]]
  return (close or ranked)[:n]


def config_file_problem(argv: list[str], name: str = "config") -> str | None:
  """What is wrong with the --NAME file of argv (missing, a directory, unreadable), or None."""
  value = config_arg(argv, name)
  if value is None:
    return None
  path = value.split(":", 1)[0]
  if os.path.isfile(path) and os.access(path, os.R_OK):
    return None
  why = ("is a directory" if os.path.isdir(path) else
         "is not readable" if os.path.exists(path) else "does not exist")
  near = closest_files(path)
  hint = f" Closest existing files: {', '.join(near)}." if near else ""
  return (f"config file {path!r} {why} (--{name}={value}).{hint} "
          f"All experiments: ls {os.path.relpath(os.path.join(_ROOT, 'experiments'))}/")


def config_load_error(argv: list[str], err: OSError, name: str = "config") -> str:
  """One line for an OSError raised while loading the --NAME file."""
  while isinstance(err.__cause__, OSError):  # ml_collections re-raises the file's own error
    err = err.__cause__
  first = (str(err).strip().splitlines() or [type(err).__name__])[0]
  return config_file_problem(argv, name) or (
      f"cannot load the config file of --{name}={config_arg(argv, name)}: {first}")


def exit_on_bad_config_file(argv: list[str], name: str = "config") -> None:
  problem = config_file_problem(argv, name)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(2)


def _override_keys(argv) -> list[str]:
  return [a.split("=", 1)[0][len("--config."):] for a in argv if a.startswith("--config.")]


def _unknown_key(argv: list[str], e: Exception) -> str:
  msg = str(e)
  bad = re.search(r"'([A-Za-z0-9_]+)", msg)
  hint = re.search(r'Did you mean \\?"([^"\\]+)', msg)
  keys = [k for k in _override_keys(argv) if bad and bad.group(1) in k.split(".")]
  where = f"config.{keys[0]}" if keys else (bad.group(1) if bad else msg)
  return (f"unknown config key {where} (in --{where}=...)"
          + (f"; did you mean {hint.group(1)!r}?" if hint else "")
          + " The config is locked: only keys of the config file can be set.")


def experiments_importable(path: str | None = None) -> None:
  """Puts the folder above ``experiments/`` on sys.path, so that an experiment file's
  ``from experiments import common`` works from any working directory: the folder of the
  config file at ``path`` when it lies in an ``experiments/`` package, else this checkout's."""
  folder = os.path.dirname(os.path.abspath(path.split(":", 1)[0])) if path else ""
  if not (os.path.basename(folder) == "experiments"
          and os.path.isfile(os.path.join(folder, "common.py"))):
    folder = os.path.join(_ROOT, "experiments")
  root = os.path.dirname(folder)
  if os.path.isfile(os.path.join(folder, "common.py")) and root not in sys.path:
    sys.path.insert(0, root)


def parse_flags(argv: list[str], config_flag) -> list[str]:
  """absl's ``flags.FLAGS(argv)`` for an entry point with a --config file flag; every
  mistake is one ``error:`` line and exit code 2: a config file that does not exist or fails
  to load (an OSError; ml_collections defers it to the first access), a get_config that
  raises, an unknown --config.key or a bad value, a bad flag."""
  exit_on_bad_config_file(argv)
  experiments_importable(config_arg(argv, "config"))
  try:
    rest = flags.FLAGS(argv)
    if config_flag.value is not None:
      config_flag.value.get("seed")  # a config file that failed to load raises its OSError here
    return rest
  except OSError as e:
    print(f"error: {config_load_error(argv, e)}", file=sys.stderr)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if "Error whilst parsing config file" in str(e) and lines:  # get_config raised
      print(f"error: config {config_arg(argv, 'config')}: {lines[-1]}", file=sys.stderr)
    else:
      print(f"error: {e}", file=sys.stderr)
  except (AttributeError, KeyError) as e:
    print(f"error: {_unknown_key(argv, e)}", file=sys.stderr)
  except (TypeError, ValueError) as e:
    print(f"error: bad config override: {e}", file=sys.stderr)
  sys.exit(2)
