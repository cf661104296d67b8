"""Run a generated Python program, confined, with a timeout (for the code verifiers).

Each program runs in a bubblewrap sandbox (sandbox.py; docs/sandbox.md says what it does and
does not isolate): no network, a read-only view of the interpreter and /usr only, a fresh
size-limited tmpfs as its only writable place and working directory, its own PID namespace
(everything it started dies with it), an unprivileged uid, and limits on CPU time, address
space, processes, open files and output size. It is killed whole on timeout.

Without a working sandbox, running generated code is refused (SandboxUnavailableError, whose
message says how to install one) unless unsandboxed execution was allowed explicitly
(`require_sandbox(allow_unsandboxed=True)`, from config.task.allow_unsandboxed_code): then
programs run as plain subprocesses with the same limits (no isolation at all).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from typing import NamedTuple

from slnjax.data.tasks import sandbox

DEFAULT_TIMEOUT_S = 10.0
SandboxUnavailableError = sandbox.SandboxUnavailableError


@dataclasses.dataclass(frozen=True)
class Limits:
  """Per-program resource limits (CPU time follows the timeout: int(timeout_s) + 1 s)."""

  memory_bytes: int = 2 * 1024**3  # RLIMIT_AS
  processes: int = 32  # RLIMIT_NPROC: the processes (and threads) of one run
  output_bytes: int = 1 << 20  # RLIMIT_FSIZE: stdout + stderr, and any one file it writes
  tmp_bytes: int = 64 << 20  # size of its /tmp (tmpfs)
  open_files: int = 256  # RLIMIT_NOFILE


class Outcome(NamedTuple):
  ok: bool  # exit status 0 within the timeout
  status: str  # "exit N", "signal NAME" or "timeout"
  sandboxed: bool
  output: str  # the tail of its stdout + stderr
  output_bytes: int  # how much it wrote there (at most Limits.output_bytes)


# Runs inside the sandbox: drops to the given uid (root mode), sets the limits, runs the file.
_LAUNCHER = (
    "import os, resource, runpy, sys\n"
    "uid, cpu, mem, nproc, fsize, nofile = map(int, sys.argv[1:7])\n"
    "if uid >= 0:\n"
    "    os.setgroups([]); os.setgid(uid); os.setuid(uid)\n"
    "R = resource\n"
    "for k, v in ((R.RLIMIT_CPU, cpu), (R.RLIMIT_AS, mem), (R.RLIMIT_NPROC, nproc),\n"
    "             (R.RLIMIT_FSIZE, fsize), (R.RLIMIT_NOFILE, nofile), (R.RLIMIT_CORE, 0)):\n"
    "    R.setrlimit(k, (v, v))\n"
    "sys.argv = sys.argv[7:]\n"
    "del os, resource, R, uid, cpu, mem, nproc, fsize, nofile, k, v\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)
_policy = {"allow_unsandboxed": False}
_TAIL = 2000


def strip_code_fence(answer: str) -> str:
  """The body of the first ``` fenced block in `answer` (language tag dropped), else `answer`."""
  start = answer.find("```")
  if start < 0:
    return answer
  body_start = answer.find("\n", start)
  end = answer.find("```", body_start + 1) if body_start >= 0 else -1
  return answer[body_start + 1:end] if end >= 0 else answer


def require_sandbox(allow_unsandboxed: bool = False) -> bool:
  """Checks, before any generated code runs, that programs can be sandboxed here; True if
  they will be. Without a sandbox: SandboxUnavailableError, or with `allow_unsandboxed` a
  loud warning, and later programs run unsandboxed."""
  _policy["allow_unsandboxed"] = bool(allow_unsandboxed)
  reason = sandbox.probe()
  if reason is None:
    logging.info("generated code runs in a bubblewrap sandbox")
    return True
  if not allow_unsandboxed:
    raise SandboxUnavailableError(_refusal(reason))
  logging.warning("!" * 78)
  logging.warning("UNSANDBOXED: %s; config.task.allow_unsandboxed_code=True, so generated "
                  "programs run as plain subprocesses with full access to this machine, its "
                  "files and its network.", reason)
  logging.warning("!" * 78)
  return False


def _refusal(reason: str) -> str:
  return (f"no sandbox for generated code: {reason}; refusing to run model-written programs "
          f"unsandboxed. Fix: {sandbox.INSTALL_HINT}.")


