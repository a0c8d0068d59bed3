"""An output that cannot be written is a usage error found before any work (#16.17).

Backs README, exit codes: 2 for an output that cannot be written, one line that says what to do,
before anything is labeled (Ray starts and the model loads first: a refused model leaves the output
as it was).
"""

from __future__ import annotations

import pytest

from jobs import cli
from tests import corpus

# The run starts Ray while its model loads, before the output is opened: the session's Ray is that Ray.
pytestmark = pytest.mark.usefixtures("ray_local")


def test_a_bucket_that_does_not_exist_is_exit_2_before_any_work(tmp_path, s3_endpoint, capsys):
    (tmp_path / "in").mkdir()
    corpus.gradient(32, 24).save(tmp_path / "in" / "a.png")

    code = cli.main(["run", "--input", str(tmp_path / "in"), "--output", "s3://no-such-bucket-0/out",
                     "--model", "ghostnet_050", "--weights", "random"])

    err = capsys.readouterr().err
    assert code == 2 and "cannot write to --output s3://no-such-bucket-0/out" in err, err
    assert "Check that the path or bucket exists" in err
    ours = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "Traceback" not in err
    assert "shard" not in err and "items" not in err, "the run stopped at the output check, before any shard"


def test_a_local_output_that_cannot_be_created_is_exit_2(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    corpus.gradient(32, 24).save(tmp_path / "in" / "a.png")
    (tmp_path / "file").write_text("a file where the output's parent folder should be")

    code = cli.main(["run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "file" / "out"),
                     "--model", "ghostnet_050", "--weights", "random"])

    assert code == 2 and "cannot write to --output" in capsys.readouterr().err
