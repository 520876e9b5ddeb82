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
    splits = open_dataset(str(tmp_path), image_size=128)  # files are listed at open, decoded when read
    with pytest.raises(UserError, match=r"(broken|other).png: cannot read the image"):
        splits.train.get(0, 0)
    with pytest.raises(UserError, match=r"(broken|other).png: cannot read the image"):
        splits.test[0]
    with pytest.raises(UserError, match=r"(broken|other).png: cannot read the image"):
        open_dataset(str(tmp_path), image_size=32)  # small images: their statistics are read at open


def _cifar_folder(root, per_class=6, held="test"):
    """CIFAR-10 as image files (``train/CLASS/*.png``, ``test/CLASS/*.png``), two classes of
    32 px images: red-ish and blue-ish noise."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), (held, 2)):
        for cls, channel in (("airplane", 0), ("bird", 2)):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 120, (32, 32, 3), dtype=np.uint8)
                pixels[..., channel] += 120
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")


def test_cifar10_as_image_files_takes_the_cifar_recipe_and_its_own_statistics(tmp_path):
    _cifar_folder(tmp_path)
    splits = open_dataset(str(tmp_path), image_size=32)
    assert (len(splits.train), len(splits.test), splits.num_classes) == (12, 4, 2)
    mean, std = splits.train.stats
    assert 0.3 < mean[0] < 0.5 and 0.3 < mean[2] < 0.5 and 0.1 < std[1] < 0.2  # computed, not ImageNet's
    raw = np.asarray(Image.open(splits.train.files[0]), dtype=np.float32) / 255
    x, _ = splits.train[0]  # evaluation: the whole image, normalised by those statistics
    assert np.allclose(x.numpy(), ((raw - mean) / std).transpose(2, 0, 1), atol=1e-5)
    draws = [splits.train.get(0, d)[0] for d in range(6)]
    assert torch.equal(draws[0], splits.train.get(0, 0)[0])  # a draw is a pure function of (index, draw)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    black = torch.from_numpy(((0 - mean) / std).astype(np.float32))
    padded = [d for d in draws if any(torch.allclose(d[:, r, :], black[:, None].expand(3, 32)) for r in (0, 31))
              or any(torch.allclose(d[:, :, c], black[:, None].expand(3, 32)) for c in (0, 31))]
    assert padded, "a 4-px padded crop shows black rows or columns in some draws"
    assert open_dataset(str(tmp_path), image_size=128).train.stats[0][0] == pytest.approx(0.485)  # ImageNet-sized


def test_image_folders_that_lack_a_part_are_named(tmp_path):
    _cifar_folder(tmp_path / "a", held="val")
    (tmp_path / "a" / "train" / "empty").mkdir()
    (tmp_path / "a" / "val" / "empty").mkdir()
    with pytest.raises(UserError, match=r"a/train/empty: a class folder with no images"):
        open_dataset(str(tmp_path / "a"))
    _cifar_folder(tmp_path / "b", held="other")
    with pytest.raises(UserError, match="has train/ but no val/ or test/ folder"):
        open_dataset(str(tmp_path / "b"))


def _camvid(root, frames=(3, 2, 2), label=None):
    """SegNet's CamVid layout with tiny 24 x 32 frames: labels 0..10 and void (11)."""
    rng = np.random.default_rng(1)
    for split, n in zip(("train", "val", "test"), frames):
        for folder in (split, f"{split}annot"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / split / f"f{i}.jpg")
            labels = rng.integers(0, 12, (24, 32), dtype=np.uint8)
            if label is not None and split == "val" and i == 1:
                labels[0, 0] = label
            Image.fromarray(labels).save(root / f"{split}annot" / f"f{i}.png")


def test_camvid_is_read_from_its_layout_with_void_ignored(tmp_path):
    _camvid(tmp_path)
    splits = open_dataset(str(tmp_path), image_size=64, task="segmentation")
    assert (len(splits.train), len(splits.test), splits.num_classes, splits.task) == (5, 2, 11, "segmentation")
    image, mask = splits.test[0]
    assert image.shape == (3, 64, 64) and mask.shape == (64, 64)
    values = set(mask.unique().tolist())
    assert 255 in values and values <= set(range(11)) | {255}  # void (11) is ignored
    image, mask = splits.train.get(4, 3)  # a training draw: scale jitter, crop, flip
    assert image.shape == (3, 64, 64) and set(mask.unique().tolist()) <= set(range(11)) | {255}


def test_camvid_faults_are_named_before_any_training(tmp_path):
    _camvid(tmp_path / "label", label=12)
    with pytest.raises(UserError, match=r"valannot/f1.png: labels 12 outside 0..10, 11 = void"):
        open_dataset(str(tmp_path / "label"), image_size=64)
    _camvid(tmp_path / "missing")
    (tmp_path / "missing" / "testannot" / "f1.png").unlink()
    with pytest.raises(UserError, match=r"testannot/f1.png: missing label map for f1.jpg"):
        open_dataset(str(tmp_path / "missing"), image_size=64)
    _camvid(tmp_path / "folder")
    for f in (tmp_path / "folder" / "valannot").iterdir():
        f.unlink()
    (tmp_path / "folder" / "valannot").rmdir()
    with pytest.raises(UserError, match=r"folder/valannot: missing folder \(CamVid label maps of val/, valannot/\)"):
        open_dataset(str(tmp_path / "folder"), image_size=64)
    with pytest.raises(UserError, match=r"is segmentation data \(a CamVid folder\), not classification data"):
        open_dataset(str(tmp_path / "missing"), image_size=64, task="classification")
    _cifar_folder(tmp_path / "cifar")
    with pytest.raises(UserError, match=r"read as an ImageFolder\), not segmentation data; segmentation data is .*CamVid"):
        open_dataset(str(tmp_path / "cifar"), image_size=64, task="segmentation")
