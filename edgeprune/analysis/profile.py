"""The measured side: per-layer time from a runtime's profiler, attributed to Conv/Gemm layers.

ONNX Runtime (CPU) writes a Chrome-trace JSON when ``SessionOptions.enable_profiling`` is set; each
executed kernel is an event with ``cat == "Node"``, ``name == "<node>_kernel_time"``, ``dur`` in
microseconds and ``args.op_name``. After graph optimization the executed nodes are not the exported
ones: ``Conv + Relu`` becomes one fused node and the NCHWc layout pass renames nodes after the
tensor they produce (``/layer1/Relu_output_0_nchwc``). So attribution walks the *exported* graph:
each fused node's name is resolved to the tensor or node it came from, then back through
activations to the Conv/Gemm/MatMul that owns it, and that node's name (``/layer1/conv1/Conv``,
as the TorchScript exporter writes it) gives the module path (``layer1.conv1``). Kernels that
belong to no Conv/Gemm (pooling, residual adds, layout reorders) are pooled as ``(other ops)``.

TensorRT's per-layer profile (``trtexec --exportProfile``, parsed by
:func:`edgeprune.device.engine.logs.parse_layer_profile`) names fused layers by their ONNX nodes joined
with ``+`` (and ``||`` for horizontally merged layers); :func:`attribute_trt_profile` maps those.

Timings from a profiled run carry the profiler's per-kernel overhead, so they are used as *shares*
and *ratios* between a baseline and a variant profiled the same way, interleaved, never as latency.

This module imports neither torch nor onnxruntime at import time: the device side can use the
TensorRT attribution without either installed.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.errors import BundleError, missing

if TYPE_CHECKING:
    from edgeprune.bundle import Manifest

OTHER = "(other ops)"
MAC_OPS = frozenset(
    {
        "Conv",
        "Gemm",
        "MatMul",
        "FusedConv",
        "FusedGemm",
        "NchwcConv",
        "QLinearConv",
        "ConvInteger",
        "MatMulInteger",
        "QLinearMatMul",
        "FusedMatMul",
    }
)
# Ops an optimizer fuses into the preceding Conv/Gemm; their kernels belong to that layer.
ACTIVATIONS = frozenset(
    {
        "Relu",
        "Clip",
        "LeakyRelu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "BatchNormalization",
        "Identity",
        "Elu",
        "Selu",
        "Gelu",
        "Softplus",
    }
)
_SUFFIXES = ("_kernel_time", "_nchwc", "_fence_before", "_fence_after")


def module_path(node_name: str) -> str | None:
    """Module path of an exported node: ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``.

    The TorchScript exporter writes one scope per module: the attribute name (``conv1``), or for
    a child of a container the container's name and the child's (``layer1.0``, ``shortcut.0``).
    The second form repeats the previous scope, so only its tail is appended. Names without
    scopes (``Conv_0``) have no module path: None.
    """
    if not node_name.startswith("/"):
        return None
    parts = [p for p in node_name.strip("/").split("/") if p][:-1]
    path, previous = "", ""
    for part in parts:
        if previous and part.startswith(previous + "."):
            path += part[len(previous) :]
        else:
            path = f"{path}.{part}" if path else part
        previous = part
    return path or None


@dataclass(frozen=True)
class LayerProfile:
    """Measured time of one layer (or of ``(other ops)``) per run.

    Attributes:
        name: module path, the runtime's node name where no module path exists, or ``(other ops)``.
        time_ms: median over the profiled runs of the summed kernel time of the layer per run.
        kernels: the runtime's kernel names attributed to it.
        op_types: their op types.
    """

    name: str
    time_ms: float
    kernels: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    """Per-layer times of one model and how they were taken."""

    layers: list[LayerProfile]
    runs: int
    batch_size: int | None
    source: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def total_ms(self) -> float:
        return sum(layer.time_ms for layer in self.layers)

    def by_name(self) -> dict[str, LayerProfile]:
        return {layer.name: layer for layer in self.layers}

    def time_shares(self) -> dict[str, float]:
        """Each layer's share of the summed kernel time (``(other ops)`` included)."""
        total = self.total_ms
        return {layer.name: (layer.time_ms / total if total else 0.0) for layer in self.layers}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_ms"] = self.total_ms
        data["time_shares"] = self.time_shares()
        return data


