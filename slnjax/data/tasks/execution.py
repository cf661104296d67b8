"""Run a generated Python program in a subprocess with a timeout (for code verifiers).

This is isolation against hangs and crashes, not a security sandbox: the program runs as the
current user in a fresh temporary directory, with `python -I`, a minimal environment, its own
process group (killed whole on timeout) and address-space / CPU-time limits.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

DEFAULT_TIMEOUT_S = 10.0
MEMORY_LIMIT_BYTES = 2 * 1024**3


# Sets the limits inside the child (no preexec_fn: unsafe with threads), then runs the program.
_LAUNCHER = (
    "import resource, runpy, sys\n"
    "cpu, mem = int(sys.argv[2]), int(sys.argv[3])\n"
    "resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))\n"
    "resource.setrlimit(resource.RLIMIT_AS, (mem, mem))\n"
    "sys.argv = sys.argv[1:2]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def strip_code_fence(answer: str) -> str:
    """The body of the first ``` fenced block in `answer` (language tag dropped), else `answer`."""
    start = answer.find("```")
    if start < 0:
        return answer
    body_start = answer.find("\n", start)
    end = answer.find("```", body_start + 1) if body_start >= 0 else -1
    return answer[body_start + 1:end] if end >= 0 else answer


def run_python(source: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True iff `source` runs to completion with exit status 0 within `timeout_s` seconds."""
    with tempfile.TemporaryDirectory(prefix="slnjax_exec_") as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", _LAUNCHER, path, str(int(timeout_s) + 1),
             str(MEMORY_LIMIT_BYTES)],
            cwd=tmp,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0"},
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=timeout_s) == 0
        except subprocess.TimeoutExpired:
            return False
        finally:
            try:  # also ends anything the program left running in its group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
