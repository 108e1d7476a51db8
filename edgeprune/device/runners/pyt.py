"""PyTorch runner (``pyt``): eager execution on CPU or CUDA, and 2:4 through semi-structured tensors.

On Ampere or newer GPUs, ``torch.sparse.to_sparse_semi_structured`` stores a 2:4 weight as half
its values plus metadata and runs sparse tensor-core GEMMs (cuSPARSELt or CUTLASS). torch applies
it to 2-D weights, so only ``nn.Linear`` layers convert; convolutions stay dense and the runner
records each layer it left alone and why. That split is the honest answer to "what does 2:4 buy
in PyTorch": the kernel-aware theoretical speedup counts only the converted layers.

torch is imported inside the methods, so this module imports on a device without it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edgeprune.device.runners.base import Runner, TensorSpec
from edgeprune.errors import RunnerError, missing


class PytRunner(Runner):
    """Runs a model spec or pruned-model folder with PyTorch.

    Args:
        model: an ``nn.Module``, or a model spec or pruned-model folder that ``loader`` resolves.
        device: ``cpu`` or ``cuda``.
        dtype: ``float32``, or ``float16``/``bfloat16`` (the semi-structured kernels need a half type).
        semi_structured: convert eligible 2:4 ``nn.Linear`` weights to sparse semi-structured tensors.
        input_shape: one sample's shape; required when ``model`` is an ``nn.Module``.
        cuda_graphs: replay the forward as a CUDA graph captured once per input shape. Small models
            at small batches are bound by kernel launches, not by arithmetic; a graph removes the
            launches, so the figures with and without it bracket what the GPU itself can do.
        loader: ``loader(spec) -> (module, input_shape)`` for a ``model`` given by name; the host
            passes :func:`edgeprune.models.spec.module_and_shape`. Injected, not imported, so the
            device package never imports the host's model code.
    """

    def __init__(
        self,
        model: Any,
        device: str = "cpu",
        dtype: str = "float32",
        semi_structured: bool = False,
        input_shape: tuple[int, ...] | None = None,
        cuda_graphs: bool = False,
        loader: Callable[[str], tuple[Any, tuple[int, ...]]] | None = None,
    ) -> None:
        super().__init__("pyt")
        self.source, self.device, self.dtype = model, device, dtype
        self.input_shape = input_shape
        self.loader = loader
        self.settings = {
            "device": device,
            "dtype": dtype,
            "semi_structured": semi_structured,
            "cuda_graphs": cuda_graphs,
            "timer": "host perf_counter; cuda synchronize after each call",
        }
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}
        self.converted: list[str] = []
        self.left_dense: dict[str, str] = {}
        self._model: Any = None
        self._torch: Any = None

    def _activate_impl(self) -> None:
        try:
            import torch
        except ImportError as err:
            raise missing("torch", "host") from err
        self._torch = torch
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RunnerError("pyt: CUDA was requested but torch sees no GPU")
        if self.settings["cuda_graphs"] and not self.device.startswith("cuda"):
            raise RunnerError("pyt: cuda_graphs needs device='cuda'")
        if isinstance(self.source, torch.nn.Module):
            # A copy: moving, casting and converting weights must not change the caller's model.
            model = copy.deepcopy(self.source)
            if self.input_shape is None:
                raise RunnerError("pyt: pass input_shape when giving an nn.Module")
        else:
            if self.loader is None:
                raise RunnerError(
                    "pyt: a model given by name needs a loader (edgeprune.models.spec.module_and_shape), "
                    "or pass the nn.Module itself"
                )
            model, self.input_shape = self.loader(str(self.source))
        dtype = getattr(torch, self.dtype)
        self._model = model.eval().to(device=self.device, dtype=dtype)
        self.settings["torch_version"] = torch.__version__
        if self.device.startswith("cuda"):
            self.settings["gpu"] = torch.cuda.get_device_name()
            self.settings["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        if self.settings["semi_structured"]:
            self._to_semi_structured()

    def _to_semi_structured(self) -> None:
        torch = self._torch
        from edgeprune.nm import follows_nm

        if not self.device.startswith("cuda") or torch.cuda.get_device_capability()[0] < 8:
            raise RunnerError("pyt: semi-structured 2:4 needs an Ampere-or-newer CUDA GPU")
        if self.dtype == "float32":
            raise RunnerError("pyt: semi-structured 2:4 kernels need float16 or bfloat16 (pass dtype)")
        from torch.sparse import to_sparse_semi_structured

        for name, module in self._model.named_modules():
            if isinstance(module, torch.nn.Conv2d):
                self.left_dense[name] = "convolution (torch converts 2-D weights only)"
            if not isinstance(module, torch.nn.Linear):
                continue
            if not follows_nm((module.weight.detach() != 0).cpu().numpy()):
                self.left_dense[name] = "weights do not follow the 2:4 pattern"
                continue
            try:
                module.weight = torch.nn.Parameter(to_sparse_semi_structured(module.weight.detach()))
                self.converted.append(name)
            except (RuntimeError, ValueError) as err:  # shape limits of the sparse kernels
                self.left_dense[name] = f"not converted: {str(err).splitlines()[0]}"
        self.settings["converted_layers"] = list(self.converted)
        self.settings["left_dense"] = dict(self.left_dense)

    def _deactivate_impl(self) -> None:
        self._model = None
        self._graphs.clear()

    def _input_specs_impl(self) -> list[TensorSpec]:
        assert self.input_shape is not None
        return [TensorSpec("input", (None, *self.input_shape), "float32")]

    def _forward(self, x: Any) -> Any:
        """One forward pass on a device tensor, through a CUDA graph when asked for."""
        if not self.settings["cuda_graphs"]:
            return self._model(x)
        torch = self._torch
        key = tuple(x.shape)
        if key not in self._graphs:
            static_in = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up off the default stream, as capture requires
                for _ in range(3):
                    self._model(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._model(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(feeds["input"])).to(self.device, getattr(torch, self.dtype))
        with torch.inference_mode():
            y = self._forward(x)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return {"logits": y.float().cpu().numpy()}

    def time_gpu_ms(self, feeds: Mapping[str, np.ndarray], iterations: int = 100, pipelined: int = 1) -> list[float]:
        """GPU time per call from CUDA events, inputs already on the device (no copies timed).

        Args:
            feeds: the inputs.
            iterations: samples to return.
            pipelined: forwards issued back to back between one pair of events, the sample being
                their mean. With 1, host time spent launching kernels shows up as idle GPU time
                inside the window (latency as a caller waiting on each result sees it); with more,
                launches overlap earlier kernels (the throughput a busy queue gets).
        """
        torch = self._torch
        self._require_active()
        if not self.device.startswith("cuda"):
            raise RunnerError("pyt: GPU timing needs device='cuda'")
        if pipelined < 1:
            raise RunnerError(f"pyt: pipelined must be at least 1, got {pipelined}")
        x = torch.from_numpy(np.ascontiguousarray(feeds["input"])).to(self.device, getattr(torch, self.dtype))
        times = []
        with torch.inference_mode():
            for _ in range(iterations):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(pipelined):
                    self._forward(x)
                end.record()
                end.synchronize()
                times.append(float(start.elapsed_time(end)) / pipelined)
        return times
