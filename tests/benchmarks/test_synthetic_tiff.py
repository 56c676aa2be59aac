"""benchmarks/synthetic_tiff.py: the gigapixel benchmark's generated pyramidal TIFFs."""
import numpy as np

from benchmarks.synthetic_tiff import write_synthetic_tiff
from iterseg.disk.tiff import TiledImage


def test_the_synthetic_generator_writes_a_consistent_pyramid(tmp_path):
    levels = write_synthetic_tiff(tmp_path / "s.tif", 700, 900, seed=1, tile=(256, 256), compression="zlib")
    assert levels == [(700, 900), (350, 450), (175, 225)]
    with TiledImage(tmp_path / "s.tif") as source:
        assert source.level_shapes == [(700, 900, 3), (350, 450, 3), (175, 225, 3)]
        full, half = source.read_level(0).astype(float), source.read_level(1).astype(float)
        assert source.read_region(300, 400, 50, 60).shape == (50, 60, 3)
    # level 1 samples the same picture: close to level 0 averaged over 2 x 2 blocks (noise aside)
    pooled = full.reshape(350, 2, 450, 2, 3).mean(axis=(1, 3))
    assert np.abs(pooled - half).mean() < 8
