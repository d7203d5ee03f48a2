"""Training: BPR sampling, the jitted train step, Orbax checkpoints and the epoch loop."""
