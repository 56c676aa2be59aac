"""The training losses, on logits (the only place outside the networks where logits are seen).

Binary: focal loss + (1 - soft Dice). Multi-class: cross-entropy on labelled pixels + (1 - mean soft
Dice over the classes); unlabelled pixels have an all-zero target and count in neither term.

Glossary
    logits   torch float (N, K', h, w) raw network output: K' = 1 (sigmoid) or K (softmax)
    target   torch float32 (N, K', h, w) in [0, 1]: the foreground (binary), or one-hot / soft class
             memberships (multi-class), all zero at unlabelled pixels
"""
import torch
import torch.nn.functional as F


def focal_dice_loss(logits, target, gamma):
    """Focal loss (Lin et al. 2017, soft targets allowed) + (1 - soft Dice over the batch), for
    binary ``logits`` (N, 1, h, w)."""
    logits = logits.float()
    prob = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = prob * target + (1 - prob) * (1 - target)
    focal = ((1 - p_true) ** gamma * bce).mean()
    soft_dice = (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return focal + (1 - soft_dice)


def multiclass_loss(logits, target):
    """Cross-entropy on labelled pixels + (1 - mean soft Dice over classes), for ``logits``
    (N, K, h, w) and ``target`` (N, K, h, w) one-hot or soft, all zero at unlabelled pixels."""
    logits = logits.float()
    labelled = target.sum(1)
    ce = -(target * torch.log_softmax(logits, dim=1)).sum(1)
    ce = ce.sum() / labelled.sum().clamp(min=1)
    prob = torch.softmax(logits, dim=1) * labelled[:, None]
    dims = (0, 2, 3)
    soft_dice = (2 * (prob * target).sum(dims) + 1) / (prob.sum(dims) + target.sum(dims) + 1)
    return ce + (1 - soft_dice.mean())


def stage_loss(logits, target, gamma):
    """The stage's loss: ``focal_dice_loss`` for one output channel, else ``multiclass_loss``."""
    return focal_dice_loss(logits, target, gamma) if target.shape[1] == 1 else multiclass_loss(logits, target)
