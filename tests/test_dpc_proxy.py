"""The DPC proxy: the frozen backbone's features cached on disk (exact, resumable, never stale)
and cells trained on them with early stopping."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from nas2deploy.data import open_dataset
from nas2deploy.errors import UserError
from nas2deploy.nets import load_arch
from nas2deploy.spaces.dpc import proxy
from nas2deploy.spaces.dpc.proxy import FeatureCache, build_cache, train_cell
from nas2deploy.train import save_weights

DATA = "seg-synthetic:12"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("proxy")
    data = open_dataset(DATA, 64)
    net = dataclasses.replace(load_arch("dpc-mnv2").at_input(64, 64), num_classes=data.num_classes, name="dpc-64")
    torch.manual_seed(0)
    save_weights(net.build(), tmp / "w.pt")
    return tmp, net, data


def test_the_cache_holds_the_backbones_features_and_the_masks(setup):
    tmp, net, data = setup
    cache = build_cache(net, tmp / "w.pt", data, DATA, tmp / "cache")
    assert cache.features["train"].shape == (12, 320, 4, 4) and cache.features["train"].dtype == np.float16
    assert cache.features["val"].shape[0] == len(data.test)
    from nas2deploy.train import load_weights

    backbone = load_weights(net, tmp / "w.pt").backbone.eval()
    x, mask = data.train[5]
    with torch.no_grad():
        want = backbone(x[None])[0].numpy()
    np.testing.assert_allclose(cache.features["train"][5].astype(np.float32), want, rtol=2e-3, atol=2e-3)  # fp16
    assert np.array_equal(cache.labels["train"][5], mask.numpy())
    assert build_cache(net, tmp / "w.pt", data, DATA, tmp / "cache").features["train"].shape[0] == 12  # reopened


class Counting(torch.utils.data.Dataset):
    """A dataset that counts the samples read from it."""

    def __init__(self, dataset):
        self.dataset, self.count = dataset, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        self.count += 1
        return self.dataset[i]


def test_a_killed_build_resumes_where_it_stopped(setup, tmp_path, monkeypatch):
    _, net, data = setup
    weights = setup[0] / "w.pt"
    monkeypatch.setattr(proxy, "CHUNK", 4)
    digest, chunks = proxy.chunk_digest, []

    def counted(*args):
        chunks.append(1)
        if len(chunks) == 3 and killing:
            raise KeyboardInterrupt  # the process dies after its second chunk is on disk
        return digest(*args)

    monkeypatch.setattr(proxy, "chunk_digest", counted)
    killing = True
    with pytest.raises(KeyboardInterrupt):
        build_cache(net, weights, data, DATA, tmp_path / "c")
    assert json.loads((tmp_path / "c" / "cache.json").read_text())["splits"]["train"]["done"] == 8
    with pytest.raises(UserError, match="split train holds 8 of 12 samples; build it again"):
        FeatureCache.open(tmp_path / "c")
    killing, said = False, []
    reads = Counting(data.train)
    resumed = build_cache(net, weights, dataclasses.replace(data, train=reads), DATA, tmp_path / "c", progress=said.append)
    assert reads.count == 4  # only the missing chunk was computed
    fresh = build_cache(net, weights, data, DATA, tmp_path / "fresh")
    assert said[0].startswith("features of train: 12/12 (")  # the heartbeat: items, elapsed, ETA
    assert np.array_equal(resumed.features["train"], fresh.features["train"])
    assert np.array_equal(resumed.labels["val"], fresh.labels["val"])


def test_a_cache_of_other_weights_or_data_is_refused_by_name(setup, tmp_path):
    tmp, net, data = setup
    build_cache(net, tmp / "w.pt", data, DATA, tmp_path / "c")
    torch.manual_seed(1)
    save_weights(net.build(), tmp_path / "other.pt")
    with pytest.raises(UserError, match="was built from other weights: its features do not describe"):
        build_cache(net, tmp_path / "other.pt", data, DATA, tmp_path / "c")
    more = open_dataset("seg-synthetic:16", 64)
    with pytest.raises(UserError, match="built from other data, training samples: its features"):
        build_cache(net, tmp / "w.pt", more, "seg-synthetic:16", tmp_path / "c")
    doc = json.loads((tmp_path / "c" / "cache.json").read_text())
    doc["splits"]["train"]["count"] = -3
    (tmp_path / "c" / "cache.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"field splits.train.count must be an integer in \[1, 100000000\]"):
        FeatureCache.open(tmp_path / "c")


def test_a_cell_trains_on_the_cache_and_stops_early(setup):
    tmp, net, data = setup
    cache = build_cache(net, tmp / "w.pt", data, DATA, tmp / "cache")
    score = train_cell(net, cache, epochs=3, batch_size=4)
    assert 0.0 <= score.miou <= 1.0 and score.epochs == 3 and score.seconds > 0
    frozen = train_cell(net, cache, epochs=20, batch_size=4, lr=0.0, patience=2)  # nothing changes: no better score
    assert frozen.epochs == 3
    wrong = dataclasses.replace(net, num_classes=net.num_classes + 1)
    with pytest.raises(UserError, match="holds 6-class labels, the cell predicts 7"):
        train_cell(wrong, cache)


def test_a_classification_backbones_weights_seed_the_cache(setup, tmp_path):
    """The usual start: a backbone trained as a classification chain, its tail dropped, its
    layers run at output stride 16 with the same tensors."""
    from nas2deploy.spaces.dpc.proxy import backbone_module

    _, net, data = setup
    torch.manual_seed(2)
    chain = net.backbone.build()
    save_weights(chain, tmp_path / "chain.pt")
    backbone = backbone_module(net, tmp_path / "chain.pt")
    assert torch.equal(backbone[3].body[0].weight, chain[3].body[0].weight)  # the same tensors, layer by layer
    assert len(backbone) < len(chain)  # the tail (conv 1x1 and classifier) dropped
    cache = build_cache(net, tmp_path / "chain.pt", data, DATA, tmp_path / "c")
    assert cache.features["train"].shape == (12, 320, 4, 4)
    (tmp_path / "bad.pt").write_bytes(b"not weights")
    with pytest.raises(UserError, match="bad.pt: not a PyTorch weights file"):
        build_cache(net, tmp_path / "bad.pt", data, DATA, tmp_path / "c2")


def test_any_dpc_network_on_the_backbone_seeds_the_cache(setup, tmp_path):
    """The published cell trained end to end gives the backbone; the cache is built for another cell."""
    from nas2deploy.nets.dpc import Branch
    from nas2deploy.spaces.dpc.proxy import backbone_module

    tmp, net, data = setup
    other = dataclasses.replace(net, cell=(Branch("conv1x1", -1),), name="one-branch")
    backbone = backbone_module(other, tmp / "w.pt")
    trained = torch.load(tmp / "w.pt", weights_only=True)
    assert torch.equal(backbone[5].body[0].weight, trained["backbone.5.body.0.weight"])
    torch.save({**trained, "backbone.5.body.0.weight": torch.zeros(3)}, tmp_path / "odd.pt")
    with pytest.raises(UserError, match=r"do not match the backbone of one-branch: 5.body.0.weight \(3,\) vs"):
        backbone_module(other, tmp_path / "odd.pt")


def _corrupt(folder, how):
    """One of the ways a cache on disk is damaged or tampered with."""
    train, val = folder / "train.features", folder / "val.features"
    if how == "truncated":
        with open(train, "r+b") as fh:
            fh.truncate(train.stat().st_size // 2)
    elif how == "swapped":
        train_bytes, val_bytes = train.read_bytes(), val.read_bytes()
        train.write_bytes(val_bytes[:len(train_bytes)].ljust(len(train_bytes), b"\0"))
    elif how in ("nan", "inf", "random"):
        feats = np.memmap(train, np.float16, "r+")
        feats[7] = {"nan": np.nan, "inf": np.inf, "random": 0.25}[how]
        feats.flush()
    elif how == "labels":
        labels = np.memmap(folder / "train.labels", np.uint8, "r+")
        labels[3] = 200
        labels.flush()
    elif how == "count":
        doc = json.loads((folder / "cache.json").read_text())
        doc["splits"]["train"]["count"] = doc["splits"]["train"]["done"] = 11
        (folder / "cache.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("how", ["truncated", "swapped", "nan", "inf", "random", "labels", "count"])
def test_a_damaged_cache_is_refused_never_read(setup, tmp_path, how):
    tmp, net, data = setup
    build_cache(net, tmp / "w.pt", data, DATA, tmp_path / "c")
    _corrupt(tmp_path / "c", how)
    with pytest.raises(UserError, match="feature cache .*(digest mismatch|truncated or replaced|must be)"):
        FeatureCache.open(tmp_path / "c")
    with pytest.raises(UserError, match="feature cache"):  # nor resumed into
        build_cache(net, tmp / "w.pt", data, DATA, tmp_path / "c")


def test_a_cache_file_linked_elsewhere_is_never_written(setup, tmp_path):
    tmp, net, data = setup
    victim = tmp_path / "victim"
    victim.write_bytes(b"123456789")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "train.features").symlink_to(victim)
    (tmp_path / "c" / "val.labels").symlink_to(tmp_path / "absent")  # dangling: would create a file outside
    with pytest.raises(UserError, match="symbolic link"):
        build_cache(net, tmp / "w.pt", data, DATA, tmp_path / "c")
    assert victim.read_bytes() == b"123456789" and not (tmp_path / "absent").exists()
    (tmp_path / "c" / "train.features").unlink()
    (tmp_path / "c" / "val.labels").unlink()
    import os

    os.link(victim, tmp_path / "c" / "train.features")
    with pytest.raises(UserError, match="2 names"):
        build_cache(net, tmp / "w.pt", data, DATA, tmp_path / "c")
    assert victim.read_bytes() == b"123456789"


def test_a_cache_the_disk_cannot_hold_is_refused_before_it_is_written(setup, tmp_path, monkeypatch):
    tmp, net, data = setup
    from nas2deploy import fileio

    monkeypatch.setattr(fileio, "free_bytes", lambda path: 1000)
    with pytest.raises(UserError, match=r"no space left on its filesystem to write [\d,]+ bytes \(1,000 free\)"):
        build_cache(net, tmp / "w.pt", data, DATA, tmp_path / "c")
    assert not (tmp_path / "c" / "train.features").exists()


def test_labels_outside_the_classes_are_refused_as_they_are_cached(setup, tmp_path):
    tmp, net, data = setup

    class Mislabelled(torch.utils.data.Dataset):
        def __len__(self):
            return len(data.train)

        def __getitem__(self, i):
            x, mask = data.train[i]
            return x, torch.full_like(mask, 200) if i == 5 else mask

    bad = dataclasses.replace(data, train=Mislabelled())
    with pytest.raises(UserError, match=r"labels of train samples 0-7 lie outside the \d+ classes"):
        build_cache(net, tmp / "w.pt", bad, DATA, tmp_path / "c")
