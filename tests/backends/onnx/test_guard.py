"""ghost_deploy.backends.onnx.guard: a model the tool did not make runs only if a GhostNet export could be it.

Every hostile model here once gave exit 1 ("onnxsim failed", several lines of ONNX Runtime) or, for the Loop,
hung export, verify and profile; each is now refused with exit 2 in one line, before any session exists.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ghost_deploy.backends.onnx.guard import MAX_TENSOR_ELEMENTS, OPS, check_untrusted
from ghost_deploy.errors import InputError
from tests.helpers import REPO

CLI_TIMEOUT = 120  # s: a refusal takes about 2 s; a Loop of 2^62 iterations would never end


def _graph(extra_nodes: list[onnx.NodeProto] | None = None, extra_outputs: list[onnx.ValueInfoProto] | None = None,
           inits: list[onnx.TensorProto] | None = None, relu_input: str = "conv_out",
           batch: int = 1) -> onnx.GraphProto:  # fmt: skip
    """The tiny classifier of tests.helpers.tiny_onnx, with what a hostile variant adds."""
    rng = np.random.default_rng(0)
    base_inits = [
        helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], rng.standard_normal(216).tolist()),
        helper.make_tensor("fc", TensorProto.FLOAT, [8, 10], rng.standard_normal(80).tolist()),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["conv_out"], name="stem/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", [relu_input], ["relu_out"], name="stem/Relu"),
        helper.make_node("GlobalAveragePool", ["relu_out"], ["pool_out"], name="pool"),
        helper.make_node("Flatten", ["pool_out"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"], name="classifier"),
    ]
    return helper.make_graph(
        nodes + (extra_nodes or []),
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10]), *(extra_outputs or [])],
        (inits if inits is not None else base_inits),
    )


def _model(graph: onnx.GraphProto, opset: int = 17, extra_opsets: tuple[tuple[str, int], ...] = ()) -> onnx.ModelProto:
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    return model


def _out(name: str, shape: list[int | str] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape or ["n", "c", "h", "w"])


def custom_domain() -> onnx.ModelProto:
    evil = helper.make_node("Evil", ["relu_out"], ["evil"], name="evil", domain="com.evil")
    return _model(_graph([evil], [_out("evil")]), extra_opsets=(("com.evil", 1),))


def opset_99() -> onnx.ModelProto:
    return _model(_graph(), opset=99)


def duplicate_names() -> onnx.ModelProto:
    graph = _graph()
    graph.node[3].name = graph.node[2].name
    return graph_model(graph)


def graph_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    return _model(graph)


def graph_cycle() -> onnx.ModelProto:
    """The Relu reads an Add of the conv's output and of its own output, through an Identity after it."""
    nodes = [
        helper.make_node("Add", ["conv_out", "back"], ["summed"], name="add"),
        helper.make_node("Identity", ["relu_out"], ["back"], name="back"),
    ]
    graph = _graph(relu_input="summed")
    graph.node.insert(1, nodes[0])
    graph.node.append(nodes[1])
    return _model(graph)


def dims_not_data() -> onnx.ModelProto:
    """The conv weight claims 8 x 3 x 3 x 3 values and holds 10."""
    rng = np.random.default_rng(0)
    short = helper.make_tensor("w", TensorProto.FLOAT, [10], rng.standard_normal(10).astype(np.float32).tobytes(),
                               raw=True)  # fmt: skip
    short.ClearField("dims")
    short.dims.extend([8, 3, 3, 3])
    fc = helper.make_tensor("fc", TensorProto.FLOAT, [8, 10], rng.standard_normal(80).tolist())
    return _model(_graph(inits=[short, fc]))


def constant_of_shape() -> onnx.ModelProto:
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [1 << 40])
    nodes = [
        helper.make_node("Constant", [], ["big_shape"], name="shape", value=shape),
        helper.make_node("ConstantOfShape", ["big_shape"], ["big"], name="fill"),
    ]
    return _model(_graph(nodes, [_out("big", ["n"])]))


def huge_resize() -> onnx.ModelProto:
    """A Resize of the input by 10^6 in each direction: 3 x 10^15 floats, about 44 TB with its neighbours."""
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 1e6, 1e6])
    nodes = [
        helper.make_node("Constant", [], ["scales"], name="scales", value=scales),
        helper.make_node("Resize", ["input", "", "scales"], ["up"], name="resize", mode="nearest"),
    ]
    return _model(_graph(nodes, [_out("up")]))


def resize_by_data() -> onnx.ModelProto:
    """A Resize whose scales are four of the input's pixels: its size is known only at run time (unbounded)."""
    four = helper.make_tensor("four", TensorProto.INT64, [1], [4])
    nodes = [
        helper.make_node("Flatten", ["input"], ["pixels"], name="pixels", axis=0),
        helper.make_node("Constant", [], ["four"], name="four", value=four),
        helper.make_node(
            "Constant", [], ["zero"], name="zero", value=helper.make_tensor("z", TensorProto.INT64, [1], [0])
        ),
        helper.make_node(
            "Constant", [], ["one"], name="one", value=helper.make_tensor("o", TensorProto.INT64, [1], [1])
        ),
        helper.make_node("Slice", ["pixels", "zero", "four", "one"], ["picked"], name="pick"),
        helper.make_node("Reshape", ["picked", "four"], ["scales"], name="as_scales"),
        helper.make_node("Resize", ["input", "", "scales"], ["up"], name="resize", mode="nearest"),
    ]
    return _model(_graph(nodes, [_out("up")]))


