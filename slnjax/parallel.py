"""Device mesh (data, fsdp, tensor) and logical-axis rules: sharding is a config choice.

Lobes name every parameter/activation axis logically (batch, length, embed, heads,
kv_heads, kv, mlp, vocab, layers, cache_length); ``rules`` map those names onto mesh axes.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "tensor")

DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("cache_length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
)


def _fill(shape: Sequence[int], n: int, what: str) -> tuple[int, ...]:
  shape = list(shape)
  if len(shape) != len(AXES):
    raise ValueError(f"{what} parallelism {tuple(shape)} must give one size per axis {AXES}.")
  if shape.count(-1) > 1:
    raise ValueError(f"{what} parallelism {tuple(shape)}: at most one axis may be -1.")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if n % known:
      raise ValueError(f"{what} parallelism {tuple(shape)} does not divide {n} devices.")
    shape[shape.index(-1)] = n // known
  if int(np.prod(shape)) != n:
    raise ValueError(f"{what} parallelism {tuple(shape)} uses {int(np.prod(shape))} devices; "
                     f"{n} are available. Use -1 on one axis to fill in automatically.")
  return tuple(shape)


def make_mesh(ici: Sequence[int] = (-1, 1, 1), dcn: Sequence[int] = (1, 1, 1),
              devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh: ``ici`` within a slice, ``dcn`` across slices."""
  devices = list(devices if devices is not None else jax.devices())
  slices = {getattr(d, "slice_index", 0) for d in devices}
  n_slices = len(slices)
  dcn = _fill(dcn, n_slices, "DCN")
  ici = _fill(ici, len(devices) // n_slices, "ICI")
  if n_slices > 1:
    arr = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
  else:
    try:
      arr = mesh_utils.create_device_mesh(ici, devices)
    except (AssertionError, NotImplementedError, ValueError):
      arr = np.asarray(devices).reshape(ici)
  return Mesh(arr, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def rules_from_config(rules) -> tuple:
  """Config rules as a tuple of (logical, mesh axes) pairs; validates the mesh axis names."""
  out = []
  for logical, phys in (rules or DEFAULT_RULES):
    names = (phys,) if isinstance(phys, str) else tuple(phys or ())
    bad = [a for a in names if a not in AXES]
    if bad:
      raise ValueError(f"Logical axis rule {logical!r} -> {phys!r} names unknown mesh axes "
                       f"{bad}; mesh axes are {AXES}.")
    out.append((logical, phys if isinstance(phys, str) or phys is None else tuple(phys)))
  return tuple(out)


def logical_sharding(logical_tree, mesh: Mesh, rules=DEFAULT_RULES):
  """NamedShardings for a pytree of logical PartitionSpecs (e.g. lobes.logical_axes)."""
  return nn.logical_to_mesh_sharding(logical_tree, mesh, list(rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, rules=DEFAULT_RULES, ndim: int = 2) -> NamedSharding:
  """Shard the leading (batch) axis as the rules say, replicate the rest."""
  spec = nn.logical_to_mesh_axes(("batch",) + (None,) * (ndim - 1), list(rules))
  return NamedSharding(mesh, spec)


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules=DEFAULT_RULES):
  """Makes the lobes' activation constraints (with_logical_constraint) take effect."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
    yield
