"""A mistyped flag is reported by the subcommand it was given to: its usage line and the error,
exit 2 (not the top-level usage, which names no flag of the subcommand)."""

from __future__ import annotations

import pytest

from jobs import cli

# Each subcommand with what it needs besides flags, so that the typo is the only mistake.
SUBCOMMANDS = {
    "run": [],
    "nightly": [],
    "submit": ["--", "run"],
    "demo": [],
    "train": ["--modality", "image", "--out", "w.safetensors"],
    "query": ["./out", "SELECT 1"],
    "report": ["./out", "--out", "r.html"],
    "models": [],
    "migrate": ["./out"],
}


def test_every_subcommand_is_covered():
    assert set(SUBCOMMANDS) == set(cli.build_parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_a_mistyped_flag_gets_the_subcommands_usage(name, capsys):
    """README, exit codes: 2 usage error; the message says which subcommand's flags were meant."""
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--inptu", "x", *SUBCOMMANDS[name]])

    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith(f"usage: ghostnet-pipeline {name} "), err
    assert f"ghostnet-pipeline {name}: error: unrecognized arguments: --inptu" in err, err
