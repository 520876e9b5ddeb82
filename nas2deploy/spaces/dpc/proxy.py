"""The DPC proxy task as published (paper section 4.1): the backbone frozen, its features on the
data computed once and cached on disk, each candidate cell trained briefly on the cached
features with early stopping, its validation mIoU the cell's score.

**The cache** (a folder): ``cache.json`` and, per split (``train``, and ``val`` from the data's
test split), ``SPLIT.features`` (float16, N x C x h x w) and ``SPLIT.labels`` (uint8, N x H x W),
both memory-mapped, so a proxy trial reads what it needs instead of holding the set in memory.
``cache.json`` records the key (the SHA-256 of the weights file, the backbone, the input size,
the data and its size), how many samples of each split are written and a BLAKE2b digest of each
chunk of ``CHUNK`` samples (its features' and labels' bytes); it is rewritten atomically after
each chunk is flushed, so a killed build resumes at its last chunk. A cache whose key differs
from the one asked for is refused, naming what differs: features of other weights, data or
input size are never used. Opening a cache checks every file's size and every chunk's digest
(a truncated, swapped or edited file is refused, not read), and features are checked finite and
labels within the classes (or ``IGNORE``) as they are written. The files are mapped through
``fileio.mapped_array``: never through a link, allocated in full before the first write.

**A trial** (``train_cell``) builds the network from the backbone's features on (the cell, the
concatenation, the projection, the logits), trains it with SGD on the cached training features
and scores it on the cached validation features after each epoch, stopping after ``patience``
epochs without a better score; the score is the best validation mIoU. Choices the paper leaves
open for a proxy on a CPU (the paper trained each cell 30k iterations at crop 769 with a poly
learning rate of 0.01): plain SGD with momentum 0.9 and a cosine learning rate, batch 8.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from nas2deploy.data import Splits
from nas2deploy.errors import UserError
from nas2deploy.fileio import (atomic_write_json, check_format, mapped_array, read_json, refuse_link, require_space,
                               sha256_file)
from nas2deploy.heartbeat import Heartbeat
from nas2deploy.nets.dpc import DPCModule, DPCNet
from nas2deploy.objective import IGNORE, Score, task_loss
from nas2deploy.train import load_into, read_state_dict
from nas2deploy.validate import MAX_CHANNELS, MAX_CLASSES, MAX_SIDE, Field

CACHE_FORMAT = "nas2deploy.dpc_features"
CACHE_VERSION = 2
#: Samples computed between two flushes of the cache (a kill loses at most this many), and the
#: unit its digests cover.
CHUNK = 32
#: What a feature cache is called in messages.
WHAT = "feature cache"


def _arrays(folder: Path, split: str, meta: dict[str, Any], mode: str) -> tuple[np.memmap, np.memmap]:
    """A split's features and labels, mapped (``mapped_array``) with the shapes ``meta`` records."""
    return (mapped_array(folder / f"{split}.features", np.float16, (meta["count"], *meta["features"]), mode, WHAT),
            mapped_array(folder / f"{split}.labels", np.uint8, (meta["count"], *meta["labels"]), mode, WHAT))


