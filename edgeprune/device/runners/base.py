"""The runner contract, after Polygraphy: public methods check state, subclasses fill in hooks.

A runner owns one loaded model on one backend. ``activate()`` loads it (the expensive part, never
timed), ``infer()`` runs one batch, ``deactivate()`` frees it. Subclasses implement only the
``_*_impl`` hooks, so state checks and input validation live in one place::

    with OrtRunner(Path("bundle/model.onnx")) as runner:
        outputs = runner.infer({"input": batch})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune.errors import RunnerError


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None or a string for a dynamic dimension) and numpy dtype name of one tensor."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str


class Runner:
    """Base of every inference backend.

    Attributes:
        name: a short label used in results and error messages.
        settings: the options that change the numbers (threads, spinning, provider), recorded in
            every result so two runs can be compared on equal terms.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_active = False
        self.settings: dict[str, Any] = {}
        self._specs: list[TensorSpec] | None = None
        self._checked: set[tuple[tuple[str, tuple[int, ...], str], ...]] = set()

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        """Load the model; raises RunnerError if already active."""
        if self.is_active:
            raise RunnerError(f"{self.name}: already active")
        self._activate_impl()
        self.is_active = True
        # Read once: asking the runtime for its inputs on every call costs time inside the timed loop.
        self._specs = self._input_specs_impl()

    def deactivate(self) -> None:
        """Free the model; harmless if not active."""
        if self.is_active:
            self._deactivate_impl()
            self.is_active = False
            self._specs = None
            self._checked.clear()

    def input_specs(self) -> list[TensorSpec]:
        """The model's inputs, available once active."""
        self._require_active()
        assert self._specs is not None
        return list(self._specs)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch and return the outputs by name.

        Raises:
            RunnerError: not active, or an input is missing, extra, or of the wrong rank or dtype.
        """
        self._require_active()
        assert self._specs is not None
        # A timed loop feeds the same shapes every call: validate each signature once, not per call
        # (the full check costs ~10 us, a few percent of a sub-millisecond inference).
        signature = tuple((name, array.shape, array.dtype.str) for name, array in feeds.items())
        if signature not in self._checked:
            check_inputs(feeds, self._specs, self.name)
            self._checked.add(signature)
        return self._infer_impl(feeds)

    def _require_active(self) -> None:
        if not self.is_active:
            raise RunnerError(f"{self.name}: call activate() or use a `with` block first")

    def _activate_impl(self) -> None:
        raise NotImplementedError

    def _deactivate_impl(self) -> None:
        raise NotImplementedError

    def _input_specs_impl(self) -> list[TensorSpec]:
        raise NotImplementedError

    def _infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


def check_inputs(feeds: Mapping[str, np.ndarray], specs: list[TensorSpec], runner: str) -> None:
    """Validate feeds against specs so every backend fails the same clear way.

    Raises:
        RunnerError: naming the offending input.
    """
    expected = {spec.name: spec for spec in specs}
    missing = sorted(set(expected) - set(feeds))
    extra = sorted(set(feeds) - set(expected))
    if missing or extra:
        raise RunnerError(f"{runner}: inputs do not match the model (missing {missing}, unexpected {extra})")
    for name, array in feeds.items():
        spec = expected[name]
        if array.ndim != len(spec.shape):
            raise RunnerError(f"{runner}: input {name} has rank {array.ndim}, the model expects {len(spec.shape)}")
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape)):
            if isinstance(want, int) and got != want:
                raise RunnerError(f"{runner}: input {name} axis {axis} is {got}, the model expects {want}")
        if spec.dtype and np.dtype(array.dtype).name != spec.dtype:
            raise RunnerError(f"{runner}: input {name} is {array.dtype}, the model expects {spec.dtype}")
