"""hnt_jax: HNT multi-behavior recommendation (user hesitation and negative transfer) in JAX/Flax."""

__version__ = "0.1.0"
