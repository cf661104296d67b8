"""Training procedures of the paper, one module each, registered by name (see base.py)."""
from slnjax.objectives.base import REGISTRY, Context, Objective, get, register
