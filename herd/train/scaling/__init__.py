"""Scaling laws: isoFLOP sweeps, compute-optimal frontiers, loss and downstream prediction, data-mix experiments.

`herd scaling sweep | fit | predict | mix` (see `herd.train.scaling.commands`).
"""

from herd.train.scaling.commands import fit, load_scaling_config, mix, predict_target, sweep
from herd.train.scaling.config import DownstreamSpec, ScalingConfig

__all__ = ["DownstreamSpec", "ScalingConfig", "fit", "load_scaling_config", "mix", "predict_target", "sweep"]
