"""``run`` flags that are checked before anything starts: placement and output-file settings."""

from __future__ import annotations

import pytest

from jobs import cli
from jobs._run_config import config_from_args

BASE = ["run", "--input", "/data/in", "--output", "/data/out", "--model", "ghostnet_050"]


def config_of(*flags: str):
    args = cli.build_parser().parse_args([*BASE, *flags])
    return config_from_args(args)


def test_scale_flags_reach_the_run_config():
    config = config_of("--actor-resources", '{"model_node": 1, "accel": 0.5}', "--rows-per-file", "250000",
                       "--row-group-size", "65536", "--decode-batch-size", "64", "--compile")
    assert config.actor_resources == {"model_node": 1, "accel": 0.5}
    assert (config.rows_per_file, config.row_group_size, config.decode_batch_size) == (250_000, 65_536, 64)
    assert config.compile is True
    defaults = config_of()
    assert (defaults.actor_resources, defaults.compile, defaults.decode_batch_size) == (None, False, 32)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--actor-resources", "model_node=1"], "not JSON"),
        (["--actor-resources", "[1]"], "JSON object of resource names"),
        (["--actor-resources", '{"model_node": 0}'], "positive amounts"),
        (["--row-group-size", "0"], "--row-group-size must be at least 1"),
        (["--num-classes", "0"], "--num-classes must be at least 1"),
        (["--num-classes", "-3"], "--num-classes must be at least 1"),
    ],
)
def test_bad_values_are_usage_errors_that_say_what_to_write(flags, message, capsys):
    """README: exit 2 for a usage error; docs of each flag: e.g. `--num-classes 0` is refused, not
    silently a 1000-class ImageNet head."""
    try:
        code = cli.main([*BASE, *flags])
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_run_help_shows_every_flag_in_its_group():
    """#26.7: `run --help` lists its flags in groups, as `ray job submit` and `hf` do; a new flag
    outside a group would land in the general options."""
    from jobs import nightly, run

    for command in (run, nightly):
        groups = {g.title: [a.dest for a in g._group_actions] for g in command.COMMAND.build_parser()._action_groups}
        assert list(groups) == ["positional arguments", "options", "inputs and outputs", "model and weights",
                                "resources and placement", "run control", "output format and logging"]
        assert groups["options"] == ["help", "config"], command
        assert {"verbose", "log_format", "format"} <= set(groups["output format and logging"])
    help_text = run.COMMAND.build_parser().format_help()
    assert help_text.startswith("usage: ghostnet-pipeline run --input URI --output URI --model NAME")
    assert "exit codes: 0 committed" in help_text
