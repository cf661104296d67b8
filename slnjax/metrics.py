"""What a person watches: a progress line on stdout, JSONL and TensorBoard files in the workdir.

Only process 0 writes (``enabled``). Files:
  <workdir>/metrics.jsonl   one JSON object per log: {"step", "split": "train"|"eval"|"final", ...}
  <workdir>/tb/             TensorBoard event files (written here: TFRecord framing of
                            Event protos, encoded by hand; no TensorFlow, no tensorboardX)
On resume from step s, JSONL lines with step > s are dropped and TensorBoard purges events
from step s + 1 on, so a resumed run's logs read like an uninterrupted one.
With $SLNJAX_WANDB_PROJECT set (and the `wandb` extra installed), the same scalars also go to
a Weights & Biases run whose id follows from the workdir, so a resumed job continues it (W&B
keeps the first value of a step: steps re-run after a preemption are not logged again).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import struct
import sys
import time

import numpy as np

# Shown first on the progress line, in this order, when present.
_FIRST = ("loss", "token_acc", "critic_acc", "turns", "answer_acc", "reward_mean", "acc_turn1",
          "acc_final")
# The accuracies, named on the progress line by what they measure (the JSONL / TensorBoard
# keys stay short): token accuracy under teacher forcing (the objective's own, on the target
# tokens) against the task verifier's exact match of the decoded answer.
LABELS = {
    "token_acc": "token acc (teacher-forced)",
    "token_acc_right": "right lobe token acc (teacher-forced)",
    "answer_acc": "exact match (verifier, last turn)",
    "acc_turn1": "exact match (verifier, turn 1)",
    "acc_final": "exact match (verifier, last turn)",
    "critic_acc": "critic agrees with verifier",
}


def _fmt(v: float) -> str:
  if v != v or math.isinf(v):
    return str(v)
  if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
    return f"{v:.3g}"
  return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 10 else f"{v:.1f}"


def _rate(v: float) -> str:
  return f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.1f}"


def duration(seconds: float) -> str:
  """'45s', '12m05s', '3h07m'."""
  s = int(round(seconds))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_line(step: int, total: int, m: dict) -> str:
  parts = [f"step {step}/{total}"]
  if "steps_per_sec" in m:
    parts.append(f"{_rate(m['steps_per_sec'])} steps/s")
    if total > step and m["steps_per_sec"] > 0:  # at the rate of the last interval
      parts.append(f"ETA {duration((total - step) / m['steps_per_sec'])}")
  if "tokens_per_sec" in m:
    parts.append(f"{_rate(m['tokens_per_sec'])} tok/s")
  keys = [k for k in _FIRST if k in m]
  keys += sorted(k for k in m if k not in _FIRST and k not in ("steps_per_sec", "tokens_per_sec")
                 and "/" not in k)
  parts += [f"{LABELS.get(k, k)} {_fmt(m[k])}" for k in keys]
  return " | ".join(parts)


def to_python(metrics: dict) -> dict:
  """Fetches device scalars to floats (the only place metrics leave the device)."""
  def get(v):
    return float(np.asarray(v.addressable_data(0) if hasattr(v, "addressable_data") else v))
  return {k: get(v) for k, v in metrics.items()}


def _crc32c_table():
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  c = 0xFFFFFFFF
  for b in data:
    c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
  return c ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  c = crc32c(data)
  return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  n &= (1 << 64) - 1
  while True:
    b, n = n & 0x7F, n >> 7
    out.append(b | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
  key = _varint((num << 3) | wire)
  if wire == 2:
    return key + _varint(len(payload)) + payload
  return key + payload


def _event(step: int, **parts: bytes) -> bytes:
  """An Event proto: wall_time=1 (double), step=2, file_version=3, summary=5, session_log=7."""
  out = _field(1, 1, struct.pack("<d", time.time())) + _field(2, 0, _varint(step))
  nums = {"file_version": 3, "summary": 5, "session_log": 7}
  for name, payload in parts.items():
    out += _field(nums[name], 2, payload)
  return out


def scalar_summary(tag: str, value: float) -> bytes:
  v = _field(1, 2, tag.encode()) + _field(2, 5, struct.pack("<f", value))
  return _field(1, 2, v)


def text_summary(tag: str, text: str) -> bytes:
  plugin = _field(1, 2, _field(1, 2, b"text"))  # SummaryMetadata{plugin_data{plugin_name}}
  tensor = _field(1, 0, _varint(7)) + _field(2, 2, b"") + _field(8, 2, text.encode())
  v = _field(1, 2, tag.encode()) + _field(9, 2, plugin) + _field(8, 2, tensor)
  return _field(1, 2, v)


class EventFile:
  """A TensorBoard event file: records of [len u64][masked crc][data][masked crc]."""

  def __init__(self, logdir: str, purge_step: int | None = None):
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self.path = os.path.join(logdir, name)
    self._f = open(self.path, "ab")
    self._record(_event(0, file_version=b"brain.Event:2"))
    if purge_step is not None:  # SessionLog START: TensorBoard drops later steps of old files
      self._record(_event(purge_step, session_log=_field(1, 0, _varint(1))))

  def _record(self, data: bytes):
    header = struct.pack("<Q", len(data))
    self._f.write(header + struct.pack("<I", _masked_crc(header)) + data
                  + struct.pack("<I", _masked_crc(data)))

  def add_scalar(self, tag: str, value: float, step: int):
    self._record(_event(step, summary=scalar_summary(tag, value)))

  def add_text(self, tag: str, text: str, step: int):
    self._record(_event(step, summary=text_summary(tag, text)))

  def flush(self):
    self._f.flush()

  def close(self):
    self._f.close()


def read_events(path: str) -> list[bytes]:
  """The records of an event file, with their checksums verified."""
  out = []
  with open(path, "rb") as f:
    raw = f.read()
  i = 0
  while i < len(raw):
    header = raw[i:i + 8]
    (n,) = struct.unpack("<Q", header)
    if struct.unpack("<I", raw[i + 8:i + 12])[0] != _masked_crc(header):
      raise ValueError(f"{path}: bad length checksum at byte {i}")
    data = raw[i + 12:i + 12 + n]
    if struct.unpack("<I", raw[i + 12 + n:i + 16 + n])[0] != _masked_crc(data):
      raise ValueError(f"{path}: bad data checksum at byte {i}")
    out.append(data)
    i += 16 + n
  return out


class Writer:
  """Progress line + JSONL + TensorBoard. ``start_step``: the step the run (re)starts from."""

  def __init__(self, workdir: str, *, enabled: bool = True, start_step: int = 0,
               total_steps: int = 0, stream=None):
    self.enabled = enabled
    self.total = total_steps
    self.stream = stream or sys.stdout
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = self._wandb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(self.path):  # keep only what the restored state had seen
      with open(self.path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= start_step]
      with open(self.path, "w") as f:
        f.writelines(kept)
    self._tb = EventFile(os.path.join(workdir, "tb"),
                         purge_step=start_step + 1 if start_step else None)
    self._wandb = wandb_run(workdir)

  def write(self, step: int, metrics: dict, split: str = "train", echo: bool = True):
    if not self.enabled:
      return
    row = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    finite = {f"{split}/{k}": float(v) for k, v in metrics.items() if np.isfinite(v)}
    for tag, v in finite.items():
      self._tb.add_scalar(tag, v, int(step))
    if self._wandb is not None:
      self._wandb.log(finite, step=int(step))
    if echo:
      line = progress_line(step, self.total, metrics)
      print(line if split == "train" else f"{split}  {line}", file=self.stream, flush=True)

  def note(self, text: str):
    """One line for the person watching (process 0's stream only)."""
    if self.enabled:
      print(text, file=self.stream, flush=True)

  def text(self, step: int, tag: str, text: str):
    if self.enabled:
      self._tb.add_text(tag, text, int(step))

  def flush(self):
    if self._tb is not None:
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    if self._wandb is not None:
      self._wandb.finish()
      self._wandb = None


WANDB_ENV = "SLNJAX_WANDB_PROJECT"


def wandb_run(workdir: str):
  """A Weights & Biases run when $SLNJAX_WANDB_PROJECT names a project, else None."""
  project = os.environ.get(WANDB_ENV)
  if not project:
    return None
  try:
    import wandb  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ValueError(f"${WANDB_ENV}={project} asks for Weights & Biases logging but wandb is "
                     "not installed: pip install -e '.[wandb]' (or unset it).") from e
  path = os.path.abspath(workdir).rstrip("/")
  return wandb.init(project=project, id=hashlib.sha1(path.encode()).hexdigest()[:16],
                    name=os.path.basename(path), dir=path, resume="allow")


class Timer:
  """steps/s and tokens/s between two logs (wall clock)."""

  def __init__(self, step: int):
    self.step, self.t = step, time.perf_counter()

  def rates(self, step: int, tokens_per_step: float) -> dict:
    if step == self.step:
      return {}
    now = time.perf_counter()
    sps = (step - self.step) / max(now - self.t, 1e-9)
    self.step, self.t = step, now
    return {"steps_per_sec": sps, "tokens_per_sec": sps * tokens_per_step}
