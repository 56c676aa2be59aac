"""Shared fixtures: tiny bundles (random weights) and synthetic images; no data or trained weights."""
import cv2
import pytest
import torch

from iterseg.model.store import save_bundle
from synthetic import blob_image, small_bundle


@pytest.fixture(autouse=True)
def seeded_torch():
    """Every test starts from the same torch random state, so random weights and inputs repeat."""
    torch.manual_seed(0)


@pytest.fixture
def bundle():
    return small_bundle()


@pytest.fixture
def bundle_path(tmp_path, bundle):
    path = tmp_path / "small.pt"
    save_bundle(bundle, path, half=False)
    return path


@pytest.fixture
def image():
    return blob_image(96, 128)


@pytest.fixture
def image_path(tmp_path, image):
    path = tmp_path / "blobs.png"
    cv2.imwrite(str(path), image[:, :, ::-1])
    return path
