"""How fast the data arrives, on its own: decoding and augmenting images in the search's own
loader (``RankBatches`` + ``batch_loader``: worker processes, pinned memory when a GPU is the
target), with no network. A search whose weight pass runs at fewer images/s than this is
bound by its step; one at about this rate is starved by its data (add ``--workers``). The search
log's ``data_wait_s`` says the same from inside a run.

Without ``--data`` it writes a built-in sample of real-sized files to a temporary folder:
ImageNet-like JPEGs (500x375, quality 90) for the 224 training transform, and Cityscapes-like
PNG pairs (2048x1024 image, label-ID mask) for 512x1024 scale-jitter crops.

    .venv/bin/python benchmarks/data_throughput.py [--workers 0,2] [--batches 8]
    .venv/bin/python benchmarks/data_throughput.py --data /data/imagenet --size 224 --workers 0,8,16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nas2deploy.data import open_dataset
from nas2deploy.data.batches import RankBatches, batch_loader, decoded


def write_sample(root: Path, images: int, pairs: int) -> tuple[Path, Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = root / "imagefolder"
    for i in range(images):
        (folder / f"n{i % 4:08d}").mkdir(parents=True, exist_ok=True)
        smooth = rng.integers(0, 255, (47, 63, 3), dtype=np.uint8)  # photo-like: smooth, then noise
        im = Image.fromarray(smooth).resize((500, 375), Image.Resampling.BICUBIC)
        noisy = np.clip(np.asarray(im, dtype=np.int16) + rng.integers(-12, 12, (375, 500, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"n{i % 4:08d}" / f"{i}.JPEG", quality=90)
    city = root / "cityscapes"
    for split in ("train", "val"):
        for i in range(pairs if split == "train" else 1):
            stem = f"city_{i:06d}_000019"
            (city / "leftImg8bit" / split / "city").mkdir(parents=True, exist_ok=True)
            (city / "gtFine" / split / "city").mkdir(parents=True, exist_ok=True)
            smooth = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
            Image.fromarray(smooth).resize((2048, 1024), Image.Resampling.BICUBIC).save(
                city / "leftImg8bit" / split / "city" / f"{stem}_leftImg8bit.png")
            labels = rng.integers(0, 19, (16, 32), dtype=np.uint8)
            Image.fromarray(labels).resize((2048, 1024), Image.Resampling.NEAREST).save(
                city / "gtFine" / split / "city" / f"{stem}_gtFine_labelTrainIds.png")
    return folder, city


def throughput(spec: str, size: int, crop: tuple[int, int] | None, batch: int, batches: int, workers: int,
               pin: bool) -> float:
    data = open_dataset(spec, size, crop=crop)
    sampler = RankBatches(len(data.train), batch, max_batches=batches)  # type: ignore[arg-type]
    loader = batch_loader(data.train, None, sampler, workers, pin)
    sampler.start(0, 0)
    for _ in decoded(loader):  # warm: workers started, files in the page cache
        pass
    sampler.start(1, 1)
    start, seen = time.perf_counter(), 0
    for x, _ in decoded(loader):
        seen += len(x)
    return seen / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="A dataset (ImageFolder, Cityscapes, VOC); default: the built-in sample.")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--crop", default="", help="Segmentation crop HxW.")
    ap.add_argument("--workers", default="0,2", help="Comma-separated worker counts.")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=4)
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    pin = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            crop = tuple(int(v) for v in args.crop.split("x")) if args.crop else None
            cases = [(args.data, args.size, crop, args.batch)]
        else:
            folder, city = write_sample(Path(tmp), images=args.batch * 2, pairs=16)
            cases = [(str(folder), 224, None, args.batch), (str(city), 512, (512, 1024), 8)]
        for spec, size, crop, batch in cases:
            view = f"{crop[0]}x{crop[1]} crops" if crop else f"{size}px random-resized crops"
            print(f"{spec}: {view}, batch {batch}, {args.batches} batches{', pinned' if pin else ''}")
            for w in workers:
                rate = throughput(spec, size, crop, batch, args.batches, w, pin)  # type: ignore[arg-type]
                print(f"  workers {w:>2}: {rate:8.1f} images/s", flush=True)


if __name__ == "__main__":
    main()
