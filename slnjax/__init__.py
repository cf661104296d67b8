"""slnjax: Strange-Loop Networks in JAX/Flax.

Layers (bottom to top; imports point down): lobes -> soft_tokens -> loop -> sln.
See docs/ARCHITECTURE.md.
"""
__version__ = "0.1.0"