# --- ONNX graph: who owns each node and tensor --------------------------------------------------------


@dataclass(frozen=True)
class GraphIndex:
    """What attribution needs from the exported ONNX graph.

    Attributes:
        owner: exported node name or tensor name -> name of the Conv/Gemm/MatMul node it belongs to.
        weight_shape: Conv/Gemm/MatMul node name -> its weight initializer's shape, if constant.
        macs_per_sample: Conv/Gemm/MatMul node name -> MACs for one sample, from inferred shapes.
        order: Conv/Gemm/MatMul node names in graph order.
    """

    owner: dict[str, str]
    weight_shape: dict[str, tuple[int, ...]]
    macs_per_sample: dict[str, int]
    order: list[str]


def _dims(value_info: Any) -> list[int | None]:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") else None)
    return dims


def index_graph(model: Any) -> GraphIndex:
    """Build the :class:`GraphIndex` of an ``onnx.ModelProto``.

    An activation's owner is the Conv/Gemm that feeds it; an elementwise op with several inputs
    (a residual ``Add``) belongs to the input produced directly by a Conv/Gemm, if exactly one is.
    """
    graph = model.graph
    inits = {init.name: tuple(int(d) for d in init.dims) for init in graph.initializer}
    shapes: dict[str, list[int | None]] = {}
    for vi in [*graph.value_info, *graph.output, *graph.input]:
        shapes[vi.name] = _dims(vi)
    producer: dict[str, Any] = {}
    for node in graph.node:
        for out in node.output:
            producer[out] = node
    owner: dict[str, str] = {}
    weight_shape: dict[str, tuple[int, ...]] = {}
    macs: dict[str, int] = {}
    order: list[str] = []
    for node in graph.node:
        op = node.op_type
        if op in MAC_OPS:
            name = node.name
            order.append(name)
            owner[name] = name
            for out in node.output:
                owner[out] = name
            if len(node.input) > 1 and node.input[1] in inits:
                weight_shape[name] = inits[node.input[1]]
            out_shape = shapes.get(node.output[0]) if node.output else None
            weight = weight_shape.get(name)
            if out_shape and weight and all(isinstance(d, int) for d in out_shape[1:]):
                elements = math.prod(int(d) for d in out_shape[1:] if d is not None)
                if op in ("Conv", "FusedConv", "QLinearConv", "ConvInteger"):
                    macs[name] = elements * math.prod(weight[1:])
                else:  # Gemm (weight [N, K] or [K, N]) and MatMul ([K, N])
                    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
                    k = weight[1] if (op == "Gemm" and trans_b) else weight[0]
                    macs[name] = elements * k
            continue
        direct = [
            owner[i]
            for i in node.input
            if i in owner and producer.get(i) is not None and producer[i].op_type in MAC_OPS
        ]
        owned = list(dict.fromkeys(owner[i] for i in node.input if i in owner))
        chosen: str | None = None
        if op in ACTIVATIONS and len(owned) == 1:
            chosen = owned[0]
        elif len(set(direct)) == 1:
            chosen = direct[0]
        if chosen is not None:
            owner[node.name] = chosen
            for out in node.output:
                owner[out] = chosen
    return GraphIndex(owner, weight_shape, macs, order)


def _resolve(kernel_name: str, index: GraphIndex) -> str | None:
    """The owning Conv/Gemm node of a runtime kernel name, or None."""
    name = kernel_name
    if name.lower().startswith("fused "):  # Gemm + activation fusion: "fused /fc/Gemm_kernel_time"
        name = name[len("fused ") :]
    for _ in range(3):
        if name in index.owner:
            return index.owner[name]
        stripped = name
        for suffix in _SUFFIXES:
            if stripped.endswith(suffix):
                stripped = stripped[: -len(suffix)]
        stripped = re.sub(r"_token_\d+$", "", stripped)
        if stripped == name:
            break
        name = stripped
    return index.owner.get(name)


def _event_weight_shape(event: Mapping[str, Any]) -> tuple[int, ...] | None:
    shapes = event.get("args", {}).get("input_type_shape") or []
    if len(shapes) > 1 and isinstance(shapes[1], dict):
        dims = next(iter(shapes[1].values()), None)
        if isinstance(dims, list) and len(dims) >= 2:
            return tuple(int(d) for d in dims)
    return None


