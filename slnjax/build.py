"""Config -> model: the dataclass configs a ConfigDict's model fields become, the model, and
the lengths a config implies (slnjax.config is the schema; slnjax.finalize validates)."""
from __future__ import annotations

from ml_collections import config_dict

from slnjax import memory, sln, wide
from slnjax.lobes.config import LobeConfig
from slnjax.loop import LoopConfig
from slnjax.wide.config import WideConfig


def is_wide(c: config_dict.ConfigDict) -> bool:
  """A wide SLN (rows E, G: slnjax.wide) rather than a dialogue of two lobes."""
  return c.model.kind in wide.KINDS


def lobe_config(c: config_dict.ConfigDict, name: str) -> LobeConfig:
  d = c.model[name].to_dict()
  return LobeConfig.from_dict({k: v for k, v in d.items() if v is not None})


def _full_bptt(d: dict) -> dict:
  if d.get("bptt_depth") is not None and d["bptt_depth"] < 0:
    d["bptt_depth"] = None  # -1: full BPTT (a command line cannot write None)
  return d


def loop_config(c: config_dict.ConfigDict) -> LoopConfig:
  return LoopConfig(**_full_bptt(c.model.loop.to_dict()))


def wide_config(c: config_dict.ConfigDict) -> WideConfig:
  """config.model.wide as a WideConfig (an unknown key is an error that names it)."""
  if "wide" not in c.model or c.model.wide is None:
    raise ValueError("a wide kind needs config.model.wide (slnjax.wide.WideConfig fields).")
  return WideConfig.from_dict(_full_bptt(c.model.wide.to_dict()))


def memory_config(c: config_dict.ConfigDict) -> memory.MemoryConfig | None:
  """The memory selector's config, or None when model.memory.lobes is empty."""
  d = c.model.memory.to_dict()
  if not d.get("lobes"):
    return None
  return memory.MemoryConfig(**{**d, "lobes": tuple(d["lobes"])})


def bank_shape(c: config_dict.ConfigDict) -> tuple[int, int] | None:
  """(capacity, item_len) of the batches' memory banks, or None without memory."""
  if memory_config(c) is None:
    return None
  return int(c.task.bank.capacity), int(c.task.bank.item_len)


def target_len(c: config_dict.ConfigDict) -> int:
  if c.target_len is not None:
    return c.target_len
  return c.model.wide.answer_len if is_wide(c) else c.model.loop.turn_len


def build_model(c: config_dict.ConfigDict) -> sln.SLN | wide.WideSLN:
  if is_wide(c):
    return sln.build(c.model.kind, lobe_config(c, "left"), None, wide_config(c))
  return sln.build(c.model.kind, lobe_config(c, "left"), lobe_config(c, "right"), loop_config(c),
                   memory=memory_config(c))
