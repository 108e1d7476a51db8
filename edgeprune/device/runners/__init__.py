"""Inference runners behind one interface (see :mod:`edgeprune.device.runners.base`)."""

from edgeprune.device.runners.base import Runner, TensorSpec, check_inputs

__all__ = ["Runner", "TensorSpec", "check_inputs"]
