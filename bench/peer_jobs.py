"""The peers' programs for bench/peers.py, each written the way its own documentation teaches.

- ``raydata``: Ray Data's batch-inference guide: ``ray.data.read_images`` -> ``map_batches`` with a
  preprocessing function -> ``map_batches`` with a callable class that loads the model once in
  ``__init__`` (an actor pool) -> ``write_parquet``. Runs in the project's venv (Ray 2.60).
- ``daft``: Daft's docs: ``daft.from_glob_path`` -> ``download().decode_image()`` -> a ``@daft.cls``
  class whose ``@daft.method.batch`` runs the model -> ``write_parquet``. Runs in a venv of its
  own (``/work/peers-venv``: Daft and the same torch, torchvision and timm as the project's lock).

Both use timm's ``ghostnet_100`` with the weights file bench/peers.py gives (the project's files
are timm's state_dict), eager and in eval mode as a user of timm writes it, and the same
preprocessing as ours: bicubic resize of the shorter side to 256, centre crop 224, ImageNet mean
and std (torchvision's transforms on the decoded image). Each writes ``path`` and ``top5`` (class
ids) to Parquet. Nothing here imports the project.

    python bench/peer_jobs.py raydata|daft --input DIR --output DIR --weights FILE [--batch-size 32]
        [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

MODEL = "ghostnet_100"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def transform():
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])


def load_model(weights: str):
    import timm
    from safetensors.torch import load_file

    model = timm.create_model(MODEL, pretrained=False)
    model.load_state_dict(load_file(weights))
    return model.eval()


def raydata(args: argparse.Namespace) -> None:
    import numpy as np
    import ray
    import torch
    from PIL import Image

    # A private temp dir and a loopback address: other Rays share this machine (not in the guide).
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.2", logging_level="ERROR",
             _temp_dir=tempfile.mkdtemp(prefix="peer-ray-", dir="/tmp"))
    preprocess = transform()

    def preprocess_batch(batch: dict) -> dict:
        images = [preprocess(Image.fromarray(image)).numpy() for image in batch["image"]]
        return {"path": batch["path"], "image": np.stack(images)}

    class Classifier:
        def __init__(self) -> None:
            self.model = load_model(args.weights).to(args.device)

        def __call__(self, batch: dict) -> dict:
            with torch.inference_mode():
                logits = self.model(torch.as_tensor(batch["image"], device=args.device))
            return {"path": batch["path"], "top5": logits.topk(5, dim=1).indices.cpu().numpy()}

    resources = ray.cluster_resources()
    if args.device == "cuda":  # the guide's GPU form: one actor per GPU
        pool = {"compute": ray.data.ActorPoolStrategy(size=int(resources["GPU"])), "num_gpus": 1}
    else:  # one CPU per actor; the rest of the machine decodes and preprocesses
        pool = {"compute": ray.data.ActorPoolStrategy(size=max(1, int(resources["CPU"]) - 1)), "num_cpus": 1}
    (
        ray.data.read_images(args.input, mode="RGB", include_paths=True)
        .map_batches(preprocess_batch, batch_size=args.batch_size)
        .map_batches(Classifier, batch_size=args.batch_size, **pool)
        .write_parquet(args.output)
    )
    ray.shutdown()


def daft_job(args: argparse.Namespace) -> None:
    import daft
    import numpy as np
    import torch
    from PIL import Image

    preprocess = transform()

    @daft.cls(gpus=1 if args.device == "cuda" else 0)
    class Classifier:
        def __init__(self) -> None:
            self.model = load_model(args.weights).to(args.device)

        @daft.method.batch(return_dtype=daft.DataType.list(daft.DataType.int64()), batch_size=args.batch_size)
        def __call__(self, images: daft.Series) -> list:
            batch = torch.stack([preprocess(Image.fromarray(np.asarray(image))) for image in images.to_pylist()])
            with torch.inference_mode():
                return self.model(batch.to(args.device)).topk(5, dim=1).indices.tolist()

    df = daft.from_glob_path(os.path.join(args.input, "*.jpg"))
    df = df.with_column("image", df["path"].download().decode_image(mode="RGB"))
    df = df.with_column("top5", Classifier()(df["image"]))
    df.select("path", "top5").write_parquet(args.output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=("raydata", "daft"))
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    started = time.time()
    (raydata if args.system == "raydata" else daft_job)(args)
    print(json.dumps({"system": args.system, "seconds_in_main": round(time.time() - started, 3)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
