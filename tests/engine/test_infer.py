"""Running a network on equal boxes: context boxes that reproduce the whole-image output on a window,
batches (automatic size, any size gives the same result), and whole images in tiles."""
import numpy as np
import pytest
import torch

from iterseg.engine.infer import (
    AUTO_BATCH_MAX,
    auto_batch_size,
    box_shape,
    context_boxes,
    crop_windows,
    logits_to_probs,
    normalised,
    run_boxes,
    run_whole,
    run_windows,
)
from iterseg.engine.source import ArraySource

from synthetic import blob_image


@pytest.fixture
def network(bundle):
    return bundle.s2


def whole_probs(network, source, bundle):
    return run_whole(network, source.read_boxes, source.shape, bundle.mean, bundle.std)[0]


@pytest.mark.parametrize("shape", [(96, 128), (75, 53), (30, 200)])
@pytest.mark.parametrize("extra", [0, 3])
def test_a_context_of_the_receptive_radius_reproduces_the_whole_image_on_a_window(bundle, network, shape, extra):
    source = ArraySource(blob_image(*shape, seed=1), 3)
    whole = whole_probs(network, source, bundle)
    rng = np.random.default_rng(shape[0] + extra)
    side = min(20, *shape)
    corners = [(0, 0), (shape[0] - side, shape[1] - side), (0, shape[1] - side)]
    corners += [(int(rng.integers(0, shape[0] - side + 1)), int(rng.integers(0, shape[1] - side + 1)))
                for _ in range(5)]
    windows = np.array([(y, x, side, side) for y, x in corners])
    context = network.config.receptive_radius + extra
    probs, boxes = run_windows(network, source.read_boxes, source.shape, windows, context, bundle.mean, bundle.std)
    assert probs.shape == (1, len(windows), side, side)
    for n, (y, x, h, w) in enumerate(windows):
        np.testing.assert_allclose(probs[:, n], whole[:, y:y + h, x:x + w], atol=1e-5)
    assert (boxes[:, :2] % network.config.size_multiple == 0).all()  # on the grid of the whole image's layers


def test_without_context_a_window_is_seen_alone(bundle, network):
    image = blob_image(64, 64, seed=2)
    source = ArraySource(image, 3)
    window = np.array([[8, 12, 30, 30]])
    boxes, offsets = context_boxes(window, 0, 4, (64, 64))
    assert boxes.tolist() == [[8, 12, 32, 32]] and offsets.tolist() == [[0, 0]]  # grown to the multiple
    probs, _ = run_windows(network, source.read_boxes, (64, 64), window, 0, bundle.mean, bundle.std)
    crop = (source.unit[8:40, 12:44] - np.float32(bundle.mean)) / np.float32(bundle.std)
    with torch.inference_mode():
        expected = torch.sigmoid(network(torch.from_numpy(crop.transpose(2, 0, 1).copy())[None]))[0, 0, :30, :30]
    np.testing.assert_allclose(probs[0, 0], expected.numpy(), atol=1e-6)