def run_python(source: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
  """True iff `source` runs to completion with exit status 0 within `timeout_s` seconds."""
  return execute(source, timeout_s).ok


def run_to_end(source: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
  """True iff `source` runs to its last line: exit status 0 within `timeout_s` seconds AND a
  fresh random marker, written to stdout by a line appended after `source`, was printed.
  The verifiers check model-written code this way, so an answer that ends the process early
  with status 0 (`sys.exit(0)`, `os._exit(0)`, `raise SystemExit`) before the asserts that
  follow it ran is a failure, not a pass. (An answer that reads its own program file could
  still find the marker; the sandbox does not hide it.)"""
  marker = "slnjax-ran-to-end-" + secrets.token_hex(16)
  line = (f"__import__('sys').stdout.flush(); __import__('sys').stderr.flush(); "
          f"__import__('os').write(1, b'\\n{marker}\\n')\n")
  out = execute(source.rstrip("\n") + "\n" + line, timeout_s)
  return out.ok and marker in out.output


def execute(source: str, timeout_s: float = DEFAULT_TIMEOUT_S, limits: Limits = Limits(),
            sandboxed: bool | None = None) -> Outcome:
  """Runs `source` as __main__. sandboxed: None = in the sandbox if there is one, else
  unsandboxed only if allowed (require_sandbox), else SandboxUnavailableError; True =
  sandbox or that error; False = unsandboxed (benchmarks, tests)."""
  if sandboxed is None or sandboxed:
    reason = sandbox.probe()
    if reason is not None and (sandboxed or not _policy["allow_unsandboxed"]):
      raise SandboxUnavailableError(_refusal(reason))
    sandboxed = reason is None
  with tempfile.TemporaryDirectory(prefix="slnjax_exec_") as tmp:
    path = os.path.join(tmp, "program.py")
    with open(path, "w", encoding="utf-8") as f:
      f.write(source)
    uid = sandbox.next_uid() if sandboxed and sandbox.is_root() else -1
    args = [str(uid), str(int(timeout_s) + 1), str(limits.memory_bytes),
            str(limits.processes), str(limits.output_bytes), str(limits.open_files)]
    info_r, info_w = os.pipe() if sandboxed else (None, None)
    if sandboxed:
      launcher = [sys.executable, "-I", "-B", "-c", _LAUNCHER, *args, sandbox.PROGRAM]
      cmd, env = sandbox.command(path, launcher, limits.tmp_bytes, info_w), {}
    else:
      cmd = [sys.executable, "-I", "-B", "-c", _LAUNCHER, *args, path]
      env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env["PYTHONHASHSEED"] = "0"
    out_path = os.path.join(tmp, "output.txt")
    try:
      with open(out_path, "wb") as out:
        status = _wait(cmd, tmp, env, out, timeout_s, info_r, info_w)
    finally:
      for fd in (info_r, info_w):
        if fd is not None:
          try:
            os.close(fd)
          except OSError:
            pass
    size = os.path.getsize(out_path)
    with open(out_path, "rb") as f:
      f.seek(max(0, size - _TAIL))
      output = f.read().decode("utf-8", "replace")
  return Outcome(status == "exit 0", status, sandboxed, output, size)


def _wait(cmd: list[str], cwd: str, env: dict, out, timeout_s: float, info_r: int | None,
          info_w: int | None) -> str:
  """Runs `cmd`; kills it whole at the timeout. Sandboxed (info_r/info_w: the pipe of
  bwrap's --info-fd), the PID namespace's init is killed first: the kernel then kills every
  process of the namespace before bwrap can exit, so all are gone when this returns."""
  proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                          stderr=out, start_new_session=True,
                          pass_fds=() if info_w is None else (info_w,))
  try:
    code = proc.wait(timeout=timeout_s)
  except subprocess.TimeoutExpired:
    return "timeout"
  finally:
    if proc.returncode is None and info_r is not None:
      os.set_blocking(info_r, False)
      try:
        pid = sandbox.init_pid(os.read(info_r, 4096))
      except OSError:  # nothing written yet: bwrap is still setting up
        pid = None
      if pid is not None:
        try:
          os.kill(pid, signal.SIGKILL)
          proc.wait(timeout=5)
        except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
          pass
    try:  # bwrap's death also ends its PID namespace; unsandboxed: the process group
      os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
      pass
    proc.wait()
  if code < 0:
    return f"signal {signal.Signals(-code).name}"
  if code > 128 and code - 128 in signal.valid_signals():  # bwrap reports 128 + signal
    return f"signal {signal.Signals(code - 128).name}"
  return f"exit {code}"
