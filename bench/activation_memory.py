"""The peak memory of one forward pass per byte of its input batch (``pipeline.footprint.ACTIVATION_FACTOR``):
the growth of the process's peak resident memory over ``forward_all`` (logits and channel weights) of
a batch, on the CPU in float32, one thread, each architecture in a fresh process.

    python bench/activation_memory.py [--batch 32] [--out bench/results/activation_memory.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ARCHITECTURES = ("ghostnet_050", "ghostnet_100", "ghostnet_130", "ghostnetv2_100", "ghostnetv2_160",
                 "ghostnetv3_100")


def _status(field: str) -> int:
    found = re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(found.group(1)) * 1024 if found else 0


def measure(name: str, batch: int) -> dict:
    """In this process: the peak growth of one forward pass of ``name`` at ``batch`` rows."""
    import torch

    import ghostnet

    torch.set_num_threads(1)
    model = ghostnet.for_inference(ghostnet.create_model(name)).eval().to(memory_format=torch.channels_last)
    x = torch.zeros(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model.forward_all(x[:1], embeddings=False)
        Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from now
        before = _status("VmRSS")
        model.forward_all(x, embeddings=False)
    peak = _status("VmHWM") - before
    return {"model": name, "batch": batch, "input_bytes": x.numel() * 4, "peak_growth_bytes": peak,
            "factor": round(peak / (x.numel() * 4), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "activation_memory.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batch)))
        return
    root = Path(__file__).resolve().parents[1]
    rows = [json.loads(subprocess.run([sys.executable, __file__, "--one", name, "--batch", str(args.batch)],
                                      capture_output=True, text=True, check=True, cwd=root,
                                      env={"PYTHONPATH": str(root)}).stdout) for name in ARCHITECTURES]
    report = {"benchmark": "peak forward memory per input byte (CPU, float32, one thread)",
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform(),
              "runs": rows, "largest_factor": max(r["factor"] for r in rows)}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
