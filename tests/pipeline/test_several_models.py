"""Several models in one run, on real components (a local Ray, deltalake, DuckDB reading back): one
decode per distinct preprocessing, each model's own rows and statistics, the diff per model, a crash
then the same command (exactly once per model), weights that fail to load, models that do not fit.

Backs docs/operations.md, "Several models in one run"."""

from __future__ import annotations

import dataclasses
import signal
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import ghostnet
from ghostnet.audio import DEFAULT_FRONTEND, spectrogram_shape
from pipeline import commit, decode
from pipeline.commit import RunIdentity
from pipeline.config import ModelEntry, RunConfig
from pipeline.delta import open_tables
from pipeline.errors import UsageError
from pipeline.failpoints import ENV as FAILPOINTS
from pipeline.fencing import Attempt
from pipeline.model import ModelSpec
from pipeline.predict import Predictor
from pipeline.run import plan_by_modality, run, run_by_modality
from pipeline.schema import CHANNEL_STATS, PREDICTIONS
from pipeline.tables import OutputLayout
from tests import corpus
from tests.output import committed, run_records
from tests.pipeline.test_faults import cli
from tests.pipeline.test_run_audio import encode as encode_audio

IMAGES = 12


def weights(folder: Path, name: str, *, seed: int, modality: str = "image", input_size: int | None = None,
            sample_rate: int | None = None) -> str:
    """A weights file of random weights (``seed``) whose metadata asks for another preprocessing:
    ``input_size`` pixels a side, or audio at ``sample_rate``."""
    model = ghostnet.create_model(name, num_classes=4, modality=modality)
    ghostnet.init_random(model, seed)
    meta = model.meta
    if input_size is not None:
        meta = dataclasses.replace(meta, input_size=(3, input_size, input_size))
    if sample_rate is not None:
        frontend = dataclasses.replace(DEFAULT_FRONTEND, sample_rate=sample_rate, hop_length=sample_rate // 100)
        meta = dataclasses.replace(meta, audio=frontend, input_size=(1, *spectrogram_shape(frontend)))
    path = folder / f"{name}-{seed}-{input_size or sample_rate or 'default'}.safetensors"
    ghostnet.save_weights(model, path, meta)
    return str(path)


def make_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(IMAGES - 1):
        corpus.gradient(90 + 3 * i, 70 + 2 * i, seed=i).save(folder / f"img-{i:02d}.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")


def config(folder: Path, output: Path, models: list[ModelEntry], **settings: object) -> RunConfig:
    return RunConfig(inputs=(str(folder),), output=str(output), models=tuple(models), shard_size=5, batch_size=4,
                     decode_batch_size=4, max_error_rate=0.5, run_date="2026-12-01", **settings)


def rows_per_model(output: Path) -> dict[tuple[str, str], pa.Table]:
    table = committed(str(output))
    return {(m, w): table.filter(pc.and_(pc.equal(table["model"], m), pc.equal(table["weights_sha256"], w)))
            for m, w in {(r["model"], r["weights_sha256"]) for r in table.select(["model", "weights_sha256"])
                         .to_pylist()}}


@pytest.mark.usefixtures("ray_local")
class TestImages:
    def test_three_models_two_decode_groups_each_labels_as_it_would_alone(self, tmp_path):
        """Two 224 px models share a decode, a 160 px one has its own crop of the same fetch; each
        model's rows are what the model alone says of its own crop of each image."""
        make_images(tmp_path / "in")
        a = weights(tmp_path, "ghostnet_050", seed=1)
        b = weights(tmp_path, "ghostnet_100", seed=2)
        c = weights(tmp_path, "ghostnet_050", seed=3, input_size=160)
        output = tmp_path / "out"
        record = run(config(tmp_path / "in", output, [ModelEntry("ghostnet_050", a), ModelEntry("ghostnet_100", b),
                                                        ModelEntry("ghostnet_050", c, topk=2)]))

        assert record.committed and record.items == IMAGES and record.rows == 3 * IMAGES
        assert record.decode_groups == [[0, 1], [2]]
        assert [(m.items, m.rows) for m in record.models] == [(IMAGES, IMAGES)] * 3
        per_model = rows_per_model(output)
        assert len(per_model) == 3
        for (path, topk) in ((a, 5), (b, 5), (c, 2)):
            spec = ModelSpec(*{a: ("ghostnet_050",), b: ("ghostnet_100",), c: ("ghostnet_050",)}[path], path).pinned()
            rows = per_model[(spec.name, spec.weights_sha256)]
            assert rows.num_rows == IMAGES and pc.count_distinct(rows["uri"]).as_py() == IMAGES
            broken = rows.filter(pc.equal(rows["status"], "decode_error"))
            assert broken["uri"].to_pylist() == [str(tmp_path / "in" / "broken.jpg")]
            alone = self.labels_alone(spec, tmp_path / "in", topk)
            got = {r["uri"]: r["topk_labels"] for r in rows.filter(pc.equal(rows["status"], "ok")).to_pylist()}
            assert got == alone, f"{spec.name} with {Path(path).name}: its rows are its own crop's"
        stats = committed(str(output), "channel_stats")
        counts = stats.group_by(["model", "weights_sha256", "layer", "channel"]).aggregate([("count", "sum")])
        assert set(counts["count_sum"].to_pylist()) == {IMAGES - 1}, "per model, every ok item once"
        assert pc.count_distinct(counts["weights_sha256"]).as_py() == 3

    @staticmethod
    def labels_alone(spec: ModelSpec, folder: Path, topk: int) -> dict[str, list[str]]:
        meta = spec.load().meta
        items = pa.table({"uri": [str(p) for p in sorted(folder.glob("img-*.jpg"))]})
        n = items.num_rows
        items = items.append_column("etag", pa.nulls(n, pa.string())).append_column(
            "size_bytes", pa.nulls(n, pa.int64())).append_column("modality", pa.array(["image"] * n)).append_column(
            "_shard", pa.array([0] * n, pa.int32()))
        rows = Predictor(spec, run_id="alone", topk=topk, torch_threads=1)(decode.read_and_decode(items, metas=[meta]))
        return {r["uri"]: r["topk_labels"] for r in rows.to_pylist()}

    def test_a_model_added_to_an_output_labels_every_item_for_itself_only(self, tmp_path):
        make_images(tmp_path / "in")
        first = [ModelEntry("ghostnet_050", weights(tmp_path, "ghostnet_050", seed=1), role="production")]
        output = tmp_path / "out"
        run(config(tmp_path / "in", output, first))
        before = committed(str(output))

        added = ModelEntry("ghostnet_050", weights(tmp_path, "ghostnet_050", seed=4), role="candidate")
        record = run(config(tmp_path / "in", output, [*first, added]))

        assert [(m.items, m.items_skipped, m.role) for m in record.models] == [
            (0, IMAGES, "production"), (IMAGES, 0, "candidate")]
        assert record.items == IMAGES and record.rows == IMAGES and record.items_skipped == 0
        after = committed(str(output))
        assert after.num_rows == 2 * IMAGES
        new = after.filter(pc.equal(after["run_id"], record.run_id))
        assert set(new["weights_sha256"].to_pylist()) == {record.models[1].weights_sha256}
        old = after.filter(pc.not_equal(after["run_id"], record.run_id))
        assert sorted(old["uri"].to_pylist()) == sorted(before["uri"].to_pylist()), "the first model's rows stay"

        again = run(config(tmp_path / "in", output, [*first, added]))
        assert again.items == 0 and committed(str(output)).num_rows == 2 * IMAGES


@pytest.mark.usefixtures("ray_local")
def test_two_audio_models_at_two_sample_rates(tmp_path):
    """One audio model at 16 kHz, one at 8 kHz: each file gives each model its own windows, segments
    0..n-1, labeled by that model only."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i, seconds in enumerate((0.6, 1.7, 2.4)):
        (folder / f"clip-{i}.wav").write_bytes(encode_audio("chirp", 22_050, seconds, 2, "WAV", "PCM_16"))
    (folder / "broken.wav").write_bytes(b"RIFF but not really")
    fast = weights(tmp_path, "ghostnet_050", seed=1, modality="audio")
    slow = weights(tmp_path, "ghostnet_050", seed=2, modality="audio", sample_rate=8_000)
    output = tmp_path / "out"
    [record] = run_by_modality(config(folder, output, [ModelEntry("ghostnet_050", fast),
                                                       ModelEntry("ghostnet_050", slow)], modality="audio"))

    assert record.committed and record.items == 4 and record.decode_groups == [[0], [1]]
    for rows in rows_per_model(output).values():
        windows = {}
        for r in rows.to_pylist():
            windows.setdefault(Path(r["uri"]).name, []).append(r["segment"])
        assert sorted(windows) == ["broken.wav", "clip-0.wav", "clip-1.wav", "clip-2.wav"]
        assert all(sorted(s) == list(range(len(s))) for s in windows.values())
        assert windows["broken.wav"] == [0] and len(windows["clip-2.wav"]) == 4


def test_a_crash_mid_run_then_the_same_command_labels_each_item_once_per_model(tmp_path, ray_tmp):
    """The driver and its Ray are SIGKILLed right after the second shard's commit; the same command
    labels only what no shard committed, for both models."""
    make_images(tmp_path / "in")
    output = tmp_path / "out"
    args = ["run", "--input", str(tmp_path / "in"), "--output", str(output), "--shard-size", "4",
            "--batch-size", "4", "--max-error-rate", "0.5", "--num-classes", "3",
            "--model", "ghostnet_050", "--weights", "random", "--model", "ghostnet_100", "--weights", "random"]
    first = cli(*args, env={"TMPDIR": ray_tmp, FAILPOINTS: "shard.after-commit=kill@2"}, start_new_session=True)
    first.communicate(timeout=900)
    [dead] = run_records(str(output))
    assert first.returncode == -signal.SIGKILL and committed(str(output)).num_rows == 2 * 8

    second = cli(*args, env={"TMPDIR": ray_tmp}, start_new_session=True)
    _, err = second.communicate(timeout=900)

    assert second.returncode == 0, err[-3000:]
    table = committed(str(output))
    per = table.group_by(["uri", "model", "weights_sha256"]).aggregate([("run_id", "count")])
    assert per.num_rows == 2 * IMAGES and set(per["run_id_count"].to_pylist()) == {1}, "exactly once per model"
    rerun = next(r for r in run_records(str(output)) if r.run_id != dead.run_id)
    assert [(m.items, m.items_skipped) for m in rerun.models] == [(IMAGES - 8, 8)] * 2
    stats = committed(str(output), "channel_stats").group_by(["model", "layer", "channel"]).aggregate(
        [("count", "sum")])
    assert set(stats["count_sum"].to_pylist()) == {IMAGES - 1}


@pytest.mark.usefixtures("ray_local")  # Ray starts while the models are checked
def test_weights_that_fail_to_load_are_a_usage_error_and_nothing_is_written(tmp_path):
    make_images(tmp_path / "in")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    output = tmp_path / "out"
    with pytest.raises(Exception) as raised:
        run(config(tmp_path / "in", output, [ModelEntry("ghostnet_050", "random"),
                                             ModelEntry("ghostnet_050", str(bad))]))
    assert isinstance(raised.value, UsageError | ghostnet.WeightsError), raised.value
    assert not output.exists(), "nothing was written"


@pytest.mark.usefixtures("ray_local")  # Ray starts while the models are checked
def test_models_that_do_not_fit_the_actor_are_refused_before_anything_starts(tmp_path):
    make_images(tmp_path / "in")
    output = tmp_path / "out"
    entries = [ModelEntry("ghostnet_100", "random"), ModelEntry("ghostnetv2_160", "random")]
    with pytest.raises(UsageError, match=r"need about .* GiB on one model actor at --batch-size 1000000"):
        run(config(tmp_path / "in", output, entries).replace(batch_size=1_000_000))
    assert not output.exists()


def test_the_dry_run_plans_per_model_and_shows_the_decode_groups(tmp_path):
    """An output where model A labeled the first 8 images: a dry run of A, B and a 160 px C says A has
    the other 4 to label, B and C all 12, and that C decodes apart; nothing is written."""
    make_images(tmp_path / "in")
    a = weights(tmp_path, "ghostnet_050", seed=1)
    entries = [ModelEntry("ghostnet_050", a), ModelEntry("ghostnet_100", "random"),
               ModelEntry("ghostnet_050", weights(tmp_path, "ghostnet_050", seed=3, input_size=160), role="candidate")]
    output = tmp_path / "out"
    layout = OutputLayout.of(str(output))
    done = sorted(str(p) for p in (tmp_path / "in").glob("img-*.jpg"))[:8]
    identity = RunIdentity.single("earlier", "2026-11-30", "ghostnet_050", ModelSpec("ghostnet_050", a).pinned()
                                  .identity(), reprocess=False)
    listed = {str(p): p.stat() for p in (tmp_path / "in").iterdir()}
    rows = pa.Table.from_pylist([{  # keyed as the listing keys a local file: its mtime and size
        "uri": uri, "etag": f"mtime-{int(listed[uri].st_mtime * 1e9)}", "size_bytes": listed[uri].st_size,
        "modality": "image", "segment": 0, "status": "ok", "model": "ghostnet_050",
        "weights_sha256": identity.models[0].weights_sha256, "run_id": "earlier",
        "processed_at": datetime(2026, 11, 30, tzinfo=timezone.utc)} for uri in done], schema=PREDICTIONS)
    commit.write_and_commit(layout, open_tables(layout), identity, Attempt.new("earlier"), shard=0, digest="0" * 16,
                            rows=rows, stats=CHANNEL_STATS.empty_table())
    before = sorted(p.relative_to(output) for p in output.rglob("*"))

    [plan] = plan_by_modality(config(tmp_path / "in", output, entries))

    assert (plan.items_listed, plan.already_labeled, plan.to_label) == (IMAGES, 0, IMAGES)
    assert [(m.model, m.already_labeled, m.to_label, m.decode_group, m.role) for m in plan.models] == [
        ("ghostnet_050", 8, IMAGES - 8, 0, None), ("ghostnet_100", 0, IMAGES, 0, None),
        ("ghostnet_050", 0, IMAGES, 1, "candidate")]
    assert sorted(p.relative_to(output) for p in output.rglob("*")) == before, "a dry run writes nothing"
