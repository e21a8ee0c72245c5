"""The one-run probe: every layer's own INT8 error together, faster scoring, exclusion without a rebuild."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from ghost_deploy.backends.onnx.export import onnx_from_module
from ghost_deploy.backends.onnx.simplify import simplify_onnx
from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.config import BatchSpec
from ghost_deploy.data.inputs import ImageFolder
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.precision.calibrate import TensorRange, calibrate
from ghost_deploy.precision.probe import Scorer, dynamic_batch, layer_errors, probe_model, without_quantization
from ghost_deploy.precision.quantize import qdq_for_onnxruntime, qdq_for_tensorrt, select_nodes
from tests.helpers import DIGITS


@pytest.fixture(scope="module")
def setup(small_model):  # type: ignore[no-untyped-def]
    fp32 = simplify_onnx(onnx_from_module(small_model, 64, BatchSpec(fixed=1)))[0]  # a batch-1 ONNX, as by default
    samples = list(ImageFolder(DIGITS / "calibration", Preprocessing(64, 64), limit=24))
    ranges = calibrate(fp32, samples).ranges
    return fp32, samples, ranges, [n.name for n in select_nodes(fp32)[0]]


@pytest.mark.slow
def test_scorer_runs_a_batch_1_model_at_a_large_batch_with_the_same_logits(setup) -> None:  # type: ignore[no-untyped-def]
    fp32, samples, _ranges, _layers = setup
    assert dynamic_batch(fp32) is not None
    with OnnxRuntimeRunner(fp32.SerializeToString()) as runner:
        one_by_one = np.concatenate([runner.infer({"input": s.array[None]})["logits"] for s in samples])
    scorer = Scorer(fp32, samples)
    np.testing.assert_allclose(scorer.reference, one_by_one, rtol=1e-5, atol=1e-5)
    assert scorer.score(fp32) == (1.0, pytest.approx(1.0))


def test_a_graph_that_reads_its_batch_size_keeps_it(setup) -> None:  # type: ignore[no-untyped-def]
    fp32 = setup[0]
    reshaped = onnx.ModelProto()
    reshaped.CopyFrom(fp32)
    for node in reshaped.graph.node:
        if node.op_type == "Flatten":
            node.op_type = "Reshape"  # as a traced view(1, -1) would be, its shape holding the batch
    assert dynamic_batch(reshaped) is None


def test_probe_copies_every_layer_and_leaves_the_fp32_graph_alone(setup) -> None:  # type: ignore[no-untyped-def]
    fp32, samples, ranges, layers = setup
    quantized, _ = qdq_for_tensorrt(fp32, ranges)
    model, pairs = probe_model(fp32, quantized, layers)
    assert sorted(pairs) == sorted(layers)
    first_float, first_copy = pairs[layers[0]]
    feeds = {"input": samples[0].array[None]}
    with OnnxRuntimeRunner(model.SerializeToString(), optimize=False) as runner:
        got_float, got_copy = runner.session.run([first_float, first_copy], feeds)
    with OnnxRuntimeRunner(fp32.SerializeToString(), optimize=False) as runner:
        expected = runner.session.run(None, feeds)[0]
    with OnnxRuntimeRunner(model.SerializeToString(), optimize=False) as runner:
        np.testing.assert_array_equal(runner.session.run(["logits"], feeds)[0], expected)
    assert 0 < np.abs(got_copy - got_float).max() < 0.2 * np.abs(got_float).max()  # quantized, not broken


@pytest.mark.slow
def test_a_clipped_input_makes_its_layer_the_worst(setup) -> None:  # type: ignore[no-untyped-def]
    fp32, samples, ranges, layers = setup
    # a layer whose input no Concat touches: ort-int8 gives a Concat's inputs its output's range, so clipping a
    # Concat's output clips the layers reading its inputs too (and one of them would be worse)
    concat = {t for n in fp32.graph.node if n.op_type == "Concat" for t in (*n.input, *n.output)}
    inputs = {n.name: n.input[0] for n in fp32.graph.node}
    victim = next(layer for layer in layers[1:] if inputs[layer] not in concat)
    tensor = inputs[victim]
    clipped = dict(ranges)
    r = ranges[tensor]
    clipped[tensor] = TensorRange(r.amax * 0.1, r.min, r.max)  # what an entropy range does to a stroke image
    for build in (qdq_for_tensorrt, qdq_for_onnxruntime):
        errors = layer_errors(fp32, build(fp32, clipped)[0], layers, samples)
        assert set(errors) == set(layers) and min(errors.values()) >= 0.0
        assert max(errors, key=lambda n: errors[n]) == victim, build.__name__
        assert errors[victim] > 10 * sorted(errors.values())[-2]


@pytest.mark.slow
def test_taking_a_layer_out_without_rebuilding_matches_the_rebuilt_graph(setup) -> None:  # type: ignore[no-untyped-def]
    fp32, samples, ranges, layers = setup
    scorer = Scorer(fp32, samples)
    for build in (qdq_for_tensorrt, qdq_for_onnxruntime):
        full = build(fp32, ranges)[0]
        estimate = scorer.logits(without_quantization(full, fp32, layers[:3]))
        rebuilt = scorer.logits(build(fp32, ranges, exclude_nodes=layers[:3])[0])
        cosine = (estimate * rebuilt).sum(1) / (np.linalg.norm(estimate, axis=1) * np.linalg.norm(rebuilt, axis=1))
        assert cosine.min() > 0.99, build.__name__
