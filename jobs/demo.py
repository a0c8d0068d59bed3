"""``ghostnet-pipeline demo``: the embedded default.

Generates fresh pictures and sounds (`demo.samples`, a seed the shipped models never trained
on), labels them on a private local Ray with the two demo models shipped in the package, and
checks the labels against the truth in the file names. Needs no network, no cluster and no
object store.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads

from demo import samples
from ghostnet.pretrained import PRETRAINED, pretrained_path
from jobs._command import Command
from jobs._summaries import print_summary
from pipeline import storage
from pipeline.config import RunConfig
from pipeline.delta import open_table
from pipeline.errors import InternalError, UsageError
from pipeline.kinds import AUTO, Modality
from pipeline.record import RunRecord
from pipeline.run import run_by_modality
from pipeline.tables import OutputLayout

MODALITIES = ("image", "audio", "both")
NOTE = (
    "note: these are demo models trained in minutes on synthetic samples (8 kinds of shapes and textures, "
    "8 kinds of synthesized sounds); they know nothing about real photos or recordings. For real ImageNet "
    "labels use --weights hf-hub:timm/ghostnet_100.in1k where the hub is reachable."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", metavar="DIR", help="where samples and results go (default: a temp dir)")
    parser.add_argument("--modality", choices=MODALITIES, default="both", help="what to generate (default both)")
    parser.add_argument("--count", type=int, default=48, metavar="N", help="samples per modality (default 48)")
    parser.add_argument("--seed", type=int, default=2026, metavar="N", help="sample seed (default 2026)")


def write_samples(folder: Path, modality: str, count: int, seed: int) -> None:
    if modality in ("image", "both"):
        samples.write_images(folder / "pictures", count, seed)
        print(f"wrote {count} pictures to {folder / 'pictures'}")
    if modality in ("audio", "both"):
        samples.write_sounds(folder / "sounds", count, seed + 1)
        print(f"wrote {count} sound clips to {folder / 'sounds'}")


def run_config(samples_dir: Path, output: Path, modality: str) -> RunConfig:
    """The run of the shipped models; `both` is one `--modality auto` run over the mixed folder."""
    image, audio = PRETRAINED["demo-image"], PRETRAINED["demo-audio"]
    main = audio if modality == "audio" else image
    both = modality == "both"
    return RunConfig(
        inputs=(str(samples_dir),), output=str(output), model=main.architecture,
        weights=str(pretrained_path(main.name)), weights_sha256=main.sha256,
        modality=AUTO if modality == "both" else Modality(modality), reprocess=True, torch_threads=1,
        # Logical CPUs for the private Ray: on a 2-core machine the model actor and the decode
        # tasks would otherwise wait on each other's reservations.
        num_cpus=max(4, os.cpu_count() or 1),
        audio_model=audio.architecture if both else None,
        audio_weights=str(pretrained_path(audio.name)) if both else "random",
        audio_weights_sha256=audio.sha256 if both else None,
    )


def predictions(output: Path, record: RunRecord) -> pa.Table:
    """The committed rows of one run, read through the predictions table's log."""
    uri = OutputLayout.of(str(output)).table("predictions")
    table = open_table(uri, "predictions")
    if table is None:
        raise InternalError(f"run {record.run_id} committed, but {output} has no predictions table")
    columns = ["uri", "modality", "segment", "status", "label"]
    dataset = table.to_pyarrow_dataset(filesystem=storage.arrow_filesystem(uri))
    return dataset.to_table(columns=columns, filter=pads.field("run_id") == record.run_id)


def accuracy(table: pa.Table) -> dict[str, float]:
    """Per-item accuracy for pictures; for sounds both per window and per file (majority label)."""
    rows = table.to_pylist()
    hits = [row["label"] == samples.truth_of(row["uri"]) for row in rows]
    if rows[0]["modality"] == "image":
        return {"items": sum(hits) / len(hits)}
    votes: dict[str, Counter[str]] = {}
    for row in rows:
        votes.setdefault(row["uri"], Counter())[row["label"]] += 1
    majority = [c.most_common(1)[0][0] == samples.truth_of(uri) for uri, c in votes.items()]
    return {"windows": sum(hits) / len(hits), "files": sum(majority) / len(majority)}


def report(output: Path, record: RunRecord) -> dict[str, float]:
    print_summary(record, str(output))
    table = predictions(output, record)
    scores = accuracy(table)
    modality = table["modality"][0].as_py()
    if modality == "image":
        print(f"  accuracy: {scores['items']:.2f} ({table.num_rows} items)")
    else:
        files = len(set(table["uri"].to_pylist()))
        print(f"  accuracy: {scores['files']:.2f} ({files} items, majority label of each file's windows); "
              f"per window {scores['windows']:.2f} ({table.num_rows} windows)")
    return {f"{modality}_{k}": v for k, v in scores.items()}


QUERIES = (
    "SELECT modality, status, count(*) AS n FROM predictions GROUP BY ALL ORDER BY ALL",
    "SELECT modality, label, count(*) AS n, round(avg(score), 3) AS mean_score FROM predictions "
    "GROUP BY ALL ORDER BY n DESC",
    "SELECT uri, segment, label, round(score, 3) AS score FROM predictions ORDER BY score LIMIT 5",
)


def cli_command() -> list[str]:
    """How to call this CLI from a shell: the script beside this Python (a venv's), else the module."""
    script = Path(sys.executable).parent / "ghostnet-pipeline"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "jobs.cli"]


def print_queries(output: Path) -> None:
    print("\nquery it (views: predictions, channel_stats, runs, channel_drift; committed runs only):")
    for sql in QUERIES:
        print("  " + shlex.join([*cli_command(), "query", str(output), sql]))


def run_demo(root: Path, modality: str = "both", count: int = 48, seed: int = 2026) -> dict[str, float]:
    """Generate, label and score; returns the accuracies, e.g. {"image_items": 0.98, "audio_files": 1.0}."""
    if count < 1:
        raise UsageError(f"--count must be at least 1, got {count}")
    samples_dir, output = root / "samples", root / "output"
    write_samples(samples_dir, modality, count, seed)
    scores: dict[str, float] = {}
    for record in run_by_modality(run_config(samples_dir, output, modality)):
        scores |= report(output, record)
    print_queries(output)
    print(f"\n{NOTE}")
    return scores


def demo(args: argparse.Namespace) -> int:
    root = Path(args.output or tempfile.mkdtemp(prefix="ghostnet-demo-")).resolve()
    run_demo(root, args.modality, args.count, args.seed)
    return 0


COMMAND = Command(
    name="demo",
    help="label generated pictures and sounds on a local Ray with the shipped demo models",
    description="Generate pictures and sounds, label them on a private local Ray with the shipped demo models, "
                "print accuracy against the known truth and where the Parquet is.",
    example="example:\n  ghostnet-pipeline demo --modality image --count 24 --output demo-output",
    add_arguments=add_arguments,
    handler=demo,
)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
