"""block_means against its NumPy twin and OpenCV's INTER_AREA, on awkward shapes and both dtypes."""
import cv2
import numpy as np
import pytest

from iterseg.kernels import block_means, block_means_reference, can_block_mean


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape, factors", [((8, 12, 3), (4, 4)), ((9, 10), (3, 5)), ((7, 6, 4), (1, 2)),
                                            ((64, 32, 1), (16, 1)), ((5, 5, 2), (1, 1))])
def test_block_means_equal_the_reference_and_opencv(dtype, shape, factors):
    top = np.iinfo(dtype).max
    pixels = np.random.default_rng(hash(shape) % 2**32).integers(0, top + 1, shape, dtype=dtype)
    pixels.reshape(-1)[:3] = top  # sums of the largest values must not overflow
    fast = block_means(pixels, *factors)
    assert fast.dtype == np.float32 and fast.shape == (shape[0] // factors[0], shape[1] // factors[1],
                                                        shape[2] if len(shape) == 3 else 1)
    np.testing.assert_allclose(fast, block_means_reference(pixels, *factors), rtol=1e-6)
    area = cv2.resize(pixels.astype(np.float32), fast.shape[1::-1], interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(fast, area.reshape(fast.shape), rtol=1e-5)


def test_block_means_of_a_strided_view_and_the_largest_block():
    pixels = np.full((512, 256, 3), 65535, np.uint16)[:, ::2]  # not contiguous
    np.testing.assert_array_equal(block_means(pixels, 256, 128), np.full((2, 1, 3), 65535, np.float32))
    assert can_block_mean(np.uint16, 256, 256) and not can_block_mean(np.uint16, 257, 256)


@pytest.mark.parametrize("pixels, factors", [(np.zeros((6, 6, 3), np.float32), (2, 2)),
                                             (np.zeros((6, 6, 3), np.uint8), (4, 2)),
                                             (np.zeros((6, 6, 3), np.int16), (2, 2))])
def test_block_means_refuses_what_it_cannot_average_exactly(pixels, factors):
    with pytest.raises(ValueError, match="multiples of the factors"):
        block_means(pixels, *factors)