def attribute_ort_events(
    events: Sequence[Mapping[str, Any]],
    index: GraphIndex,
    warmup_runs: int = 0,
    known_layers: Iterable[str] | None = None,
) -> tuple[list[LayerProfile], int]:
    """Attribute ONNX Runtime node events to layers; returns the layers and the runs counted.

    Args:
        events: the profiler's JSON list.
        index: from :func:`index_graph` on the exported (not optimized) model.
        warmup_runs: the first occurrences of every kernel to drop (allocation, first-touch).
        known_layers: module paths expected (e.g. the manifest's layers); a resolved node whose
            module path is not among them keeps the node name.

    Each kernel's n-th occurrence belongs to run n; per layer and run the kernel times are summed,
    and the layer's time is the median over runs.
    """
    known = set(known_layers) if known_layers is not None else None
    occurrence: dict[str, int] = defaultdict(int)
    per_run: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    kernels: dict[str, list[str]] = defaultdict(list)
    ops: dict[str, list[str]] = defaultdict(list)
    claimed_by_shape: dict[str, str] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        kernel = str(event["name"])
        run = occurrence[kernel]
        occurrence[kernel] += 1
        if run < warmup_runs:
            continue
        op = str(event.get("args", {}).get("op_name", ""))
        node = _resolve(kernel, index)
        if node is None and op in MAC_OPS:
            node = claimed_by_shape.get(kernel) or _match_by_shape(event, index, set(claimed_by_shape.values()))
            if node is not None:
                claimed_by_shape[kernel] = node
        if node is None:
            layer = OTHER
        else:
            path = module_path(node)
            layer = path if path is not None and (known is None or path in known) else node
        per_run[layer][run - warmup_runs] += float(event.get("dur", 0.0)) / 1000.0
        if kernel not in kernels[layer]:
            kernels[layer].append(kernel)
            ops[layer].append(op)
    runs = max((max(r) + 1 for r in per_run.values() if r), default=0)
    layers = []
    for layer, times in per_run.items():
        series = [times.get(i, 0.0) for i in range(runs)]
        layers.append(
            LayerProfile(layer, statistics.median(series) if series else 0.0, tuple(kernels[layer]), tuple(ops[layer]))
        )
    layers.sort(key=lambda lp: (lp.name == OTHER,))
    return layers, runs


def _match_by_shape(event: Mapping[str, Any], index: GraphIndex, taken: set[str]) -> str | None:
    shape = _event_weight_shape(event)
    if shape is None:
        return None
    for name in index.order:
        if name not in taken and index.weight_shape.get(name) == shape:
            return name
    return None


# --- running ONNX Runtime with the profiler -------------------------------------------------------------


def _session(model_path: Path, prefix: Path, threads: int) -> Any:
    from edgeprune.device.runners.ort import ort_session

    return ort_session(model_path, threads=threads, profile_prefix=prefix)


def _load_index(model_path: Path) -> GraphIndex:
    try:
        import onnx
    except ImportError as err:
        raise missing("onnx", "host") from err
    return index_graph(onnx.load(str(model_path), load_external_data=False))