def chunk_digest(features: np.ndarray, labels: np.ndarray) -> str:
    """The digest of one chunk: its features' and its labels' bytes."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(features).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def cache_key(net: DPCNet, weights: str | Path, data: Splits, data_spec: str) -> dict[str, Any]:
    """What the cached features depend on: the weights file's bytes, the backbone, the input
    size, the data (its name and sizes)."""
    return {"weights_sha256": sha256_file(weights), "backbone": net.backbone.to_dict(), "input": list(net.input_shape),
            "data": data_spec, "train": len(data.train), "val": len(data.test)}  # type: ignore[arg-type]


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    names = {"weights_sha256": "weights", "backbone": "backbone", "input": "input size", "data": "data",
             "train": "training samples", "val": "validation samples"}
    return [names.get(k, k) for k in new if old.get(k) != new[k]]


@dataclass
class FeatureCache:
    """An opened cache: each split's features and labels, memory-mapped read-only."""

    folder: Path
    features: dict[str, np.memmap]
    labels: dict[str, np.memmap]
    classes: int
    #: what the features were computed from (``cache_key``): caches built apart compare by it
    key: dict[str, Any]

    @property
    def origin(self) -> str:
        """``key`` as one hash: what a study and a re-ranking journal record of the cache."""
        return hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()

    @staticmethod
    def open(folder: str | Path) -> FeatureCache:
        """The finished cache in ``folder``, every file's size and every chunk's digest checked."""
        folder = Path(folder)
        doc = read_cache_doc(folder / "cache.json")
        features, labels = {}, {}
        for split, meta in doc["splits"].items():
            if meta["done"] != meta["count"]:
                raise UserError(f"feature cache {folder}: split {split} holds {meta['done']} of {meta['count']} samples; "
                                "build it again with the same command to finish it")
            features[split], labels[split] = _arrays(folder, split, meta, "r")
            _check_chunks(folder, split, meta, features[split], labels[split])
        return FeatureCache(folder, features, labels, int(doc["classes"]), doc["key"])


def _check_chunks(folder: Path, split: str, meta: dict[str, Any], features: np.ndarray, labels: np.ndarray) -> None:
    """Refuse a split whose written chunks differ from the digests ``cache.json`` records."""
    for n, expected in enumerate(meta["chunks"]):
        rows = slice(n * CHUNK, min(meta["done"], (n + 1) * CHUNK))
        if chunk_digest(features[rows], labels[rows]) != expected:
            raise UserError(f"feature cache {folder}: samples {rows.start}-{rows.stop - 1} of {split}.features or "
                            f"{split}.labels differ from what was written (digest mismatch); the cache was changed: "
                            "delete the cache folder and build it again")


def read_cache_doc(path: Path) -> dict[str, Any]:
    """``cache.json``, every number checked: the splits' counts, how many are written, the
    shapes of their features and labels, the classes."""
    doc = Field(check_format(read_json(path, "feature cache"), path, CACHE_FORMAT, CACHE_VERSION, "feature cache"),
                f"feature cache {path}", "delete the cache folder and build it again")
    splits = {}
    for split in ("train", "val"):
        f = doc["splits"][split]
        count = f["count"].int(1, 10**8)
        c, h, w = f["features"].list(min_len=3, max_len=3)
        height, width = f["labels"].list(min_len=2, max_len=2)
        done = f["done"].int(0, count)
        chunks = f["chunks"].list(min_len=math.ceil(done / CHUNK), max_len=math.ceil(done / CHUNK))
        splits[split] = {"count": count, "done": done,
                         "features": [c.int(1, MAX_CHANNELS), h.int(1, MAX_SIDE), w.int(1, MAX_SIDE)],
                         "labels": [height.int(1, MAX_SIDE), width.int(1, MAX_SIDE)],
                         "chunks": [d.hexdigest(32, "chunk digest") for d in chunks]}
    return {**doc.object(), "splits": splits, "classes": doc["classes"].int(1, MAX_CLASSES), "key": doc["key"].object()}


