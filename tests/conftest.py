"""Shared fixtures: tiny bundles (random weights) and synthetic images; no data or trained weights.
The fuzz tests' settings: ITERSEG_FUZZ_EXAMPLES=600 explores longer (600 examples of each found nothing,
2026-11-22)."""
import os

import cv2
import pytest
import torch
from hypothesis import HealthCheck, settings

from iterseg.model.store import save_bundle

from synthetic import blob_image, small_bundle

settings.register_profile("iterseg", max_examples=int(os.environ.get("ITERSEG_FUZZ_EXAMPLES", 60)), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("iterseg")


@pytest.fixture(autouse=True, scope="session")
def own_cache(tmp_path_factory):
    """Values iterseg keeps between processes (probes, OpenVINO's compiled models: model/cache.py) go
    to a folder of this test session, not to the user's ~/.cache/iterseg."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ITERSEG_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


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
