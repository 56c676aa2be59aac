"""The training losses on logits: near zero for confident right answers, large for wrong ones, and
unlabelled pixels left out of the multi-class loss."""
import pytest
import torch

from iterseg.training.losses import focal_dice_loss, multiclass_loss, stage_loss


def test_focal_dice_loss_of_right_and_wrong_answers():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    right = (target * 2 - 1) * 20  # logits of +-20: confident and right
    assert focal_dice_loss(right, target, 2.0) < 1e-3
    assert focal_dice_loss(-right, target, 2.0) > 1.5  # confident and wrong: focal term large, Dice 0
    uncertain = torch.zeros_like(target)
    losses = [focal_dice_loss(logits, target, 2.0) for logits in (right, uncertain, -right)]
    assert losses[0] < losses[1] < losses[2]
    assert focal_dice_loss(right.bfloat16(), target, 2.0).dtype == torch.float32


def test_multiclass_loss_leaves_unlabelled_pixels_out():
    ids = torch.tensor([[0, 1], [2, 1]])
    target = torch.nn.functional.one_hot(ids, 3).permute(2, 0, 1)[None].float()
    right = (target * 2 - 1) * 20
    assert multiclass_loss(right, target) < 1e-3
    unlabelled = target.clone()
    unlabelled[..., 1, 1] = 0  # the bottom-right pixel is labelled nowhere
    wrong_there = right.clone()
    wrong_there[0, :, 1, 1] = torch.tensor([20.0, -20.0, -20.0])  # says class 0 where the label was 1
    assert multiclass_loss(wrong_there, target) > 1
    expected = multiclass_loss(right, unlabelled).item()
    assert multiclass_loss(wrong_there, unlabelled) == pytest.approx(expected, abs=1e-3)


def test_the_stage_loss_follows_the_number_of_outputs():
    binary, classes = torch.randn(1, 1, 4, 4), torch.randn(1, 3, 4, 4)
    target1 = torch.rand(1, 1, 4, 4).round()
    target3 = torch.nn.functional.one_hot(torch.randint(0, 3, (1, 4, 4)), 3).permute(0, 3, 1, 2).float()
    assert stage_loss(binary, target1, 2.0) == focal_dice_loss(binary, target1, 2.0)
    assert stage_loss(classes, target3, 2.0) == multiclass_loss(classes, target3)