def build_cache(net: DPCNet, weights: str | Path, data: Splits, data_spec: str, folder: str | Path,
                batch_size: int = 8, progress: Callable[[str], None] | None = None) -> FeatureCache:
    """Compute the frozen backbone's features of ``data`` into ``folder`` (resuming a build the
    same key left unfinished), and open the cache."""
    folder = refuse_link(folder)
    data.require_fit(net)  # task, classes and the input's height and width
    key = cache_key(net, weights, data, data_spec)
    info = folder / "cache.json"
    doc: dict[str, Any] | None = None
    if info.exists():
        doc = read_cache_doc(info)
        if doc["key"] != key:
            raise UserError(f"feature cache {folder} was built from other {', '.join(_differences(doc['key'], key))}: "
                            "its features do not describe this backbone on this data; give another folder")
    backbone = backbone_module(net, weights).eval()
    folder.mkdir(parents=True, exist_ok=True)
    c, h, w = net.features()
    splits = {"train": data.train, "val": data.test}
    if doc is None:
        doc = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "classes": data.num_classes,
               "splits": {s: {"count": len(d), "done": 0, "features": [c, h, w],  # type: ignore[arg-type]
                              "labels": list(net.input_shape[1:]), "chunks": []} for s, d in splits.items()}}
        needed = sum(m["count"] * (2 * c * h * w + math.prod(m["labels"])) for m in doc["splits"].values())
        require_space(folder, needed)  # both splits, before the first is allocated
        for split, meta in doc["splits"].items():  # allocated up front, so a resumed build writes into them
            for array in _arrays(folder, split, meta, "w+"):
                array.flush()
        atomic_write_json(info, doc)
    for split, dataset in splits.items():
        _fill(split, dataset, doc, folder, backbone, batch_size, progress)
    return FeatureCache.open(folder)


def backbone_module(net: DPCNet, weights: str | Path) -> nn.Module:
    """``net``'s backbone at output stride 16 with the weights of ``weights`` (``load_backbone``)."""
    return load_backbone(DPCModule(net, affine=True).backbone, net, weights)


def load_backbone(backbone: nn.Sequential, net: DPCNet, weights: str | Path) -> nn.Module:
    """Load into ``backbone`` (``net``'s, at output stride 16) the weights of ``weights``: a
    state dict of any DPC network on this backbone (its ``backbone.*`` tensors; the cell may
    differ), or of the backbone as a classification chain (a backbone trained on
    classification, the usual start: its layers keep their shapes at output stride 16, and its
    tail is dropped). The file is read safely and the tensors checked one by one
    (``read_state_dict``, ``load_into``)."""
    state = read_state_dict(weights)
    if any(str(k).startswith("backbone.") for k in state):
        part = {str(k).removeprefix("backbone."): v for k, v in state.items() if str(k).startswith("backbone.")}
        return load_into(backbone, part, f"weights {weights}", f"the backbone of {net.name}")
    layer = lambda k: int(str(k).split(".")[0]) if str(k).split(".")[0].isdigit() else -1  # noqa: E731
    part = {k: v for k, v in state.items() if layer(k) < len(backbone)}
    return load_into(backbone, part, f"weights {weights}", f"backbone {net.backbone.name} (a chain's layers, its tail dropped)")


@torch.no_grad()
def _fill(split: str, dataset: Dataset, doc: dict[str, Any], folder: Path, backbone: nn.Module, batch_size: int,
          progress: Callable[[str], None] | None) -> None:
    meta = doc["splits"][split]
    if meta["done"] == meta["count"]:
        return  # complete: ``FeatureCache.open`` checks it, once
    feats, labels = _arrays(folder, split, meta, "r+")
    _check_chunks(folder, split, meta, feats, labels)  # what a resumed build keeps is what it wrote
    classes = doc["classes"]
    beat = Heartbeat(progress, f"features of {split}", meta["count"])
    while meta["done"] < meta["count"]:
        start, end = meta["done"], min(meta["count"], meta["done"] + CHUNK)
        for i in range(start, end, batch_size):
            items = [dataset[j] for j in range(i, min(end, i + batch_size))]
            x = torch.stack([torch.as_tensor(im) for im, _ in items])
            out = backbone(x).numpy().astype(np.float16)
            if not np.isfinite(out).all():
                raise UserError(f"the backbone's features of {split} samples {i}-{i + len(items) - 1} are not finite in "
                                "float16 (a NaN, or a value past 65504): the backbone's weights are corrupt or untrained")
            masks = np.stack([np.asarray(m, dtype=np.int64) for _, m in items])
            if ((masks < 0) | ((masks >= classes) & (masks != IGNORE))).any():
                raise UserError(f"the labels of {split} samples {i}-{i + len(items) - 1} lie outside the {classes} "
                                f"classes (and {IGNORE} = ignore): check the data")
            feats[i:i + len(items)] = out
            labels[i:i + len(items)] = masks.astype(np.uint8)
            beat.tick(i + len(items))
        feats.flush()
        labels.flush()
        meta["chunks"].append(chunk_digest(feats[start:end], labels[start:end]))
        meta["done"] = end
        atomic_write_json(folder / "cache.json", doc)  # after the flush: what it counts is on disk


