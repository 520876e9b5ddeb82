import numpy as np
import pytest
import torch
from PIL import Image

from nas2deploy.data import open_dataset, split_train_val
from nas2deploy.data.synthetic import ShapesDataset
from nas2deploy.errors import UserError


def test_synthetic_is_deterministic_and_balanced():
    a, b = ShapesDataset(200, 32, seed=3), ShapesDataset(200, 32, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, ShapesDataset(200, 32, seed=4).images)
    assert a.images.shape == (200, 3, 32, 32) and set(a.labels.tolist()) == set(range(10))


def test_synthetic_small_draws_the_same_classes_smaller():
    easy, small = open_dataset("synthetic:40"), open_dataset("synthetic-small:40")
    assert len(small.train) == 40 and len(small.test) == 10 and small.num_classes == 10
    assert torch.equal(easy.train.labels, small.train.labels)  # the label is drawn first, the radius after
    assert not torch.equal(easy.train.images, small.train.images)
    with pytest.raises(UserError, match="'synthetic-small:N' with N >= 10"):
        open_dataset("synthetic-small:x")


def test_train_val_split_is_seeded_and_disjoint():
    ds = ShapesDataset(50, 16)
    tr, va = split_train_val(ds, 0.2, seed=1)
    assert len(va) == 10 and len(tr) == 40 and not set(tr.indices) & set(va.indices)
    assert split_train_val(ds, 0.2, seed=1)[1].indices == va.indices


def _cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    np.concatenate([labels[:, None], pixels], 1).tofile(path)
    return labels, pixels


def test_cifar10_binary_layout(tmp_path):
    labels, pixels = _cifar_batch(tmp_path / "data_batch_1.bin", 12, 0)
    _cifar_batch(tmp_path / "data_batch_2.bin", 8, 1)
    _cifar_batch(tmp_path / "test_batch.bin", 5, 2)
    splits = open_dataset(str(tmp_path))
    assert len(splits.train) == 20 and len(splits.test) == 5 and splits.num_classes == 10
    x, y = splits.train[3]
    assert y == labels[3] and x.shape == (3, 32, 32)
    red = (pixels[3, :1024].reshape(32, 32) / 255 - 0.4914) / 0.2470
    np.testing.assert_allclose(x[0].numpy(), red, atol=1e-5)


def test_cifar10_missing_and_corrupt_parts(tmp_path):
    _cifar_batch(tmp_path / "data_batch_1.bin", 4, 0)
    with pytest.raises(UserError, match="test_batch.bin is missing"):
        open_dataset(str(tmp_path))
    (tmp_path / "test_batch.bin").write_bytes(b"\x01" * 100)
    with pytest.raises(UserError, match="test_batch.bin: not a CIFAR-10 binary batch"):
        open_dataset(str(tmp_path))


def test_image_folder_with_train_and_val(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), colour).save(folder / f"{i}.png")
    splits = open_dataset(str(tmp_path), image_size=16)
    assert splits.num_classes == 2 and len(splits.train) == 6 and len(splits.test) == 4
    x, y = splits.train[0]
    assert x.shape == (3, 16, 16) and y == 0 and x[0].mean() > x[2].mean()  # cat is red


def test_bad_data_paths(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        open_dataset(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="unknown format"):
        open_dataset(str(tmp_path))
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "cls" / "other.png").write_bytes(b"not a png either")
    splits = open_dataset(str(tmp_path))  # files are listed at open, decoded when read
    with pytest.raises(UserError, match=r"(broken|other).png: cannot read the image"):
        splits.train.get(0, 0)
    with pytest.raises(UserError, match=r"(broken|other).png: cannot read the image"):
        splits.test[0]
