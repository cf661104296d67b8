"""Device mesh (data, fsdp, tensor) and logical-axis rules: sharding is a config choice.

Lobes name every parameter/activation axis logically (batch, length, embed, heads,
kv_heads, kv, mlp, vocab, layers, cache_length); ``rules`` map those names onto mesh axes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
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


def mesh_from_config(mesh_cfg, devices=None) -> Mesh:
  """The mesh of ``config.mesh`` (ici, dcn) over ``devices`` (default: all; or a TPU
  topology's compile-only devices for an AOT check)."""
  return make_mesh(tuple(mesh_cfg.ici), tuple(mesh_cfg.dcn), devices)


def rules_of(mesh_cfg) -> tuple:
  return rules_from_config(tuple(mesh_cfg.rules) or None)


# -- Explicit shardings of everything the train step takes and returns -----------------------

def _spec_from_suffix(name: str, ndim: int) -> tuple:
  """Logical axes from a shape suffix: 'score_NB' -> (None, 'batch'); no suffix: batch first."""
  head, _, suffix = name.rpartition("_")
  if head and suffix.isupper() and len(suffix) == ndim:
    return tuple("batch" if c == "B" else None for c in suffix)
  return ("batch",) + (None,) * (ndim - 1) if ndim else ()


def _check_divisible(shape, sharding: NamedSharding, what: str):
  for dim, axes in zip(shape, sharding.spec):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = int(np.prod([sharding.mesh.shape[a] for a in names])) if names else 1
    if dim % size:
      raise ValueError(f"{what}: dimension {dim} of shape {tuple(shape)} is sharded over mesh "
                       f"axes {names} of total size {size}, which does not divide it. Change "
                       "config.mesh (ici/dcn) or the logical-axis rules (config.mesh.rules).")


def named_by_suffix(tree, mesh: Mesh, rules=DEFAULT_RULES):
  """NamedShardings for a dict/NamedTuple of arrays named with shape suffixes (a Dialogue,
  a batch, metrics): the axis lettered B is the batch axis; unsuffixed arrays are
  batch-major; scalars are replicated."""
  def one(path, x):
    key = path[-1] if path else None
    name = getattr(key, "name", None) or getattr(key, "key", None) or ""
    spec = nn.logical_to_mesh_axes(_spec_from_suffix(str(name), np.ndim(x)), list(rules))
    s = NamedSharding(mesh, spec)
    _check_divisible(np.shape(x), s, f"array {jax.tree_util.keystr(path)}")
    return s
  return jax.tree_util.tree_map_with_path(one, tree)


def param_shardings(model, mesh: Mesh, rules=DEFAULT_RULES) -> dict:
  """{"left": ..., "right": ...} NamedShardings of an SLN's parameters (sln.logical_axes)."""
  from slnjax import sln  # pylint: disable=import-outside-toplevel
  out = logical_sharding(sln.logical_axes(model), mesh, rules)
  shapes = jax.eval_shape(lambda r: sln.init(model, r), jax.random.key(0))
  jax.tree_util.tree_map_with_path(
      lambda p, x, s: _check_divisible(x.shape, s, f"parameter {jax.tree_util.keystr(p)}"),
      shapes, out)
  return out


def cache_shardings(cfg, mesh: Mesh, rules=DEFAULT_RULES) -> dict:
  """NamedShardings of the KV cache {"k", "v"} of lobe `cfg` (LobeConfig): [layers, batch,
  kv_heads, cache_length, kv], or one [batch, kv_heads, cache_length, kv] per layer."""
  from slnjax.lobes import transformer  # pylint: disable=import-outside-toplevel
  return logical_sharding(transformer.cache_logical_axes(cfg), mesh, rules)


def like_params(tree, params, params_sharding, mesh: Mesh):
  """Shardings for a pytree that mirrors the parameters somewhere inside (optimizer states,
  EMA or reference copies, gradients). A leaf whose path, after its last "left"/"right" key,
  ends with a parameter's path in that lobe, with the same shape, takes that parameter's
  sharding; every other leaf (step counters, scalars) is replicated."""
  table = {}
  for (path, x), s in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                          jax.tree.leaves(params_sharding)):
    table[tuple(_key(k) for k in path)] = (np.shape(x), s)

  def one(path, x):
    keys = tuple(_key(k) for k in path)
    lobe_at = [i for i, k in enumerate(keys) if k in ("left", "right")]
    if lobe_at:
      i = lobe_at[-1]
      for j in range(i + 1, len(keys)):
        hit = table.get((keys[i],) + keys[j:])
        if hit is not None and hit[0] == np.shape(x):
          return hit[1]
    return replicated(mesh)
  return jax.tree_util.tree_map_with_path(one, tree)


def _key(k):
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return getattr(k, attr)
  return str(k)


# -- The "hemispheres" layout ------------------------------------------------------------------
# Both lobes on one mesh is the default: every parameter is sharded by the rules and
# replicated over the remaining axes. With ``layout="hemispheres"`` each lobe's parameters and
# optimizer state live on one half of the devices instead: the leaves both lobes have (same
# path, shape, dtype) are stacked on a new leading axis of size 2 sharded over HEMI_AXIS
# (index 0 = left on the first half, 1 = right on the second; e.g. one slice each with
# dcn=(2,1,1)), and sharded within the half by the rules. A jitted program spans one device
# set, so compute still runs on all devices: a lobe's weights travel from its half to the
# other on use, and its gradients travel back.

HEMI_AXIS = "data"


@functools.partial(jax.tree_util.register_dataclass, data_fields=("both", "left", "right", "rest"),
                   meta_fields=("plan",))