def profile_models(
    model_paths: Mapping[str, Path],
    feeds: Mapping[str, Mapping[str, Any]],
    runs: int = 100,
    warmup_runs: int = 5,
    intra_op_threads: int = 1,
    chunk: int = 10,
    known_layers: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, Profile]:
    """Profile several ONNX models with ONNX Runtime (CPU), interleaved in chunks of runs.

    Interleaving spreads a shared machine's slow moments over every model alike, so per-layer
    ratios between them stay fair.

    Args:
        model_paths: label -> .onnx file.
        feeds: label -> input name -> array.
        runs: profiled runs counted per model (after ``warmup_runs``).
        warmup_runs: runs profiled but dropped.
        intra_op_threads: ONNX Runtime threads (1 keeps small-layer timings steady).
        chunk: runs of one model before switching to the next.
        known_layers: label -> module paths expected, see :func:`attribute_ort_events`.
    """
    indexes = {label: _load_index(Path(path)) for label, path in model_paths.items()}
    profiles: dict[str, Profile] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {
            label: _session(Path(path), Path(tmp) / f"p{i}", intra_op_threads)
            for i, (label, path) in enumerate(model_paths.items())
        }
        total = warmup_runs + runs
        done = dict.fromkeys(sessions, 0)
        while any(n < total for n in done.values()):
            for label, session in sessions.items():
                for _ in range(min(chunk, total - done[label])):
                    session.run(None, dict(feeds[label]))
                    done[label] += 1
        for label, session in sessions.items():
            events = json.loads(Path(session.end_profiling()).read_text())
            layers, counted = attribute_ort_events(events, indexes[label], warmup_runs, (known_layers or {}).get(label))
            batch = None
            first = next(iter(feeds[label].values()), None)
            if first is not None and getattr(first, "shape", None):
                batch = int(first.shape[0])
            profiles[label] = Profile(
                layers,
                counted,
                batch,
                "onnxruntime profiler (CPU)",
                {
                    "intra_op_num_threads": intra_op_threads,
                    "warmup_runs": warmup_runs,
                    "interleaved_chunk": chunk,
                    "graph_optimization_level": "all",
                },
            )
    return profiles


def _bundle_layers(manifest: Manifest) -> dict[str, dict[str, Any]]:
    return {
        str(rec["name"]): dict(rec)
        for rec in manifest.sparsity.get("layers", [])
        if isinstance(rec, dict) and "name" in rec
    }


def profile_bundle(bundle_dir: Path, batch_size: int = 1, runs: int = 100, intra_op_threads: int = 1) -> Profile:
    """Profile one bundle's model.onnx on ONNX Runtime (CPU) with random inputs of ``batch_size``."""
    from edgeprune import bundle as bundle_mod
    from edgeprune.device.measure.bench import make_feeds

    manifest = bundle_mod.read_manifest(Path(bundle_dir))
    path = Path(bundle_dir) / bundle_mod.MODEL_FILE
    return profile_models(
        {"m": path},
        {"m": make_feeds(manifest, batch_size)},
        runs,
        intra_op_threads=intra_op_threads,
        known_layers={"m": _bundle_layers(manifest)},
    )["m"]


# --- TensorRT layer profiles ----------------------------------------------------------------------------

_TRT_MAC = re.compile(r"(^|/)(Conv|Gemm|MatMul|ConvTranspose)(_\d+)?$")
_PWN = re.compile(r"^PWN\((.*)\)$")


def _trt_components(name: str) -> list[str]:
    parts: list[str] = []
    for piece in name.split(" + "):
        piece = piece.strip()
        while True:
            match = _PWN.match(piece)
            if not match:
                break
            piece = match.group(1)
        parts.extend(p.strip() for p in piece.split(",") if p.strip())
    return parts


def attribute_trt_profile(layer_times: Sequence[Any], known_layers: Iterable[str] | None = None) -> Profile:
    """Attribute TensorRT per-layer times (``trtlog.LayerTime`` items) to Conv/Gemm layers.

    A fused layer ``/layer1/conv1/Conv + /layer1/Relu`` belongs to ``layer1.conv1``; horizontally
    merged layers (``A || B``) split their time equally between their parts (TensorRT reports
    only the sum); reformatting copies, pure activations and copies are ``(other ops)``. Median
    time is used where the profile has it, else the average.
    """
    known = set(known_layers) if known_layers is not None else None
    times: dict[str, float] = defaultdict(float)
    kernels: dict[str, list[str]] = defaultdict(list)
    for entry in layer_times:
        value = entry.median_ms if entry.median_ms is not None else entry.average_ms
        if value is None:
            continue
        parts = [p.strip() for p in entry.name.split(" || ")] if " || " in entry.name else [entry.name]
        share = float(value) / len(parts)
        for part in parts:
            layer = OTHER
            if not part.startswith("Reformatting CopyNode"):
                macs = [c for c in _trt_components(part) if _TRT_MAC.search(c)]
                if macs:
                    path = module_path(macs[0])
                    layer = path if path is not None and (known is None or path in known) else macs[0]
            times[layer] += share
            if entry.name not in kernels[layer]:
                kernels[layer].append(entry.name)
    layers = [LayerProfile(name, t, tuple(kernels[name])) for name, t in times.items()]
    layers.sort(key=lambda lp: (lp.name == OTHER,))
    return Profile(layers, runs=0, batch_size=None, source="TensorRT layer profile (trtexec --exportProfile)")


