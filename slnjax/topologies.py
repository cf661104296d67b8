"""Friendly TPU slice names -> compile-only topologies, with each chip's HBM and peak FLOP/s.

    parse("v5p-128")    64 v5p chips (128 TensorCores), 4x4x4, one slice
    parse("2xv5e-256")  two v5e 16x16 slices (512 chips) joined over DCN
    parse("v5e:2x2")    a raw topology string: generation:shape

Naming follows Cloud TPU: v4-N and v5p-N count TensorCores (2 per chip, one "megacore"
device per chip); v5e-N (alias v5litepod-N) and v6e-N count chips. Chip figures are the
public dense bf16 peak per chip (for MFU) and the HBM libtpu lets a program use (for the
fit check).
"""
from __future__ import annotations

import dataclasses
import math
import re

GiB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
  generation: str
  hbm_bytes: int
  peak_flops: float  # dense bf16 FLOP/s per chip
  cores_per_chip: int  # TensorCores behind one JAX device
  chip_config: str  # libtpu chip_config_name
  ndim: int  # torus dimensions
  hbm_bandwidth: float = 0.0  # HBM bytes/s per chip (for the roofline in slnjax.aot)


# hbm_bytes: the HBM a program may use, as libtpu 0.0.42 reports it ("available HBM") when a
# compile overflows (the chips have 32 / 16 / 95 / 32 GB).
# peak_flops and hbm_bandwidth: the per-chip bf16 peak and HBM bandwidth of the Cloud TPU
# system-architecture pages (v4: 275 TFLOP/s, 1,200 GB/s; v5e: 197 TFLOP/s, 819 GB/s; v5p:
# 459 TFLOP/s, 2,765 GB/s; v6e (Trillium): 918 TFLOP/s, 1,640 GB/s).
CHIPS = {
    "v4": Chip("v4", int(30.75 * GiB), 275e12, 2, "megacore", 3, 1200e9),
    "v5e": Chip("v5e", int(15.75 * GiB), 197e12, 1, "default", 2, 819e9),
    "v5p": Chip("v5p", int(95.74 * GiB), 459e12, 2, "megacore", 3, 2765e9),
    "v6e": Chip("v6e", int(31.25 * GiB), 918e12, 1, "default", 2, 1640e9),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6": "v6e"}

# chips in one slice -> torus shape
SHAPES = {
    2: {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16),
        256: (16, 16)},
    3: {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4),
        128: (4, 4, 8), 256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16),
        4096: (16, 16, 16)},
}


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str  # as given
  chip: Chip
  shape: tuple[int, ...]  # chips per slice along each torus axis
  num_slices: int = 1

  @property
  def topology_name(self) -> str:
    return f"{self.chip.generation}:{'x'.join(map(str, self.shape))}"

  @property
  def chips_per_slice(self) -> int:
    return math.prod(self.shape)

  @property
  def num_devices(self) -> int:
    return self.chips_per_slice * self.num_slices

  @property
  def chips_per_host_bounds(self) -> tuple[int, int, int]:
    s = tuple(self.shape) + (1,) * (3 - len(self.shape))
    if self.chips_per_slice <= 8 and self.chip.ndim == 2:  # single-host v5e/v6e slices
      return s
    return tuple(min(a, b) for a, b in zip(s, (2, 2, 1)))

  def devices(self):
    """Compile-only TPU devices of this topology (needs libtpu: pip install 'jax[tpu]')."""
    import os  # pylint: disable=import-outside-toplevel
    # Another process (a test, a second check) may hold libtpu's lock file.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
    desc = topologies.get_topology_desc(
        platform="tpu", topology_name=self.topology_name, chip_config_name=self.chip.chip_config,
        chips_per_host_bounds=self.chips_per_host_bounds, num_slices=self.num_slices)
    return desc.devices


def _chip(gen: str, name: str) -> Chip:
  gen = _ALIASES.get(gen, gen)
  if gen not in CHIPS:
    raise ValueError(f"Unknown TPU generation {gen!r} in {name!r}; known: {sorted(CHIPS)} "
                     f"(aliases {sorted(_ALIASES)}).")
  return CHIPS[gen]


def parse(name: str) -> Topology:
  """'v5p-128', '2xv5e-256' (slices), 'v5e:4x4' or '2xv5e:4x4' (raw) -> Topology."""
  m = re.fullmatch(r"(?:(\d+)x)?([a-z0-9]+?)(?:-(\d+)|:(\d+(?:x\d+)*))", name.strip().lower())
  if not m:
    raise ValueError(f"Cannot read TPU topology {name!r}: use e.g. v5p-128, v5e-256, "
                     f"2xv5e-256 (two slices) or a raw topology such as v5e:4x4.")
  slices, gen, count, raw = m.groups()
  chip = _chip(gen, name)
  slices = int(slices or 1)
  if slices < 1:
    raise ValueError(f"{name!r}: the number of slices must be >= 1.")
  if raw:
    shape = tuple(int(x) for x in raw.split("x"))
    if len(shape) != chip.ndim:
      raise ValueError(f"{name!r}: {chip.generation} topologies have {chip.ndim} dimensions.")
    return Topology(name, chip, shape, slices)
  count = int(count)
  if count % chip.cores_per_chip:
    raise ValueError(f"{name!r}: {chip.generation}-N counts TensorCores "
                     f"({chip.cores_per_chip} per chip); N must be a multiple of "
                     f"{chip.cores_per_chip}.")
  chips = count // chip.cores_per_chip
  if chips not in SHAPES[chip.ndim]:
    sizes = [n * chip.cores_per_chip for n in SHAPES[chip.ndim]]
    raise ValueError(f"{name!r} is not in the table; {chip.generation} sizes: "
                     f"{', '.join(f'{chip.generation}-{n}' for n in sizes)} "
                     f"(or give a raw topology like {chip.generation}:"
                     f"{'x'.join(['4'] * chip.ndim)}).")
  return Topology(name, chip, SHAPES[chip.ndim][chips], slices)


def table() -> list[str]:
  """One line per friendly name (for --list and docs/scaling.md)."""
  rows = []
  for chip in CHIPS.values():
    for chips, shape in SHAPES[chip.ndim].items():
      t = Topology(f"{chip.generation}-{chips * chip.cores_per_chip}", chip, shape)
      rows.append(f"{t.name:<10} {t.topology_name:<14} {chips:>5} chips  "
                  f"{chip.hbm_bytes / GiB:.2f} GiB HBM/chip  {chip.peak_flops / 1e12:.0f} "
                  "TFLOP/s/chip")
  return rows
