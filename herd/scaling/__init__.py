"""Scaling laws: isoFLOP sweeps, compute-optimal frontiers, loss and downstream prediction, data-mix experiments.

`herd scaling sweep | fit | predict | mix` (see `herd.scaling.commands`).
"""

from herd.scaling.commands import fit, load_scaling_config, mix, predict_target, sweep
from herd.scaling.config import DownstreamSpec, ScalingConfig

__all__ = ["DownstreamSpec", "ScalingConfig", "fit", "load_scaling_config", "mix", "predict_target", "sweep"]