@dataclass
class ProxyScore:
    miou: float
    epochs: int
    seconds: float


def cell_model(net: DPCNet) -> DPCModule:
    """The network from the backbone's features on: cell, concatenation, projection, logits."""
    model = DPCModule(net, affine=True)
    model.backbone = nn.Sequential()  # the identity: the cache holds the backbone's output
    return model


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(batch_size))


def label_grid(size: int, side: int) -> np.ndarray:
    """The input rows (or columns) that the logits' ``side`` rows sample when they are resized
    to ``size`` with align_corners=True (``Logits``): the nearest pixel to each."""
    return np.rint(np.arange(side) * ((size - 1) / max(side - 1, 1))).astype(np.int64)


def train_cell(net: DPCNet, cache: FeatureCache, epochs: int = 10, batch_size: int = 8, lr: float = 0.02,
               patience: int = 3, seed: int = 0, full_resolution: bool = False,
               progress: Callable[[str], None] | None = None) -> ProxyScore:
    """Train ``net``'s cell on the cached features (module docstring); its best validation mIoU.
    ``progress`` hears a heartbeat of its steps every 10 s.

    The training loss is computed at the logits' own resolution, against the labels sampled
    where the logits' pixels fall (``label_grid``), unless ``full_resolution``: resizing the
    logits to the input and back-propagating through it was most of a trial's time (measured
    by ``benchmarks/dpc.py proxy``, both ways); validation always scores full-resolution masks."""
    if cache.classes != net.num_classes:
        raise UserError(f"feature cache {cache.folder} holds {cache.classes}-class labels, the cell predicts {net.num_classes}")
    torch.manual_seed(seed)
    model = cell_model(net)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=4e-5)
    train_x, train_y = cache.features["train"], cache.labels["train"]
    _, h, w = train_x.shape[1:]
    rows, cols = label_grid(train_y.shape[1], h), label_grid(train_y.shape[2], w)
    steps = max(1, epochs * math.ceil(len(train_x) / batch_size))
    g = torch.Generator().manual_seed(seed)
    best, since, step, ran = -1.0, 0, 0, 0
    beat = Heartbeat(progress, f"{net.name}: steps", steps)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for idx in _batches(len(train_x), batch_size, g):
            picked = np.sort(idx.numpy())
            x = torch.from_numpy(np.asarray(train_x[picked], dtype=np.float32))
            labels = np.asarray(train_y[picked])
            y = torch.from_numpy((labels if full_resolution else labels[:, rows][:, :, cols]).astype(np.int64))
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / steps))
            loss = task_loss("segmentation", model.head(x, resize=full_resolution), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            beat.tick(step)
        ran = epoch + 1
        score = _validate(model, cache, net.num_classes, batch_size)
        if score > best:
            best, since = score, 0
        else:
            since += 1
            if since >= patience:
                break
    return ProxyScore(best, ran, time.perf_counter() - start)


@torch.no_grad()
def _validate(model: nn.Module, cache: FeatureCache, classes: int, batch_size: int) -> float:
    model.eval()
    score = Score("segmentation", classes)
    x_all, y_all = cache.features["val"], cache.labels["val"]
    for idx in _batches(len(x_all), batch_size, None):
        rows = idx.numpy()
        score.add(model(torch.from_numpy(np.asarray(x_all[rows], dtype=np.float32))),
                  torch.from_numpy(np.asarray(y_all[rows], dtype=np.int64)))
    return score.value
