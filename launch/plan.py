#!/usr/bin/env python3
"""Builds the command lines the launchers run, so that no quoting nests in bash.

Standard library only (it runs on the machine that launches, which may lack JAX).

  plan.py check  -- ARGS   validate the training arguments (--config FILE[:arg], --workdir)
  plan.py run    -- ARGS   one shell line: cd to the code, run python -m slnjax.main ARGS
  plan.py install          one shell line: idempotent install of the code on a worker
  plan.py container -- ARGS  pip install the code in the image's working dir, then train
  plan.py port             a free TCP port on this machine (the local coordinator)

ARGS travel unchanged: each is quoted once (shlex.quote) into the line the remote shell
reads, e.g. --config=experiments/x.py:smoke '--config.task.name=a b' --workdir=gs://b/r.
"""
from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys

REMOTE_DIR = "~/slnjax"  # where the code lands on each worker
ARCHIVE = "~/slnjax.tgz"


def config_file(args: list[str]) -> str:
  """The experiment file of --config=FILE[:arg] / --config FILE[:arg]."""
  for i, a in enumerate(args):
    if a.startswith("--config="):
      return a.split("=", 1)[1].split(":", 1)[0]
    if a == "--config" and i + 1 < len(args):
      return args[i + 1].split(":", 1)[0]
  raise SystemExit("error: the training arguments need --config=experiments/FILE.py[:arg] "
                   "(after --).")


def check(args: list[str], root: str) -> None:
  path = config_file(args)
  if not os.path.isfile(os.path.join(root, path)):
    raise SystemExit(f"error: config file {path!r} does not exist under {root}; paths are "
                     "relative to the repository root, which is what gets copied.")
  if not any(a == "--workdir" or a.startswith("--workdir=") for a in args):
    raise SystemExit("error: the training arguments need --workdir=DIR (on a pod: a bucket, "
                     "gs://..., or a disk every worker shares).")


def quoted(words: list[str]) -> str:
  return " ".join(shlex.quote(w) for w in words)


def train_command(args: list[str], python: str = "python") -> str:
  return quoted([python, "-m", "slnjax.main", *args])


def run_line(args: list[str], env: dict[str, str] | None = None,
             directory: str = REMOTE_DIR, python: str = ".venv/bin/python") -> str:
  """cd DIR && [ENV=...] PY -m slnjax.main ARGS (DIR may start with ~ : left unquoted)."""
  assigns = [f"{k}={shlex.quote(v)}" for k, v in sorted((env or {}).items())]
  return " ".join([f"cd {directory}", "&&", *assigns, train_command(args, python)])


def install_line(extra: str = "tpu", python: str = "python3.11",
                 directory: str = REMOTE_DIR, archive: str = ARCHIVE) -> str:
  """Unpack the code, make a venv once, pip install only when setup.py changed."""
  spec = shlex.quote(f".[{extra}]" if extra else ".")
  steps = [
      f"mkdir -p {directory}",
      f"tar -xzf {archive} -C {directory}",
      f"cd {directory}",
      f"(command -v {python} >/dev/null || (sudo apt-get update -qq && "
      f"sudo apt-get install -y -qq {python} {python}-venv))",
      f"(test -x .venv/bin/python || {python} -m venv .venv)",
      f"(cmp -s setup.py .venv/setup.py.installed || (.venv/bin/pip install -q -e {spec} && "
      "cp setup.py .venv/setup.py.installed))",
  ]
  return " && ".join(steps)


def main(argv: list[str]) -> None:
  if "--" in argv:
    at = argv.index("--")
    argv, args = argv[:at], argv[at + 1:]
  else:
    args = []
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("what", choices=("check", "run", "install", "container", "port"))
  p.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  p.add_argument("--extra", default="tpu", help="pip extra to install (tpu; '' for none)")
  p.add_argument("--python", default=None, help="interpreter (install: python3.11)")
  p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the run line")
  o = p.parse_args(argv)
  if o.what == "port":
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      print(s.getsockname()[1])
    return
  if o.what in ("check", "run", "container"):
    check(args, o.root)
  if o.what == "check":
    return
  if o.what == "install":
    print(install_line(o.extra, o.python or "python3.11"))
  elif o.what == "container":
    spec = shlex.quote(f".[{o.extra}]" if o.extra else ".")
    py = o.python or "python"
    print(f"{py} -m pip install -q -e {spec} && {train_command(args, py)}")
  else:
    env = dict(e.split("=", 1) for e in o.env)
    print(run_line(args, env, python=o.python or ".venv/bin/python"))


if __name__ == "__main__":
  main(sys.argv[1:])
