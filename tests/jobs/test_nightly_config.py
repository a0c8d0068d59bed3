"""``nightly --config FILE.toml``: the file may hold nightly's own setting (``date``) as well as the
run's, and flags win. Checked where the settings are merged; nothing runs."""

from __future__ import annotations

import pytest

from jobs import cli
from jobs import nightly as nightly_job

SETTINGS = 'input = "/data/in"\noutput = "/data/out"\nmodel = "ghostnet_050"\n'


@pytest.fixture
def started(monkeypatch) -> list[tuple]:
    """What `nightly` would have been started with."""
    calls: list = []
    monkeypatch.setattr(nightly_job, "nightly", lambda config: calls.append(config) or [])
    return calls


def nightly(tmp_path, toml: str, *flags: str) -> int:
    path = tmp_path / "nightly.toml"
    path.write_text(SETTINGS + toml)
    return cli.main(["nightly", "--config", str(path), *flags])


def test_date_comes_from_the_file(tmp_path, started):
    """README, "Every flag can also come from `--config run.toml`": nightly's --date too."""
    assert nightly(tmp_path, 'date = "2026-11-27"\n') == 0
    [config] = started
    assert (config.run_date, config.inputs, config.model) == ("2026-11-27", ("/data/in",), "ghostnet_050")


def test_a_toml_date_literal_is_taken_as_the_date(tmp_path, started):
    assert nightly(tmp_path, "date = 2026-11-27\n") == 0
    [config] = started
    assert config.run_date == "2026-11-27"


def test_flags_win_over_the_file(tmp_path, started):
    assert nightly(tmp_path, 'date = "2026-11-27"\n', "--date", "2026-11-28") == 0
    [config] = started
    assert config.run_date == "2026-11-28"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("", "missing --date YYYY-MM-DD"),
        ('date = "2026-11-27"\nrun_date = "2026-11-26"\n', "`run_date` in --config and the night disagree"),
        ('date = "2026-11-27"\nreprocess = true\n', "do not apply to nightly runs"),
        ('dat = "2026-11-27"\n', "unknown settings ['dat']"),
    ],
)
def test_bad_nightly_settings_are_usage_errors(tmp_path, started, capsys, toml, message):
    assert nightly(tmp_path, toml) == 2
    assert message in capsys.readouterr().err
    assert started == []


def test_run_still_refuses_nightly_settings(tmp_path, capsys):
    (tmp_path / "run.toml").write_text(SETTINGS + 'date = "2026-11-27"\n')
    assert cli.main(["run", "--config", str(tmp_path / "run.toml")]) == 2
    assert "unknown settings ['date']" in capsys.readouterr().err