def endless_loop() -> onnx.ModelProto:
    """A Loop of 2^62 iterations whose body adds one: the model never returns."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep"),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"], name="inc"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    graph = _graph(
        [helper.make_node("Loop", ["trips", "cond", "acc0"], ["acc"], name="loop", body=body)],
        [_out("acc", [1])],
    )
    graph.initializer.extend(
        [
            helper.make_tensor("trips", TensorProto.INT64, [], [1 << 62]),
            helper.make_tensor("cond", TensorProto.BOOL, [], [True]),
            helper.make_tensor("acc0", TensorProto.FLOAT, [1], [0.0]),
        ]
    )
    return _model(graph)


def huge_input() -> onnx.ModelProto:
    return _model(_graph(batch=1 << 30))


HOSTILE: dict[str, Callable[[], onnx.ModelProto]] = {
    "custom-domain": custom_domain,
    "opset-99": opset_99,
    "duplicate-names": duplicate_names,
    "graph-cycle": graph_cycle,
    "dims-not-data": dims_not_data,
    "constant-of-shape-2^40": constant_of_shape,
    "resize-44TB": huge_resize,
    "resize-by-data": resize_by_data,
    "loop-2^62": endless_loop,
    "input-2^30-batch": huge_input,
}
REASONS = {
    "custom-domain": "of domain 'com.evil'",
    "opset-99": "imports ONNX opset 99",
    "duplicate-names": "two nodes are named 'pool'",
    "graph-cycle": "is not a valid ONNX model: Nodes in a graph must be topologically sorted",
    "dims-not-data": "has dims [8, 3, 3, 3] (216 values) but holds 40 bytes",
    "constant-of-shape-2^40": "'ConstantOfShape', an op no GhostNet export contains",
    "resize-44TB": "more than 268435456",
    "resize-by-data": "which is computed from the input's values",
    "loop-2^62": "'Loop', an op no GhostNet export contains",
    "input-2^30-batch": "input 'input' has shape [1073741824, 3, 32, 32]",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_model_is_refused_with_its_reason(kind: str) -> None:
    with pytest.raises(InputError) as refused:
        check_untrusted(HOSTILE[kind](), "m.onnx")
    message = str(refused.value)
    assert message.startswith("m.onnx") and REASONS[kind] in message and "\n" not in message, message


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ghost_deploy", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=CLI_TIMEOUT)  # fmt: skip


@pytest.fixture(scope="module")
def good_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.onnx"
    onnx.save(_model(_graph()), str(path))
    return path


def _in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    from ghost_deploy.cli.main import main

    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_export_verify_and_profile_refuse_a_hostile_model_at_once(
    tmp_path: Path, good_onnx: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command exits 2 with one line naming the file, before onnxsim or ONNX Runtime see the model. The
    endless Loop runs in subprocesses with a timeout (a regression must fail, not hang the suite); the other
    kinds in process (the same code path, a second less each)."""
    path = tmp_path / f"{kind}.onnx"
    onnx.save(HOSTILE[kind](), str(path))
    commands = {
        "export": ("export", str(path), "-o", str(tmp_path / "out.onnx")),
        "verify": ("verify", str(path), "--reference", str(good_onnx), "--eval-limit", "4"),
        "verify --reference": ("verify", str(good_onnx), "--reference", str(path), "--eval-limit", "4"),
        "profile": ("profile", str(path), "--duration-s", "0.1", "--warmup-ms", "0"),
    }
    hangs = kind.startswith("loop")
    runs = {name: _cli(*argv) if hangs else _in_process(capsys, *argv) for name, argv in commands.items()}
    for command, proc in runs.items():
        lines = proc.stderr.strip().splitlines()  # a progress line ("[load] loading ..."), then the error
        assert proc.returncode == 2 and lines[-1].startswith("ghost-deploy: error:"), (command, proc.stderr[-800:])
        assert len(lines) <= 2 and not any(line.startswith("ghost-deploy") for line in lines[:-1]), (command, lines)
        assert path.name in lines[-1] and REASONS[kind] in lines[-1], (command, lines[-1])
    assert not (tmp_path / "out.onnx").exists()


def test_the_allow_list_holds_what_ghostnet_needs_and_nothing_that_runs_unbounded() -> None:
    check_untrusted(_model(_graph()), "tiny.onnx")
    assert {"Conv", "HardSigmoid", "Resize", "QuantizeLinear", "DequantizeLinear", "Cast", "BatchNormalization"} <= OPS
    assert not {"Loop", "If", "Scan", "ConstantOfShape", "Expand", "Tile", "Range"} & OPS
    # the largest input --batch allows (batch x size^2 <= 256 x 224^2), and the stem's 16 maps of it at size / 2
    assert math.prod([256, 16, 112, 112]) <= MAX_TENSOR_ELEMENTS


