"""A model file that does not state its input size, preprocessing or labels (issue 21.4): the defaults that
stand in are listed, and what a file (or another tool's settings beside the weights) states is never
contradicted by a flag or a default. Torch-free."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ghost_deploy.config import Overrides
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.errors import CheckpointError, InputError
from ghost_deploy.model.assumptions import assumed_defaults, check_hints, describe_assumed, foreign_hints
from ghost_deploy.model.info import ModelInfo, apply_overrides

DEFAULT = ModelInfo("ghostnet_100", 1.0, 4, 224, Preprocessing(256, 224), source="inferred")
OWN = Path("own.pt")


def test_every_default_taken_is_listed_and_only_those() -> None:
    everything = assumed_defaults(DEFAULT, Overrides(), "ghostnet_100's ImageNet default")
    assert list(everything) == ["input_size", "preprocessing", "labels"]
    assert everything["input_size"].startswith("224 x 224 (ghostnet_100's ImageNet default; set with --input-size")
    assert (
        "resize 256 bilinear, centre crop 224, mean 0.485,0.456,0.406, std 0.229,0.224,0.225"
        in (everything["preprocessing"])
    )
    assert "none, classes numbered 0..3" in everything["labels"]
    given = Overrides(input_size=128, resize=146, mean=(0.5,) * 3, std=(0.25,) * 3, interpolation="bicubic")
    assert list(assumed_defaults(apply_overrides(DEFAULT, given), given, "x")) == ["labels"]
    note = describe_assumed(OWN, everything)
    assert note.splitlines()[0] == "note: own.pt does not state these, so defaults stand in (check them):"
    assert len(note.splitlines()) == 4
    # an ONNX states its input shape (a contradicting --input-size is refused): never listed as assumed
    assert list(assumed_defaults(DEFAULT.replace(source="onnx"), Overrides(), "x")) == ["preprocessing", "labels"]


def test_other_tools_settings_are_read_as_plain_values_only() -> None:
    hints = foreign_hints(
        {
            "state_dict": {},
            "epoch": 90,
            "args": argparse.Namespace(img_size=128, num_classes=4, mean=[0.5, 0.5, 0.5]),  # a trusted pickle
            "hyper_parameters": {"input_size": [3, 96, 96], "idx_to_class": {1: "dog", 0: "cat"}},
        }
    )
    assert hints["input_size"] == ("img_size in the checkpoint's 'args'", 128)  # the first place wins
    assert hints["num_classes"][1] == 4 and hints["mean"][1] == (0.5, 0.5, 0.5)
    assert hints["labels"] == ("idx_to_class in the checkpoint's 'hyper_parameters'", ("cat", "dog"))
    ignored = foreign_hints({"input_size": [3, 128, 96], "num_classes": True, "labels": [1, 2], "std": "x"})
    assert ignored == {}  # not square, a bool, not names, not a triple


def test_a_stored_setting_that_the_defaults_contradict_is_refused_with_the_flag_to_pass() -> None:
    hints = foreign_hints({"args": {"img_size": 128}})
    with pytest.raises(CheckpointError, match=r"img_size in the checkpoint's 'args' = 128, but ghost-deploy would "
                       r"assume 224 x 224 inputs; pass --input-size 128"):  # fmt: skip
        check_hints(hints, DEFAULT, Overrides(), OWN)
    with pytest.raises(CheckpointError, match=r"--input-size gives 96; pass --input-size 128"):
        ov = Overrides(input_size=96)
        check_hints(hints, apply_overrides(DEFAULT, ov), ov, OWN)
    ov = Overrides(input_size=128)
    check_hints(hints, apply_overrides(DEFAULT, ov), ov, OWN)  # agreeing: accepted
    with pytest.raises(CheckpointError, match=r"num_classes in the checkpoint = 10, but the model has 4 classes"):
        check_hints(foreign_hints({"num_classes": 10}), DEFAULT, Overrides(), OWN)
    with pytest.raises(CheckpointError, match=r"the default is 0.485,0.456,0.406; pass --mean 0.5,0.5,0.5"):
        check_hints(foreign_hints({"config": {"mean": (0.5, 0.5, 0.5)}}), DEFAULT, Overrides(), OWN)
    with pytest.raises(CheckpointError, match=r"the model has 4 classes: give one label per class"):
        check_hints(foreign_hints({"class_names": ["a", "b"]}), DEFAULT, Overrides(), OWN)


def test_class_names_stored_beside_the_weights_are_offered_for_labels() -> None:
    hints = foreign_hints({"class_names": ["cat", "dog", "fox", "owl"]})
    check_hints(hints, DEFAULT, Overrides(), OWN)  # no labels is no contradiction
    assert (
        "class_names in the checkpoint lists [cat, dog, fox, owl]"
        in assumed_defaults(DEFAULT, Overrides(), "x", hints)["labels"]
    )
    named = apply_overrides(DEFAULT, Overrides(labels=("cat", "dog", "fox", "ant")))
    with pytest.raises(CheckpointError, match="--labels gives"):
        check_hints(hints, named, Overrides(labels=("cat", "dog", "fox", "ant")), OWN)


@pytest.mark.parametrize(
    ("source", "stated"),
    [
        ("metadata", "the checkpoint's metadata"),
        ("report", "the ONNX's ghost-deploy report"),
        ("onnx", "the ONNX.s input shape"),
    ],
)
def test_flags_never_contradict_what_a_file_states(source: str, stated: str) -> None:
    info = ModelInfo("ghostnet_050", 0.5, 10, 64, Preprocessing(64, 64), source=source)
    with pytest.raises(InputError, match=rf"--input-size 128 contradicts {stated}.*64 x 64"):
        apply_overrides(info, Overrides(input_size=128))
    with pytest.raises(InputError, match=r"--crop 96 contradicts"):
        apply_overrides(info, Overrides(crop=96))
    with pytest.raises(InputError, match=r"--num-classes 4 contradicts.*10 classes"):
        apply_overrides(info, Overrides(num_classes=4))
    assert apply_overrides(info, Overrides(input_size=64, num_classes=10)).input_size == 64  # agreeing: fine
    # without a stated value the flag decides
    assert apply_overrides(info.replace(source="inferred"), Overrides(input_size=128)).input_size == 128


def test_labels_that_do_not_match_the_classes_name_where_each_came_from() -> None:
    info = ModelInfo("ghostnet_050", 0.5, 10, 64, Preprocessing(64, 64), labels=tuple("abc"), source="metadata")
    with pytest.raises(InputError, match=r"3 labels for a model with 10 classes \(labels from the checkpoint's "):
        apply_overrides(info, Overrides())
    with pytest.raises(InputError, match=r"2 labels for a model with 4 classes \(labels from --labels\)"):
        apply_overrides(DEFAULT, Overrides(labels=("a", "b")))
