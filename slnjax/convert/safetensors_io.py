"""Reading and writing Hugging Face safetensors checkpoints, tensor by tensor and slice by slice.

A checkpoint directory holds either one `model.safetensors` (or several `*.safetensors`) or a
sharded set listed in `model.safetensors.index.json` ({"weight_map": {tensor: file}}).
`tensor_table` reads only the file headers; `Reader.read` reads one rectangular slice of one
tensor (safetensors memory-maps the file, so only the requested bytes are touched);
`read_block` assembles any slice of a lobe param from such reads (see TensorMap).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# safetensors dtype codes of floating tensors -> LobeConfig dtype names.
FLOAT_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  file: str  # file name inside the checkpoint directory
  shape: tuple[int, ...]
  dtype: str  # safetensors code: "F32", "BF16", ...


def tensor_table(ckpt_dir: str) -> dict[str, TensorInfo]:
  """Name -> TensorInfo for every tensor of the checkpoint (headers only, no tensor data)."""
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f"Checkpoint directory {ckpt_dir!r} does not exist.")
  index_path = os.path.join(ckpt_dir, INDEX_FILE)
  weight_map = None
  if os.path.exists(index_path):
    with open(index_path) as f:
      weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict):
      raise ValueError(f"{index_path} has no 'weight_map' object.")
    files = sorted(set(weight_map.values()))
    missing = [n for n in files if not os.path.exists(os.path.join(ckpt_dir, n))]
    if missing:
      raise FileNotFoundError(f"{INDEX_FILE} in {ckpt_dir} lists files that are missing: "
                              f"{missing}.")
  else:
    files = sorted(n for n in os.listdir(ckpt_dir) if n.endswith(".safetensors"))
    if not files:
      found = sorted(os.listdir(ckpt_dir))
      raise FileNotFoundError(f"No *.safetensors file and no {INDEX_FILE} in {ckpt_dir} "
                              f"(found: {found}). Only safetensors checkpoints are supported.")
  table: dict[str, TensorInfo] = {}
  for name in files:
    with safe_open(os.path.join(ckpt_dir, name), framework="np") as f:
      for key in f.keys():
        if key in table:
          raise ValueError(f"Tensor {key!r} is stored twice: in {table[key].file} and {name}.")
        s = f.get_slice(key)
        table[key] = TensorInfo(name, tuple(s.get_shape()), s.get_dtype())
  if weight_map is not None:
    misplaced = sorted(k for k, n in weight_map.items() if k not in table or table[k].file != n)
    if misplaced:
      raise ValueError(f"{INDEX_FILE} in {ckpt_dir} maps tensors to files that do not hold "
                       f"them: {misplaced[:20]}{' ...' if len(misplaced) > 20 else ''}.")
  return table


@dataclasses.dataclass(frozen=True)
class TensorMap:
  """Where one lobe param lives inside one stored tensor.

  Each stored axis is the row-major product of named factors: q_proj.weight [H*E, D] has
  hf_axes ("he", "d"), and the lobe's q [D, H, E] has lobe_axes "dhe". A fused tensor holds
  several params: GPT-NeoX's query_key_value.weight [H*3*E, D] is ("hje", "d") with pick
  (("j", 0),) for q, 1 for k and 2 for v. Reading any lobe slice, and writing back, follow.
  """
  path: tuple[str, ...]  # lobe param path (inside a block for per-layer params)
  hf: str  # HF tensor name; "{i}" is the layer index
  hf_axes: tuple[str, ...]  # per HF axis, its factors in row-major order: ("he", "d")
  lobe_axes: str  # the same factors (less picked ones) in lobe order: "dhe"
  pick: tuple[tuple[str, int], ...] = ()  # factors fixed to one index


def read_block(read, name: str, tm: TensorMap, sizes, ranges, np_dtype) -> np.ndarray:
  """The block of one layer's lobe param with lobe-axis ranges [(start, stop), ...].

  Each HF axis is a row-major product of factors. On an axis, the innermost factor whose range
  is partial and all factors inside it (full) make one contiguous run; factors outside it are
  iterated, one read each. So each read is rectangular and no byte is read that is not needed.
  """
  rng = dict(zip(tm.lobe_axes, ranges))
  rng.update({f: (p, p + 1) for f, p in tm.pick})
  per_axis = []
  for ax in tm.hf_axes:
    sz = [sizes[f] for f in ax]
    partial = [k for k, f in enumerate(ax) if rng[f] != (0, sizes[f])]
    k = partial[-1] if partial else 0
    stride = [math.prod(sz[j + 1:]) for j in range(len(ax))]
    pieces = []
    for outer in itertools.product(*(range(*rng[f]) for f in ax[:k])):
      base = sum(o * stride[j] for j, o in enumerate(outer))
      lo, hi = rng[ax[k]]
      dest = tuple(o - rng[f][0] for o, f in zip(outer, ax)) + (slice(None),) * (len(ax) - k)
      pieces.append((dest, slice(base + lo * stride[k], base + hi * stride[k]),
                     [rng[f][1] - rng[f][0] for f in ax[k:]]))
    per_axis.append(pieces)
  flat = "".join(tm.hf_axes)
  out = np.empty([rng[f][1] - rng[f][0] for f in flat], np_dtype)
  for combo in itertools.product(*per_axis):
    data = read(name, tuple(sl for _, sl, _ in combo))
    out[sum((d for d, _, _ in combo), ())] = data.reshape(sum((s for _, _, s in combo), []))
  picked = dict(tm.pick)
  out = out[tuple(0 if f in picked else slice(None) for f in flat)]
  kept = [f for f in flat if f not in picked]
  return out.transpose([kept.index(f) for f in tm.lobe_axes])


def write_block(out: np.ndarray, tm: TensorMap, block: np.ndarray) -> None:
  """Inverse of read_block for a whole layer: put a lobe param's block (lobe axes) into `out`,
  the HF tensor viewed with one axis per factor (picked factors at their index)."""
  flat, picked = "".join(tm.hf_axes), dict(tm.pick)
  kept = [f for f in flat if f not in picked]
  out[tuple(picked.get(f, slice(None)) for f in flat)] = block.transpose(
      [tm.lobe_axes.index(f) for f in kept])


class Reader:
  """Open safetensors files of one checkpoint; read rectangular slices of named tensors."""

  def __init__(self, ckpt_dir: str, table: dict[str, TensorInfo]):
    self._dir, self._table = ckpt_dir, table
    self._stack = contextlib.ExitStack()
    self._open: dict[str, object] = {}

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._stack.close()
    self._open.clear()

  def read(self, name: str, slices: tuple[slice, ...]) -> np.ndarray:
    """tensor[slices] as a numpy array; only that slice is read from disk."""
    file = self._table[name].file
    if file not in self._open:
      path = os.path.join(self._dir, file)
      self._open[file] = self._stack.enter_context(safe_open(path, framework="np"))
    return self._open[file].get_slice(name)[slices]


def plan_shards(entries: list[tuple[str, int]], max_shard_bytes: int | None) -> list[list[str]]:
  """Greedy split of (name, nbytes) in order into files of at most max_shard_bytes each
  (a tensor larger than the limit gets a file of its own)."""
  if not max_shard_bytes:
    return [[n for n, _ in entries]]
  shards, cur, size = [], [], 0
  for name, nbytes in entries:
    if cur and size + nbytes > max_shard_bytes:
      shards.append(cur)
      cur, size = [], 0
    cur.append(name)
    size += nbytes
  return shards + [cur] if cur else shards


def write_checkpoint(out_dir: str, specs: list[tuple[str, tuple[int, ...], np.dtype]],
                     produce, max_shard_bytes: int | None = None) -> list[str]:
  """Write tensors as safetensors, holding one output file's tensors in memory at a time.

  specs: (name, shape, dtype) in file order; produce(name) -> np.ndarray of that shape/dtype.
  One file `model.safetensors`, or shards `model-0000i-of-0000n.safetensors` plus
  `model.safetensors.index.json` when max_shard_bytes splits them. Returns the file names.
  """
  os.makedirs(out_dir, exist_ok=True)
  stale = sorted(n for n in os.listdir(out_dir) if n.endswith(".safetensors") or n == INDEX_FILE)
  if stale:
    raise FileExistsError(f"{out_dir} already holds checkpoint files {stale}; write into a new "
                          "directory (mixing them would load the wrong tensors).")
  nbytes = {n: math.prod(s) * np.dtype(d).itemsize for n, s, d in specs}
  shards = plan_shards([(n, nbytes[n]) for n, _, _ in specs], max_shard_bytes)
  expect = {n: (tuple(s), np.dtype(d)) for n, s, d in specs}
  files = ([SINGLE_FILE] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  weight_map = {}
  for file, names in zip(files, shards):
    tensors = {}
    for n in names:
      arr = np.ascontiguousarray(produce(n))
      if (arr.shape, arr.dtype) != expect[n]:
        raise ValueError(f"Tensor {n!r}: produced {arr.shape} {arr.dtype}, expected "
                         f"{expect[n][0]} {expect[n][1]}.")
      tensors[n] = arr
      weight_map[n] = file
    save_file(tensors, os.path.join(out_dir, file), metadata={"format": "pt"})
  if len(files) > 1:
    index = {"metadata": {"total_parameters": sum(math.prod(s) for _, s, _ in specs),
                          "total_size": sum(nbytes.values())},
             "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(out_dir, INDEX_FILE), "w") as f:
      json.dump(index, f, indent=2)
  return files