# --- baseline vs variant: which layers reached their theoretical speedup --------------------------------


def _layer_macs(index: GraphIndex, known: Iterable[str] | None) -> dict[str, int]:
    known_set = set(known) if known is not None else None
    out: dict[str, int] = {}
    for node, macs in index.macs_per_sample.items():
        path = module_path(node)
        name = path if path is not None and (known_set is None or path in known_set) else node
        out[name] = out.get(name, 0) + macs
    return out


def gap_rows(
    baseline: Profile,
    variant: Profile,
    baseline_macs: Mapping[str, float],
    variant_macs: Mapping[str, float],
    variant_density: Mapping[str, float] | None = None,
    *,
    kernel_aware: Mapping[str, float] | None = None,
    tolerance: float = 0.1,
    overhead_ms: float = 0.02,
    variant_channels: Mapping[str, tuple[int, int]] | None = None,
    input_channels: int | None = None,
    baseline_channels: Mapping[str, tuple[int, int]] | None = None,
) -> list[dict[str, Any]]:
    """Per-layer measured vs theoretical speedup, and whether each layer reached its theory.

    Args:
        baseline, variant: profiles taken the same way (same runtime, threads, batch).
        baseline_macs, variant_macs: dense MACs per layer.
        variant_density: non-zero fraction of each variant layer's weights (1.0 if absent).
        kernel_aware: per-layer kernel-aware speedup on the profiled runtime; default: the
            physical MAC ratio (what ONNX Runtime's CPU kernels can get: no sparse kernels).
        tolerance: a layer "reached" its theory if measured >= theoretical x (1 - tolerance).
        overhead_ms: a variant layer faster than this is called overhead-dominated.
        variant_channels: (in, out) channels per variant layer, to name misaligned widths.
        input_channels: the network input's channels (an image's 1 or 3), never called misaligned.
        baseline_channels: (in, out) channels per baseline layer: only widths pruning changed are
            called misaligned (a 10-class head is the task's, not the pruning's).

    Returns:
        Rows ``{"name", "time_share", "baseline_ms", "variant_ms", "theoretical_speedup",
        "kernel_aware_speedup", "measured_speedup", "reached", "reason"}``, largest share first,
        ``(other ops)`` last; ``theoretical_speedup`` is the layer's MAC ratio (an estimate).
    """
    shares = baseline.time_shares()
    base_layers = baseline.by_name()
    var_layers = variant.by_name()
    density = variant_density or {}
    rows: list[dict[str, Any]] = []
    for name, base in base_layers.items():
        var = var_layers.get(name)
        var_ms = var.time_ms if var is not None else 0.0
        measured = base.time_ms / var_ms if var_ms > 0 else math.inf
        if name == OTHER:
            theoretical = aware = 1.0
        else:
            b_macs = float(baseline_macs.get(name, 0.0))
            v_macs = float(variant_macs.get(name, 0.0))
            eff = v_macs * float(density.get(name, 1.0))
            theoretical = b_macs / eff if eff > 0 else (1.0 if b_macs == 0 else math.inf)
            physical = b_macs / v_macs if v_macs > 0 else (1.0 if b_macs == 0 else math.inf)
            aware = float((kernel_aware or {}).get(name, physical))
        reached = measured >= theoretical * (1.0 - tolerance)
        rows.append(
            {
                "name": name,
                "time_share": shares.get(name, 0.0),
                "baseline_ms": base.time_ms,
                "variant_ms": var_ms,
                "theoretical_speedup": None if math.isinf(theoretical) else theoretical,
                "kernel_aware_speedup": None if math.isinf(aware) else aware,
                "measured_speedup": None if math.isinf(measured) else measured,
                "reached": bool(reached),
                "reason": _reason(
                    name,
                    theoretical,
                    aware,
                    measured,
                    var_ms,
                    tolerance,
                    overhead_ms,
                    (variant_channels or {}).get(name),
                    input_channels,
                    (baseline_channels or {}).get(name),
                ),
            }
        )
    rows.sort(key=lambda r: (r["name"] == OTHER, -float(r["time_share"])))
    return rows