@pytest.mark.parametrize("windows, context, shape", [
    ([[0, 0, 10, 10], [50, 70, 10, 10], [23, 41, 10, 10]], 7, (60, 80)),
    ([[0, 0, 60, 80]], 12, (60, 80)),
    ([[5, 5, 3, 3]], 100, (13, 10)),
])
def test_context_boxes_hold_the_window_and_its_context_inside_the_padded_image(windows, context, shape):
    windows = np.array(windows)
    multiple = 4
    boxes, offsets = context_boxes(windows, context, multiple, shape)
    padded = [-(-side // multiple) * multiple for side in shape]
    assert len({tuple(b[2:]) for b in boxes}) == 1 and (boxes[:, 2:] % multiple == 0).all()
    assert (boxes[:, :2] % multiple == 0).all() and (boxes[:, :2] >= 0).all()
    assert (boxes[:, 0] + boxes[:, 2] <= padded[0]).all() and (boxes[:, 1] + boxes[:, 3] <= padded[1]).all()
    np.testing.assert_array_equal(boxes[:, :2] + offsets, windows[:, :2])
    for (y, x, h, w), (by, bx, bh, bw) in zip(windows, boxes, strict=True):  # the context the image allows is inside
        assert by <= max(0, y - context) and bx <= max(0, x - context)
        assert by + bh >= min(padded[0], y + h + context) and bx + bw >= min(padded[1], x + w + context)
    assert box_shape(windows[0, 2:], context, multiple, shape) == tuple(boxes[0, 2:])


def test_automatic_batch_size_caps_the_pixels_per_call(bundle, network):
    assert auto_batch_size(48, 48) == AUTO_BATCH_MAX == 16
    assert auto_batch_size(320, 320) == 5 and auto_batch_size(2048, 2048) == 1
    calls = []

    def counted(x):
        calls.append(len(x))
        return network(x)

    source = ArraySource(blob_image(400, 400, seed=3), 3)
    boxes = np.array([[y, x, 256, 256] for y in (0, 72, 144) for x in (0, 72, 144)])  # 9 boxes of 256 px
    run_boxes(counted, source.read_boxes, boxes, bundle.mean, bundle.std)
    assert auto_batch_size(256, 256) == 8 and calls == [8, 1]  # 2 ** 19 pixels per call at most


def test_the_batch_size_does_not_change_the_probabilities(bundle, network):
    source = ArraySource(blob_image(96, 128, seed=4), 3)
    boxes = np.array([[y, x, 32, 32] for y in (0, 32, 64) for x in (0, 48, 96)])
    calls = []

    def counted(x):
        calls.append(len(x))
        return network(x)

    one = run_boxes(counted, source.read_boxes, boxes, bundle.mean, bundle.std, batch_size=4)
    assert calls == [4, 4, 1]
    for batch_size in (1, 9, 100, None):
        np.testing.assert_allclose(run_boxes(network, source.read_boxes, boxes, bundle.mean, bundle.std, batch_size),
                                   one, atol=1e-6)


def test_logits_become_sigmoid_or_softmax_probabilities():
    logits = torch.tensor([[[[0.0, 2.0]]]])
    np.testing.assert_allclose(logits_to_probs(logits).numpy().ravel(), [0.5, 1 / (1 + np.exp(-2))], rtol=1e-6)
    three = torch.randn(2, 3, 4, 5)
    probs = logits_to_probs(three)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 4, 5))
    torch.testing.assert_close(probs, torch.softmax(three, 1))


def test_crop_windows_cuts_each_window_from_its_box():
    box_probs = np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6)
    got = crop_windows(box_probs, np.array([[0, 1], [2, 3]]), 4, 3)
    assert got.shape == (3, 2, 4, 3)
    np.testing.assert_array_equal(got[:, 0], box_probs[0, :, 0:4, 1:4])
    np.testing.assert_array_equal(got[:, 1], box_probs[1, :, 2:6, 3:6])


@pytest.mark.parametrize("shape, chunk", [((150, 170), 48), ((64, 300), 64), ((100, 100), 30)])
def test_a_whole_image_in_chunks_equals_it_in_one_pass(bundle, network, shape, chunk):
    source = ArraySource(blob_image(*shape, seed=5), 3)
    whole, count, box_hw = run_whole(network, source.read_boxes, shape, bundle.mean, bundle.std)
    assert count == 1 and box_hw == tuple(-(-s // 4) * 4 for s in shape)
    chunked, count, box_hw = run_whole(network, source.read_boxes, shape, bundle.mean, bundle.std, chunk=chunk,
                                       batch_size=2)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    assert count > 1 and box_hw == box_shape((min(chunk, shape[0]), min(chunk, shape[1])),
                                             -(-network.config.receptive_radius // 4) * 4, 4, shape)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_crops_are_normalised_per_channel_into_float32(channels, dtype):
    rng = np.random.default_rng(channels)
    crops = rng.random((3, 7, 5, channels)).astype(dtype)
    mean, std = rng.random(channels), rng.random(channels) + 0.1
    got = normalised(crops, mean, std)
    assert got.dtype == np.float32 and got.shape == crops.shape
    np.testing.assert_allclose(got, (crops - mean) / std, atol=1e-5)
