"""Stage 1's scale from the training masks: thin structures get a larger stage 1, blobs the smallest."""
import numpy as np

from iterseg.training.scale import S1_SCALES, choose_s1_scale, roundtrip_dice, s1_width


def lines(width_px, size=256, every=16):
    """(size, size) binary mask of vertical lines ``width_px`` wide, one every ``every`` pixels."""
    target = np.zeros((size, size), np.uint8)
    for x in range(3, size, every):
        target[:, x:x + width_px] = 1
    return target


def disc(size=256, radius=70):
    yy, xx = np.mgrid[:size, :size]
    return ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius ** 2).astype(np.uint8)


def test_blobs_keep_the_smallest_scale_and_thin_lines_need_a_larger_one():
    assert roundtrip_dice(disc(), 0.125) > 0.97
    assert choose_s1_scale([disc(), disc(radius=40)]) == 0.125
    assert roundtrip_dice(lines(2), 0.125) < 0.5
    assert choose_s1_scale([lines(3)]) == 0.5  # 3-px lines: gone at 1/8 and 1/4
    assert choose_s1_scale([lines(6)]) == 0.25
    assert choose_s1_scale([lines(2)]) == 1.0  # 2-px lines at an odd offset: gone at every smaller scale


def test_lines_too_thin_for_every_smaller_scale_get_full_resolution_and_empty_masks_do_not_count():
    assert choose_s1_scale([lines(1, every=4)]) == S1_SCALES[-1] == 1.0
    empty = np.zeros((64, 64), np.uint8)
    assert np.isnan(roundtrip_dice(empty, 0.125)) and choose_s1_scale([empty, disc()]) == 0.125
    assert choose_s1_scale([empty]) == 0.125


def test_unlabelled_pixels_are_not_foreground_and_one_hot_masks_use_their_foreground_classes():
    target = disc()
    target[:10] = 255  # unlabelled
    assert roundtrip_dice(target, 0.125) > 0.97
    one_hot = np.stack([1 - lines(2), lines(2)], axis=-1).astype(np.float32)
    assert roundtrip_dice(one_hot, 0.5) == roundtrip_dice(lines(2), 0.5)


def test_the_width_keeps_a_shrunk_stage1_at_a_sixteenth_of_stage2_and_a_full_one_at_a_seventh():
    for scale in S1_SCALES[:-1]:
        assert (scale * s1_width(scale) / 16) ** 2 <= 1 / 16
    assert (s1_width(1.0) / 16) ** 2 <= 1 / 7
    assert [s1_width(scale) for scale in S1_SCALES] == [16, 16, 8, 6]