def _reason(
    name: str,
    theoretical: float,
    aware: float,
    measured: float,
    var_ms: float,
    tolerance: float,
    overhead_ms: float,
    channels: tuple[int, int] | None,
    input_channels: int | None = None,
    baseline_channels: tuple[int, int] | None = None,
) -> str:
    low = 1.0 - tolerance
    if measured >= theoretical * low:
        return "reached"
    if name == OTHER:
        return "ops other than Conv/Gemm (pooling, adds, layout reorders) changed"
    if aware < theoretical * low:
        return (
            "zeros are still multiplied: no kernel for this sparsity pattern in the runtime "
            f"(kernel-aware {aware:.2f}x)"
        )
    notes = []
    changed = theoretical > 1.0 + tolerance
    if not changed:
        notes.append(f"unchanged on paper ({theoretical:.2f}x) but measured {measured:.2f}x")
    if changed and channels is not None:
        before = baseline_channels or (None, None)
        odd = [c for c, b in zip(channels, before) if c % 8 and c != input_channels and c != b]
        if odd:
            notes.append(f"channels {channels[0]}->{channels[1]} not multiples of 8 (kernels pad to blocks of 8)")
    if var_ms < overhead_ms:
        notes.append(f"{var_ms * 1000:.0f} us per call: fixed per-kernel overhead dominates, and timing noise")
    if changed and len(notes) == 0:
        notes.append(
            "the smaller layer did not speed up in proportion: lower arithmetic intensity or kernel "
            "efficiency at this width (compare the layer's roofline figure)"
        )
    return "; ".join(notes)


def explain_gap(
    baseline_bundle_dir: Path,
    variant_bundle_dir: Path,
    batch_size: int = 1,
    runs: int = 100,
    *,
    intra_op_threads: int = 1,
    tolerance: float = 0.1,
) -> list[dict[str, Any]]:
    """Profile a baseline and a variant bundle (ONNX Runtime CPU, interleaved) and explain the gap.

    Per-layer MACs come from the exported graphs' inferred shapes and densities from the variant
    manifest's sparsity records, so no torch is needed. See :func:`gap_rows` for the rows.

    Raises:
        BundleError: a folder is not a valid bundle.
    """
    from edgeprune import bundle as bundle_mod
    from edgeprune.device.measure.bench import make_feeds

    paths = {"baseline": Path(baseline_bundle_dir), "variant": Path(variant_bundle_dir)}
    manifests = {label: bundle_mod.read_manifest(path) for label, path in paths.items()}
    model_paths = {label: path / bundle_mod.MODEL_FILE for label, path in paths.items()}
    for label, path in model_paths.items():
        if not path.is_file():
            raise BundleError(f"{paths[label]} has no {bundle_mod.MODEL_FILE}")
    records = {label: _bundle_layers(m) for label, m in manifests.items()}
    profiles = profile_models(
        model_paths,
        {label: make_feeds(m, batch_size) for label, m in manifests.items()},
        runs,
        intra_op_threads=intra_op_threads,
        known_layers=records,
    )
    indexes = {label: _load_index(path) for label, path in model_paths.items()}
    macs = {label: _layer_macs(indexes[label], records[label]) for label in paths}
    density = {name: float(rec.get("density", 1.0)) for name, rec in records["variant"].items()}
    channels = _channels(indexes["variant"], records["variant"])
    return gap_rows(
        profiles["baseline"],
        profiles["variant"],
        macs["baseline"],
        macs["variant"],
        density,
        tolerance=tolerance,
        variant_channels=channels,
        input_channels=_input_channels(manifests["variant"]),
        baseline_channels=_channels(indexes["baseline"], records["baseline"]),
    )


def _input_channels(manifest: Manifest) -> int | None:
    shape = manifest.inputs[0].shape
    return int(shape[1]) if len(shape) > 1 and isinstance(shape[1], int) else None


def _channels(index: GraphIndex, known: Iterable[str]) -> dict[str, tuple[int, int]]:
    known_set = set(known)
    out = {}
    for node, shape in index.weight_shape.items():
        path = module_path(node)
        if path is not None and (not known_set or path in known_set) and len(shape) >= 2:
            # Conv [K, C/g, kh, kw] and Gemm transB [N, K]: output first, input second.
            out[path] = (int(shape[1]), int(shape[0]))
    return out
