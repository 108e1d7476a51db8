"""ONNX Runtime runner: the CPU reference everywhere, and the CUDA provider where one exists.

ONNX Runtime executes zeroed weights like any others (a maintainer: "No it doesn't" speed up
sparse models), so on this runner unstructured and 2:4 sparsity measure about 1.0x; only
physically smaller (channel-pruned) models get faster. That is the point the demo makes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.device.runners.base import Runner, TensorSpec
from edgeprune.errors import RunnerError, missing

# ONNX element type names as ONNX Runtime reports them -> numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}


def ort_session(
    model_path: Path,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    *,
    threads: int = 0,
    spinning: bool | None = None,
    exact: bool = False,
    profile_prefix: Path | None = None,
    extra: str = "device",
) -> Any:
    """The one place an ONNX Runtime session is made (runner, packager's parity runs, profiler).

    Args:
        model_path: the .onnx file.
        providers: in order of preference; those not installed are dropped, none left is an error.
        threads: intra-op threads (0: ONNX Runtime's default, one per physical core).
        spinning: allow idle threads to spin (None: ONNX Runtime's default).
        exact: disable every graph optimization, so each op runs as written in the file.
        profile_prefix: turn on ONNX Runtime's profiler, writing its JSON under this prefix.
        extra: the edgeprune extra that provides onnxruntime, for the install hint.

    Raises:
        MissingDependencyError: onnxruntime is not installed.
        RunnerError: no requested provider is available, or the file cannot be loaded.
    """
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise missing("onnxruntime", extra) from err
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if exact:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    available = set(ort.get_available_providers())
    chosen = [p for p in providers if p in available]
    if not chosen:
        raise RunnerError(f"none of the providers {list(providers)} is available (have {sorted(available)})")
    try:
        return ort.InferenceSession(str(model_path), options, providers=chosen)
    except Exception as err:  # ORT raises its own untyped exceptions for invalid models
        raise RunnerError(f"ONNX Runtime cannot load {model_path}: {err}") from err


class OrtRunner(Runner):
    """Runs an ONNX file with ONNX Runtime.

    Args:
        model_path: the .onnx file.
        providers: execution providers in order of preference; default CPU only, so that results
            do not silently change with what happens to be installed.
        intra_op_threads: 0 lets ONNX Runtime use one thread per physical core.
        allow_spinning: ORT spins idle threads by default; that burns power, so energy runs may
            want it off. Recorded in ``settings`` either way.
    """

    def __init__(
        self,
        model_path: Path,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
        intra_op_threads: int = 0,
        allow_spinning: bool = True,
    ) -> None:
        super().__init__("onnxruntime")
        self.model_path = Path(model_path)
        self.providers = providers
        self.settings = {
            "providers": list(providers),
            "intra_op_num_threads": intra_op_threads,
            "allow_spinning": allow_spinning,
            "execution_mode": "sequential",
            "graph_optimization_level": "all",
        }
        self._session: Any = None
        self._output_names: list[str] = []

    def _activate_impl(self) -> None:
        if not self.model_path.is_file():
            raise RunnerError(f"{self.model_path} does not exist")
        self._session = ort_session(
            self.model_path,
            self.providers,
            threads=int(self.settings["intra_op_num_threads"]),
            spinning=bool(self.settings["allow_spinning"]),
        )
        import onnxruntime as ort  # loaded by ort_session

        self.settings["providers"] = list(self._session.get_providers())
        self.settings["onnxruntime_version"] = ort.__version__
        self._output_names = [o.name for o in self._session.get_outputs()]

    def _deactivate_impl(self) -> None:
        self._session = None

    def _input_specs_impl(self) -> list[TensorSpec]:
        return [
            TensorSpec(i.name, tuple(d if isinstance(d, int) else None for d in i.shape), _ORT_TYPES.get(i.type, ""))
            for i in self._session.get_inputs()
        ]

    def _infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._output_names, dict(feeds))
        return dict(zip(self._output_names, values))
