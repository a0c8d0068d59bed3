"""``ghostnet-pipeline models``: the registered architectures and the weights shipped in the package."""

from __future__ import annotations

import json

import pytest

from ghostnet import list_models
from ghostnet.pretrained import PRETRAINED, pretrained_path
from jobs import cli, nightly, run


def models(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["models", *args])
    return code, capsys.readouterr().out


def test_the_table_lists_every_model_and_the_shipped_weights(capsys):
    """`--model`'s help: "see `ghostnet-pipeline models`"; every variant and shipped weights are listed."""
    code, out = models(capsys)

    assert code == 0
    assert all(name in out.split() for name in list_models())
    for entry in PRETRAINED.values():
        [line] = [line for line in out.splitlines() if line.startswith(entry.name + " ")]
        assert line.split()[:4] == [entry.name, entry.architecture, entry.modality, str(len(entry.labels))]
        assert entry.sha256[:12] in line and f"{entry.accuracy:.3f}" in line


def test_json_holds_what_a_script_needs(capsys):
    code, out = models(capsys, "--format", "json")

    assert code == 0
    listing = json.loads(out)
    assert listing["models"] == list_models()
    assert listing["weights"] == [
        {"name": e.name, "architecture": e.architecture, "modality": e.modality, "classes": len(e.labels),
         "sha256": e.sha256, "accuracy": e.accuracy, "path": str(pretrained_path(e.name))}
        for e in PRETRAINED.values()
    ]


@pytest.mark.parametrize(
    ("pattern", "expected_models", "expected_weights"),
    [
        ("ghostnetv2_*", list_models("ghostnetv2_*"), []),
        ("ghostnet_050", ["ghostnet_050"], ["demo-image", "demo-audio"]),  # the weights of that architecture
        ("demo-a*", [], ["demo-audio"]),
        ("no-such-model*", [], []),
    ],
)
def test_a_pattern_filters_models_and_weights(capsys, pattern, expected_models, expected_weights):
    code, out = models(capsys, pattern, "--format", "json")

    assert code == 0
    listing = json.loads(out)
    assert listing["models"] == expected_models
    assert [w["name"] for w in listing["weights"]] == expected_weights


@pytest.mark.parametrize("command", [run, nightly])
def test_the_model_flag_points_to_the_listing(command):
    help_text = command.COMMAND.build_parser()._option_string_actions["--model"].help
    assert "ghostnet-pipeline models" in help_text and "--list-models" not in help_text
