"""The exact, per-image rewrite of dynamic int8 quantization, on a one-MatMul graph.

The expected values come from a plain numpy implementation of ONNX's
``DynamicQuantizeLinear`` applied to each row alone, then an int64 matrix product.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from deeptrust.processors.backbones.exact_int8 import UnsupportedGraphError, exact_per_image

K, N = 64, 8


def dynamic_matmul(weights: np.ndarray, weight_zero: np.ndarray) -> onnx.ModelProto:
    """x [B, K] float -> DynamicQuantizeLinear -> MatMulInteger (int8 weights) -> float."""
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["y_int"]),
        helper.make_node("Cast", ["y_int"], ["y_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xs", "ws"], ["scales"]),
        helper.make_node("Mul", ["y_float", "scales"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "dynamic_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N])],
        [
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(weight_zero, "wz"),
            numpy_helper.from_array(np.full(N, 0.01, np.float32), "ws"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=7)


def quantize_row(row: np.ndarray) -> tuple[np.ndarray, float, int]:
    """ONNX's DynamicQuantizeLinear on one row, written out in numpy."""
    low, high = min(0.0, float(row.min())), max(0.0, float(row.max()))
    scale = np.float32((high - low) / 255.0)
    zero = int(np.clip(np.round(np.float32(0.0) - np.float32(low) / scale), 0, 255))
    values = np.clip(np.round(row / scale) + zero, 0, 255).astype(np.int64)
    return values, float(scale), zero


def expected(x: np.ndarray, weights: np.ndarray, weight_zero: np.ndarray) -> np.ndarray:
    rows = []
    for row in x:
        values, scale, zero = quantize_row(row)
        product = (values - zero) @ (weights.astype(np.int64) - weight_zero.astype(np.int64))
        rows.append(product * scale * 0.01)
    return np.asarray(rows, np.float32)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(["y"], {"x": x})[0]
    return result


@pytest.fixture
def case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    # Large weights and one-signed activations: products whose int16 pairs would saturate.
    weights = rng.choice([-128, -127, 126, 127], size=(K, N)).astype(np.int8)
    weight_zero = rng.integers(-3, 4, size=N).astype(np.int8)
    x = np.stack(
        [
            rng.uniform(0.0, 1.0, K),  # all positive: the zero point is 0
            rng.uniform(-50.0, 50.0, K),  # a wide range: it would dominate a shared one
            rng.uniform(-0.2, 0.05, K),  # mostly negative: a zero point near 255
        ]
    ).astype(np.float32)
    return x, weights, weight_zero


def test_each_row_is_quantized_alone_and_multiplied_exactly(case):
    x, weights, weight_zero = case
    rewritten = exact_per_image(dynamic_matmul(weights, weight_zero))
    np.testing.assert_allclose(run(rewritten, x), expected(x, weights, weight_zero), rtol=1e-5)


def test_a_row_gets_the_same_result_in_a_batch_and_alone(case):
    x, weights, weight_zero = case
    rewritten = exact_per_image(dynamic_matmul(weights, weight_zero))
    batched = run(rewritten, x)
    for index in range(len(x)):
        np.testing.assert_array_equal(run(rewritten, x[index : index + 1])[0], batched[index])


def test_the_unrewritten_graph_lets_batch_mates_change_a_row(case):
    """Why the rewrite exists: the wide second row sets the first row's scale."""
    x, weights, weight_zero = case
    original = dynamic_matmul(weights, weight_zero)
    alone = run(original, x[:1])[0]
    assert not np.allclose(run(original, x)[0], alone, rtol=1e-2)


def test_a_quantized_tensor_used_elsewhere_is_refused():
    model = dynamic_matmul(np.ones((K, N), np.int8), np.zeros(N, np.int8))
    model.graph.node.append(helper.make_node("Cast", ["xq"], ["leak"], to=TensorProto.FLOAT))
    with pytest.raises(UnsupportedGraphError, match="more than MatMuls"):
        exact_per_image(model)
