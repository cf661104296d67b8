"""The bubblewrap (`bwrap`) command that confines one generated program.

Inside the sandbox a program sees a read-only /usr, the Python interpreter's prefix and
virtual environment (read-only, at their real paths), a minimal /dev, its own /proc, and a
fresh size-limited tmpfs at /tmp (its working directory, the only writable place). It has
new mount, PID, network (loopback only), IPC, UTS and cgroup namespaces, no environment but
PATH, and no view of /etc, /home, /root, the project, the workdir or the host's /tmp.

Two ways to run bwrap, chosen by who we are:
- root: bwrap runs without a user namespace and keeps only CAP_SETUID/CAP_SETGID for the
  launcher, which switches to a fresh unprivileged uid (one per run, from UID_BASE) before the
  program starts; the kernel ignores RLIMIT_NPROC for root, and a per-run uid makes the
  process limit count only that run's processes.
- anyone else: bwrap creates a user namespace (unprivileged user namespaces must be enabled);
  RLIMIT_NPROC then counts the processes of that namespace.
Resource limits (CPU, address space, processes, file size = output size) are set by the
launcher inside the sandbox, before the program runs (execution.py).
"""
from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading

INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`, Fedora: "
                "`dnf install bubblewrap`), or set config.task.allow_unsandboxed_code=True to "
                "run generated code WITHOUT isolation")
UID_BASE = 1 << 20  # uids handed to sandboxed programs when we are root: [UID_BASE, 2 * UID_BASE)
PROGRAM = "/tmp/program.py"  # where the program lies inside the sandbox
_uids = itertools.count()
_uid_lock = threading.Lock()


class SandboxUnavailableError(RuntimeError):
  """Generated code would run unsandboxed and the config does not allow it."""


def bwrap_path() -> str | None:
  return shutil.which("bwrap")


def is_root() -> bool:
  return os.geteuid() == 0


def next_uid() -> int:
  """A uid no other concurrent run of this machine is likely to hold (root mode only)."""
  with _uid_lock:
    n = next(_uids)
  return UID_BASE + (os.getpid() % 4096) * 256 + n % 256


def visible_roots() -> list[str]:
  """The directories bound read-only besides /usr: the interpreter's prefix and its venv
  (real paths, since the venv's python is a symlink), unless /usr already holds them."""
  roots = []
  for real in (os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
               os.path.dirname(os.path.realpath(sys.executable))):
    if real == "/usr" or real.startswith("/usr/"):
      continue
    if not any(real == r or real.startswith(r + "/") for r in roots):
      roots = [r for r in roots if not r.startswith(real + "/")] + [real]
  return sorted(roots)


def _parents(path: str) -> list[str]:
  """The ancestors of `path` below /, outermost first (/a/b/c -> /a, /a/b)."""
  parts = path.strip("/").split("/")[:-1]
  return ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]


def command(host_program: str, launcher: list[str], tmp_bytes: int,
            info_fd: int | None = None) -> list[str]:
  """The bwrap command line that runs `launcher` (argv, python first) in the sandbox with
  `host_program` visible read-only at PROGRAM; bwrap writes {"child-pid": ...} (the host pid
  of the PID namespace's init) to `info_fd` if given."""
  args = [bwrap_path() or "bwrap", "--die-with-parent", "--new-session", "--clearenv",
          "--setenv", "PATH", "/usr/bin:/bin", "--unshare-ipc", "--unshare-pid",
          "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
  if is_root():
    args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
  else:
    args += ["--unshare-user"]
  args += ["--ro-bind", "/usr", "/usr"]
  for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
    target = os.path.join("/", name)
    if os.path.islink(target):  # merged /usr: /bin -> usr/bin
      args += ["--symlink", os.readlink(target), target]
    elif os.path.isdir(target):
      args += ["--ro-bind", target, target]
  made = set()
  for root in visible_roots():
    for parent in _parents(root):  # traversable, not listable (bwrap would make them 0700)
      if parent not in made:
        made.add(parent)
        args += ["--perms", "0711", "--dir", parent]
    args += ["--ro-bind", root, root]
  args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
           "--proc", "/proc", "--dev", "/dev",
           "--perms", "1777", "--size", str(int(tmp_bytes)), "--tmpfs", "/tmp",
           "--ro-bind", host_program, PROGRAM, "--chdir", "/tmp", "--remount-ro", "/"]
  if info_fd is not None:
    args += ["--info-fd", str(info_fd)]
  return args + launcher


def init_pid(info: bytes) -> int | None:
  """The PID namespace init's host pid from what bwrap wrote to --info-fd, if it did."""
  try:
    return int(json.loads(info.decode())["child-pid"])
  except (ValueError, KeyError, TypeError):
    return None


@functools.lru_cache(maxsize=1)
def probe() -> str | None:
  """None if a trivial program runs in the sandbox here, else why not (one line)."""
  if bwrap_path() is None:
    return "bubblewrap (bwrap) is not installed"
  import tempfile  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory(prefix="slnjax_probe_") as tmp:
    path = os.path.join(tmp, "program.py")
    with open(path, "w", encoding="utf-8") as f:
      f.write("import os\nassert not os.path.exists('/etc/passwd')\n")
    launcher = [sys.executable, "-I", "-B", "-c",
                "import os, sys\n"
                f"if {is_root()}:\n"
                f"    os.setgroups([]); os.setgid({UID_BASE}); os.setuid({UID_BASE})\n"
                f"exec(open({PROGRAM!r}).read())\n"]
    try:
      proc = subprocess.run(command(path, launcher, 1 << 20), capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
      return f"bwrap could not be started ({e})"
  if proc.returncode != 0:
    last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
    return (f"bwrap is installed but could not create the sandbox ({last}); user "
            f"namespaces may be disabled (sysctl kernel.unprivileged_userns_clone / "
            f"AppArmor) or the container may forbid mounts")
  return None
