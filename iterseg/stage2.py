"""Stage 2: run the full-resolution network on the selected windows, as batches, and paste back.

Glossary
    image    float32 (H, W, C) in [0, 1]
    probs    float32 (K, H, W) probabilities (stage 1, upsampled); a refined copy is returned
    windows  int64 (N, 4) of (y, x, h, w), equal h and w, in selection order
"""
from .infer import paste_cores, run_cores


def refine(model, image, probs, windows, mean, std, batch_size=None, context=0):
    """``probs`` with the windows replaced by stage-2 probabilities: (refined probs, input boxes (N, 4)).

    context: pixels of surrounding image each window is run with (0 = the window alone, as in the
    paper); the network input boxes returned are what the cost report counts.
    """
    if len(windows) == 0:
        return probs, windows.copy()
    core_probs, boxes = run_cores(model, image, windows, context, mean, std, batch_size)
    refined = probs.copy()
    paste_cores(refined, windows, core_probs)
    return refined, boxes
