"""The conv rewrites the int8 recipe benchmark measures: same outputs as the Conv."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from asr_assets.inference.onnx import convs_as_2d
from bench.int8_recipes import convs_as_matmuls


def conv_stack() -> onnx.ModelProto:
    """Waveform conv (1 channel), two strided convs the rewrite takes, one padded it must not."""
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1  # unit-scale activations
        values = rng.standard_normal(shape) / np.sqrt(fan_in)
        return numpy_helper.from_array(values.astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["h0"], kernel_shape=[10], strides=[5], name="c0"),
        helper.make_node(
            "Conv", ["h0", "w1", "b1"], ["h1"], kernel_shape=[3], strides=[2], name="c1"
        ),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2"], ["h2"], kernel_shape=[2], strides=[2], name="c2"),
        helper.make_node(
            "Conv", ["h2", "w3"], ["y"], kernel_shape=[3], pads=[1, 1], group=1, name="c3"
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "stack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, "samples"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64, "frames"])],
        [
            weight("w0", 96, 1, 10),
            weight("w1", 128, 96, 3),
            weight("b1", 128),
            weight("w2", 128, 128, 2),
            weight("w3", 64, 128, 3),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_strided_convs_become_matmuls_with_the_same_outputs() -> None:
    model = conv_stack()
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert convs_as_matmuls(rewritten) == 2  # c1 and c2; c0 has one channel, c3 is padded
    onnx.checker.check_model(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("Conv") == 2 and ops.count("MatMul") == 2
    assert {t.name for t in rewritten.graph.initializer} >= {"w0", "w3", "b1"}
    assert not {"w1", "w2"} & {t.name for t in rewritten.graph.initializer}
    rng = np.random.default_rng(1)
    # Lengths whose frame counts round differently at each stride (odd and even remainders).
    for samples in (1_000, 1_003, 1_017, 4_096):
        x = rng.standard_normal((2, 1, samples)).astype(np.float32)
        expected = run(model, x)
        got = run(rewritten, x)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_every_weighted_1d_conv_runs_as_a_2d_conv_with_the_same_outputs() -> None:
    model = conv_stack()
    grouped = helper.make_node(
        "Conv", ["y", "wg"], ["z"], kernel_shape=[5], pads=[2, 2], group=4, name="cg"
    )
    model.graph.node.append(grouped)
    rng = np.random.default_rng(2)
    model.graph.initializer.append(
        numpy_helper.from_array(rng.standard_normal((64, 16, 5)).astype(np.float32), "wg")
    )
    del model.graph.output[:]
    model.graph.output.append(
        helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 64, "frames"])
    )
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert convs_as_2d(rewritten) == 5  # padded and grouped convs too
    onnx.checker.check_model(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("Conv") == 5 and ops.count("Unsqueeze") == 5 and ops.count("Squeeze") == 5
    for initializer in rewritten.graph.initializer:
        if initializer.name.endswith("/w"):
            assert len(initializer.dims) == 4 and initializer.dims[2] == 1
    for samples in (1_000, 1_017):
        x = rng.standard_normal((2, 1, samples)).astype(np.float32)
        np.testing.assert_allclose(run(rewritten, x), run(model, x), rtol=1e-4, atol=1e-4)
