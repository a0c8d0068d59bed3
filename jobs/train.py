"""``ghostnet-pipeline train`` / ``python -m jobs.train``: train a tiny demo model (`demo.train`).

Regenerating the shipped models (5 to 10 minutes each on one shared CPU core):

    ghostnet-pipeline train --modality image --out ghostnet/data/demo_image.safetensors --seed 1 \\
        --lr 0.005 --steps 1600 --samples 4000 --batch-size 64
    ghostnet-pipeline train --modality audio --out ghostnet/data/demo_audio.safetensors --seed 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs._command import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modality", choices=("image", "audio"), required=True)
    parser.add_argument("--out", required=True, metavar="FILE.safetensors", help="where the weights go")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed for data and weights (default 0)")
    parser.add_argument("--steps", type=int, default=300, metavar="N", help="optimizer steps (default 300)")
    parser.add_argument("--samples", type=int, default=2400, metavar="N", help="training samples (default 2400)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="batch size (default 32)")
    parser.add_argument("--lr", type=float, default=3e-3, metavar="F", help="peak learning rate (default 0.003)")
    # One thread by default: on a shared 2-core machine two torch threads ran 15x slower than one.
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="torch CPU threads (default 1)")


def execute(args: argparse.Namespace) -> int:
    from demo.train import train  # torch: imported when a model is trained, not when the CLI starts

    result = train(args.modality, Path(args.out), seed=args.seed, steps=args.steps, sample_count=args.samples,
                   batch_size=args.batch_size, lr=args.lr, threads=args.threads)
    print(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB) in {result.seconds:.0f} s")
    print(f"accuracy: {result.accuracy:.3f} on {result.eval_samples} fresh samples")
    return 0


COMMAND = Command(
    name="train",
    help="train a tiny demo model on generated samples",
    description="Train a tiny demo model on generated samples, reproducibly from its seed.",
    example=__doc__.split("\n\n", 1)[1],
    add_arguments=add_arguments,
    handler=execute,
)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
