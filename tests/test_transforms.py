"""Property tests of the image transforms: any image size, any crop, any draw gives tensors of
the promised shape, finite values and labels the mask holds (or ignore)."""

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="hypothesis is not installed (a bare GPU image)")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from nas2deploy.data.transforms import (IGNORE, classification_eval, classification_train, draw_rng,  # noqa: E402
                                        random_resized_box, segmentation_pair)

sides = st.integers(min_value=1, max_value=300)


@given(width=sides, height=sides, seed=st.integers(0, 2**32 - 1))
def test_random_resized_boxes_lie_inside_the_image(width, height, seed):
    left, top, right, bottom = random_resized_box(width, height, np.random.default_rng(seed))
    assert 0 <= left < right <= width and 0 <= top < bottom <= height


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=sides, height=sides, size=st.integers(8, 64), draw=st.integers(0, 10**6))
def test_classification_views_have_the_input_size(tmp_path, width, height, size, draw):
    path = tmp_path / "im.png"
    Image.fromarray(np.random.default_rng(draw).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    for x in (classification_train(path, size, draw_rng(0, draw)), classification_eval(path, size)):
        assert x.shape == (3, size, size) and np.isfinite(x).all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=sides, height=sides, size=st.integers(8, 64), crop_h=st.integers(1, 96), crop_w=st.integers(1, 96),
       draw=st.one_of(st.none(), st.integers(0, 10**6)))
def test_segmentation_crops_keep_labels_and_pad_with_ignore(tmp_path, width, height, size, crop_h, crop_w, draw):
    rng = np.random.default_rng(draw or 0)
    image, mask = tmp_path / "im.png", tmp_path / "mask.png"
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(image)
    labels = rng.integers(0, 5, (height, width)).astype(np.uint8)
    Image.fromarray(labels).save(mask)
    x, y = segmentation_pair(image, mask, size, (crop_h, crop_w), 5, None if draw is None else draw_rng(0, draw))
    assert x.shape == (3, crop_h, crop_w) and y.shape == (crop_h, crop_w) and np.isfinite(x).all()
    assert set(np.unique(y)) <= {*range(5), IGNORE}
