"""HNT, one file per idea of docs/method.md: encoder.py (section 1), transfer.py (section 2), hesitation.py
(section 3), model.py (section 4: the objective, scoring, diagnostics)."""
from hnt_jax.models.hnt.model import HNT, HNTEmbeddings

__all__ = ["HNT", "HNTEmbeddings"]
