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


def test_every_subcommand_is_one_command_registered_the_same_way():
    """#17 "one registration and one error path": each subcommand module defines a `Command`, and the
    parser's handler is that Command, which runs the handler under `guarded`."""
    from jobs._command import Command

    choices = cli.build_parser()._subparsers._group_actions[0].choices
    for name, parser in choices.items():
        handler = parser.get_default("handler")
        assert isinstance(handler, Command) and handler.name == name, name


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_and_log_format_work_before_or_after_the_subcommand(where):
    """#17 "`-v` only works before the subcommand": now both places."""
    flags = ["-v", "--log-format", "json"]
    argv = [*flags, "models"] if where == "before" else ["models", *flags]
    args = cli.build_parser().parse_args(argv)
    assert args.verbose is True and args.log_format == "json"
    plain = cli.build_parser().parse_args(["models"])
    assert plain.verbose is False and plain.log_format == "text"


def test_nightly_does_not_offer_the_flags_it_would_refuse(capsys):
    """#17 "nightly accepts --run-date and --reprocess, then refuses them": it no longer takes them."""
    for flag in ("--run-date", "--reprocess", "--resume"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["nightly", flag, *(["x"] if flag != "--reprocess" else [])])
        assert exit_.value.code == 2
        assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["query", "report"])
def test_a_missing_output_is_a_usage_error_in_query_and_report_alike(name, tmp_path, capsys):
    """#17 "A missing output exits 1 in query but 2 in report": 2 in both, with one `error:` line."""
    args = {"query": [str(tmp_path / "nowhere"), "SELECT 1"],
            "report": [str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.html")]}[name]
    assert cli.main([name, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: output ") and "does not exist" in err


def test_with_json_logs_an_error_is_a_json_line_too(tmp_path, capsys):
    """docs/operations.md, "Logs": with --log-format json every stderr line is a JSON object, the
    one that says why the command failed included."""
    import json

    from pipeline import logs

    try:
        assert cli.main(["--log-format", "json", "query", str(tmp_path / "nowhere"), "SELECT 1"]) == 2
    finally:
        logs.configure("text")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["level"], line["message"].split(" does not exist")[0]) for line in lines] == [
        ("ERROR", f"error: output {tmp_path / 'nowhere'}")]