@pytest.fixture(scope="module")
def v2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight GhostNetV2 at 64 px (Resize, Constant, Sigmoid in its attention), saved as a state_dict."""
    import torch

    from ghost_deploy.model.synthetic import realistic_ghostnet
    from tests.helpers import digit_images

    path = tmp_path_factory.mktemp("v2") / "v2.pth"
    torch.save(realistic_ghostnet(digit_images(60, 64), width=0.5, num_classes=10, version="v2").state_dict(), path)
    return path


# V1's FP32 and FP16 artifacts pass the guard in every test that packs or verifies them (Bundle.open and
# load_onnx run it); its Q/DQ graphs and every V2 graph (its ort-int8 has an FP32 prefix) are checked here
OUR_ARTIFACTS = [("v1", "onnx-int8"), ("v1", "ort-int8")] + [
    ("v2", t) for t in ("onnx", "onnx-fp16", "onnx-int8", "ort-int8")
]


@pytest.mark.slow
@pytest.mark.parametrize(("version", "target"), OUR_ARTIFACTS)
def test_every_kind_of_onnx_our_pipeline_writes_passes(
    tmp_path: Path, v2_checkpoint: Path, version: str, target: str
) -> None:
    """Each artifact our exports write, a failed one included, passes the guard."""
    import ghost_deploy
    from ghost_deploy.config import Overrides
    from ghost_deploy.errors import VerificationFailed
    from ghost_deploy.report import Steps
    from tests.helpers import DIGITS, TINY_MODEL, small_export_config

    source = TINY_MODEL if version == "v1" else v2_checkpoint
    changes = {} if version == "v1" else {"overrides": Overrides(input_size=64, num_classes=10)}
    cfg = small_export_config(target, tmp_path / f"{version}.{target}.onnx", calib=DIGITS / "calibration",
                              eval_dir=DIGITS / "test", **changes)  # fmt: skip
    try:
        written = ghost_deploy.export(source, cfg, Steps(echo=lambda text: None)).artifact
    except VerificationFailed as failed:  # random V2 weights may miss a gate: its artifact still counts
        written = failed.result.artifact  # type: ignore[union-attr]
    check_untrusted(onnx.load(str(written)), written.name)


@pytest.mark.slow
@pytest.mark.parametrize(("version", "fused"), [("v1", False), ("v2", False), ("v3", False), ("v3", True)])
def test_a_raw_export_of_another_exporter_passes(version: str, fused: bool) -> None:
    """What a user may bring as MODEL: torch.onnx.export with a dynamic batch, nothing folded (BatchNorm kept,
    V2/V3's Resize scales a Concat of Constants), in training mode too (Dropout)."""
    import io
    import warnings

    import torch

    from ghost_deploy.model.ghostnet import GhostNet

    module = GhostNet(10, 0.5, version=version, fused=fused).eval()
    for fold in (False, True):
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(1, 3, 64, 64),), buffer, dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"], do_constant_folding=fold,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})  # fmt: skip
        check_untrusted(onnx.load_from_string(buffer.getvalue()), f"{version}.onnx")


def _resealed(bundle: Path, dest: Path, model: onnx.ModelProto) -> Path:
    """A copy of `bundle` whose ONNX is `model`, its manifest's size and sha256 rewritten as a crafted bundle's."""
    import hashlib
    import json
    import shutil

    shutil.copytree(bundle, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    name = manifest["artifacts"][0]["file"]
    data = model.SerializeToString()
    (dest / name).write_bytes(data)
    entry = next(f for f in manifest["files"] if f["path"] == name)
    entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


@pytest.mark.parametrize("kind", ["loop-2^62", "resize-44TB", "custom-domain", "graph-cycle"])
def test_bundle_open_refuses_a_resealed_hostile_model(tmp_path: Path, tiny_bundle: Path, kind: str) -> None:
    """The Loop made `run` hang; the others were ONNX Runtime's exceptions (exit 1) at the first predict."""
    from ghost_deploy.bundle.errors import BundleError
    from ghost_deploy.bundle.runtime import Bundle

    bundle = _resealed(tiny_bundle, tmp_path / "b", HOSTILE[kind]())
    with pytest.raises(BundleError) as refused:
        Bundle.open(bundle)
    assert REASONS[kind] in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.slow
def test_run_of_a_resealed_bundle_with_an_endless_loop_is_exit_2_at_once(tmp_path: Path, tiny_bundle: Path) -> None:
    from tests.helpers import DIGITS

    bundle = _resealed(tiny_bundle, tmp_path / "b", endless_loop())
    image = sorted((DIGITS / "test" / "3").glob("*.png"))[0]
    proc = _cli("run", str(bundle), str(image))
    assert proc.returncode == 2 and REASONS["loop-2^62"] in proc.stderr.strip().splitlines()[-1], proc.stderr[-800:]
