"""The FP16 variant of an exported model: half-precision weights and activations, float32 I/O.

Why a separate FP16 ONNX at all: TensorRT 10 builds FP16 engines from the FP32 model with its
``BuilderFlag.FP16`` (weak typing), but TensorRT 11 removed precision flags and is strongly typed,
so there the half precision must be in the graph itself. One FP16 ONNX serves TensorRT 11, TensorRT
10 (with the FP16 flag) and ONNX Runtime; the FP32 model travels alongside in the bundle for a
TensorRT 10 build that prefers its own FP16 layer choices.

Inputs and outputs stay float32 (``keep_io_types``): Cast nodes inside the graph convert at the
edges, so the device feeds the same float32 arrays to every variant and ``reference.npz`` needs no
second dtype.

The converter is ONNX Runtime's own (``onnxruntime.transformers.float16``, shipped in the
onnxruntime wheel), or onnxconverter-common's identical one when that is what is installed. It
blocks ops that need float32 (e.g. Resize scales) and clamps constants into the float16 range. Its
output is not always in topological order, which the onnx checker and TensorRT's parser require,
so the graph is sorted before it is verified.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeprune.errors import ExportError
from edgeprune.export.onnx_export import first_line, verify_onnx


def _converter() -> Callable[..., Any]:
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return convert_float_to_float16  # type: ignore[no-any-return]
    except ImportError:
        pass
    try:
        from onnxconverter_common.float16 import convert_float_to_float16

        return convert_float_to_float16  # type: ignore[no-any-return]
    except ImportError as err:
        from edgeprune.errors import missing

        raise missing("onnxruntime", "host") from err


def topological_sort(graph: Any) -> None:
    """Reorder ``graph.node`` in place so every node comes after the producers of its inputs.

    Kahn's algorithm, stable (ties keep the original order).

    Raises:
        ExportError: the graph has a cycle or a node reads a tensor nothing produces.
    """
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progressed = False
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            missing = sorted({n for node in rest for n in node.input if n not in available})[:3]
            raise ExportError(f"cannot order the FP16 graph: inputs {missing} are never produced")
        pending = rest
    copies = [type(node)() for node in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def convert_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """Write the FP16 variant of the FP32 model ``src`` to ``dst`` and verify it.

    Returns:
        What the conversion did: counts of float16 initializers and of Cast nodes, and the I/O dtype.

    Raises:
        ExportError: the conversion fails, or its result fails the onnx checker.
    """
    import onnx

    convert = _converter()
    try:
        model = convert(onnx.load(str(src)), keep_io_types=True)
        topological_sort(model.graph)
    except ExportError:
        raise
    except Exception as err:  # the converter asserts and raises assorted types
        raise ExportError(f"FP16 conversion of {src} failed: {first_line(err)}") from err
    Path(dst).write_bytes(model.SerializeToString())
    proto = verify_onnx(Path(dst))
    fp16_inits = sum(1 for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16)
    casts = sum(1 for n in proto.graph.node if n.op_type == "Cast")
    io_types = {v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]}
    if io_types != {onnx.TensorProto.FLOAT}:
        raise ExportError("FP16 conversion changed the model's input/output type; expected float32 I/O")
    if fp16_inits == 0:
        raise ExportError("FP16 conversion left no float16 weights: the model would run in FP32")
    return {"float16_initializers": fp16_inits, "cast_nodes": casts, "io_dtype": "float32"}
