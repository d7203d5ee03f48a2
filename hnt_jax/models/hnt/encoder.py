"""Behavior encoder (docs/method.md section 1): LightGCN propagation over each behavior's BCOO adjacency.

`cascade`: behavior k starts from behavior k-1's output (optionally + E⁰ as a residual); `parallel`: every
behavior starts from E⁰. Each behavior's output is the mean over layers 0..L of Â_k^l · In_k.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax

from hnt_jax.graph import LeftOutEdges
from hnt_jax.models.lightgcn import light_propagation

MODES = ("cascade", "parallel")


def encode_behaviors(graphs: Sequence, ego: jax.Array, n_layers: int, mode: str = "cascade",
                     residual: bool = False, left_out: Optional[LeftOutEdges] = None) -> list[jax.Array]:
  """[E_1, ..., E_K], each [M+N, d], in cascade order (`graphs`: one BehaviorGraph per behavior).
  `left_out`: edges of the last (target) graph its propagation goes without."""
  if mode not in MODES:
    raise ValueError(f"model.encoder={mode!r} is not one of {', '.join(MODES)}")
  outs: list[jax.Array] = []
  for k, graph in enumerate(graphs):
    if mode == "parallel" or k == 0:
      x = ego
    else:
      x = outs[-1] + ego if residual else outs[-1]
    last = k == len(graphs) - 1
    outs.append(light_propagation(graph, x, n_layers, left_out if last else None))
  return outs
