"""Paper-style comparison tables in one command: every model x seed, a small grid chosen on validation.

  python -m hnt_jax.experiments --config configs/taobao.py --out runs/exp_taobao \
      --models hnt,hnt_no_hes,hnt_no_nt,heuristic,mf,lightgcn,lightgcn_g,crgcn,mbcgcn --seeds 3 \
      --protocol clean|published [--jobs N] [--config.key=value ...]

Layout: OUT/<protocol>/<model>/<grid point>/s<seed>/ is one run's workdir. Finished runs are skipped,
interrupted ones resume, so the same command continues an experiment. Then OUT/<protocol>/summary.md,
summary.json and summary.png.

* Models: any registry name (`mf`, `lightgcn`, `lightgcn_g`, `heuristic`, `crgcn`, `mbcgcn`, `hnt`) and the
  HNT ablations `hnt_no_hes`, `hnt_no_nt`, `hnt_no_both`.
* Grid (`experiments.grid`, e.g. "train.learning_rate=0.001,0.01;model.l2=0.0001,0.001"): the same points
  for every trainable model. Under `clean` each point is trained with the first seed, the point with the best
  validation `train.select_metric` is kept, and the other seeds run at it. Test metrics never choose anything.
* Protocols: `clean` holds `valid.txt` out of training and selects on it; `published` trains on all target
  pairs as published for a fixed `experiments.published_epochs` epochs with no validation (the protocol of
  published numbers), at the grid point `clean` chose when its summary exists (else the defaults). Published
  numbers (`experiments.published`) appear only in the `published` summary, never beside `clean` numbers.
"""
from hnt_jax.experiments.runner import (PROTOCOLS, VARIANTS, Experiment, describe_protocol, model_overrides,
                                       parse_grid, parse_published, protocol_overrides)
from hnt_jax.experiments.summary import (NO_CLEAN_CHOICE, bar_chart, chart_series, format_summary, improvement,
                                        point_tag, provenance, summarize)
from hnt_jax.experiments.processes import model_command, run_in_processes

__all__ = ["PROTOCOLS", "VARIANTS", "Experiment", "describe_protocol", "model_overrides", "parse_grid",
           "parse_published", "point_tag", "protocol_overrides", "NO_CLEAN_CHOICE", "bar_chart", "chart_series",
           "format_summary", "improvement", "provenance", "summarize", "model_command", "run_in_processes"]