@dataclasses.dataclass
class Hemispheres:
  """A {"left", "right", ...} node in the hemispheres layout."""
  both: tuple  # leaves common to both lobes, stacked [2, ...]
  left: tuple  # leaves only the left lobe has
  right: tuple  # leaves only the right lobe has
  rest: dict  # the node's other keys, unchanged
  plan: tuple  # (left treedef, right treedef, ((i_left, i_right), ...), left-only, right-only)


def _is_pair(x) -> bool:
  return isinstance(x, dict) and "left" in x and "right" in x


def _plan(node) -> tuple:
  fl, def_l = jax.tree_util.tree_flatten_with_path(node["left"])
  fr, def_r = jax.tree_util.tree_flatten_with_path(node["right"])
  r_at = {jax.tree_util.keystr(p): j for j, (p, _) in enumerate(fr)}
  both = []
  for i, (p, x) in enumerate(fl):
    j = r_at.get(jax.tree_util.keystr(p))
    y = None if j is None else fr[j][1]
    if y is not None and np.shape(x) == np.shape(y) and x.dtype == y.dtype:
      both.append((i, j))
  in_l, in_r = {i for i, _ in both}, {j for _, j in both}
  return (def_l, def_r, tuple(both), tuple(i for i in range(len(fl)) if i not in in_l),
          tuple(j for j in range(len(fr)) if j not in in_r))


def _split(node, plan, stack) -> Hemispheres:
  ll, lr = jax.tree.leaves(node["left"]), jax.tree.leaves(node["right"])
  _, _, both, only_l, only_r = plan
  return Hemispheres(tuple(stack(ll[i], lr[j]) for i, j in both),
                     tuple(ll[i] for i in only_l), tuple(lr[j] for j in only_r),
                     {k: v for k, v in node.items() if k not in ("left", "right")}, plan)


def to_hemispheres(state):
  """Every {"left", "right"} dict in ``state`` (params, optimizer states) -> Hemispheres."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  conv = lambda n: _split(n, _plan(n), lambda a, b: jnp.stack([a, b])) if _is_pair(n) else n
  return jax.tree.map(conv, state, is_leaf=_is_pair)


def from_hemispheres(state):
  """The inverse of ``to_hemispheres`` (traceable: use it inside the jitted step)."""
  def conv(h):
    if not isinstance(h, Hemispheres):
      return h
    def_l, def_r, both, only_l, only_r = h.plan
    ll, lr = [None] * def_l.num_leaves, [None] * def_r.num_leaves
    for (i, j), x in zip(both, h.both):
      ll[i], lr[j] = x[0], x[1]
    for i, x in zip(only_l, h.left):
      ll[i] = x
    for j, x in zip(only_r, h.right):
      lr[j] = x
    return {**h.rest, "left": def_l.unflatten(ll), "right": def_r.unflatten(lr)}
  return jax.tree.map(conv, state, is_leaf=lambda x: isinstance(x, Hemispheres))


def hemisphere_shardings(abstract_state, shardings, mesh: Mesh):
  """Shardings of ``to_hemispheres(state)`` from the default layout's ``shardings``."""
  if mesh.shape[HEMI_AXIS] != 2:
    raise ValueError(f"The hemispheres layout puts one lobe on each half of mesh axis "
                     f"{HEMI_AXIS!r}, which must have size 2; this mesh has "
                     f"{dict(mesh.shape)}. Set config.mesh.ici/dcn so that {HEMI_AXIS} is 2 "
                     "(e.g. dcn=(2,1,1) for two slices, or ici=(2,-1,1)).")

  def strip(axes):
    if axes == HEMI_AXIS:
      return None
    if isinstance(axes, tuple):
      return tuple(a for a in axes if a != HEMI_AXIS) or None
    return axes

  def stack(sl, _):
    return NamedSharding(mesh, PartitionSpec(HEMI_AXIS, *(strip(a) for a in sl.spec)))

  nodes, outer = jax.tree.flatten(abstract_state, is_leaf=_is_pair)
  subs = outer.flatten_up_to(shardings)
  return outer.unflatten([_split(s, _plan(a), stack) if _is_pair(a) else s
                          for a, s in zip(nodes, subs)])


def hemispheres_step(ts):
  """A train.TrainStep whose state is in the hemispheres layout: the same step function
  (``ts.step_fn.__wrapped__``), converted at its boundary inside one jit."""
  mesh, rep = ts.mesh, replicated(ts.mesh)
  h_sh = hemisphere_shardings(ts.abstract_state, ts.state_shardings, mesh)
  step, init = ts.step_fn.__wrapped__, ts.init_fn.__wrapped__

  def h_step(h_state, batch, *rollout):
    state, metrics = step(from_hemispheres(h_state), batch, *rollout)
    return to_hemispheres(state), metrics

  in_sh = (h_sh, ts.batch_shardings) + ((None,) if ts.rollout_fn is not None else ())
  h_abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            jax.eval_shape(to_hemispheres, ts.abstract_state), h_sh)
  rollout_fn = None
  if ts.rollout_fn is not None:
    roll = ts.rollout_fn.__wrapped__
    rollout_fn = jax.jit(lambda h, b: roll(from_hemispheres(h), b),
                         in_shardings=(h_sh, ts.batch_shardings))
  return ts._replace(
      init_fn=jax.jit(lambda r: to_hemispheres(init(r)), out_shardings=h_sh),
      step_fn=jax.jit(h_step, in_shardings=in_sh, out_shardings=(h_sh, rep), donate_argnums=0),
      state_shardings=h_sh, abstract_state=h_abstract, rollout_fn=rollout_fn)
