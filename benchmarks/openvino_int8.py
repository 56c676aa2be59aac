"""OpenVINO's int8 graph as iterseg builds it (issue 25: an int8 bundle from `iterseg quantize`, its
calibrated convolution input ranges as FakeQuantize nodes, model/openvino_backend.unet_graph) beside
NNCF's post-training quantization (default settings, 32 crops of 224^2 from 8 training images) of
each vessel model's full-resolution network, against OpenVINO bf16 and f32 on this CPU: seconds on
16 x 224^2 windows, and the Dice of the whole-image mask on the test split (--images).

    pip install nncf && python -m benchmarks.openvino_int8 [--data-root DIR] [--images N]
"""
import json
import os
import sys
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
import torch

import iterseg
from iterseg.engine.source import ArraySource
from iterseg.model.openvino_backend import unet_graph
from iterseg.model.quantize import fold_batch_norm
from iterseg.training.calibrate import calibrate_bundle, calibration_images
from iterseg.training.data import load_spec, read_sample

from .peer import DATA
from .timing import interleaved_medians, machine

torch.set_num_threads(2)
core = ov.Core()
def compiled(model, hint):
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": 2})
rng = np.random.default_rng(0)
data_root = Path(sys.argv[sys.argv.index("--data-root") + 1]) if "--data-root" in sys.argv else DATA
test_images = int(sys.argv[sys.argv.index("--images") + 1]) if "--images" in sys.argv else None
out = {"machine": machine(), "load": os.getloadavg(), "test_images": test_images or "all"}
for name in ("drive", "hrf"):
    bundle = iterseg.load_bundle(name)
    spec = load_spec(name, str(data_root))
    graph = unet_graph(fold_batch_norm(bundle.s2.eval()))
    mean, std = np.float32(bundle.mean), np.float32(bundle.std)
    def unit(sample, spec=spec):
        image, target, fov = read_sample(spec, sample)
        return ArraySource(image, 3).unit, target, fov
    crops = []
    for sample in spec.split("train")[:8]:
        u = unit(sample)[0]
        for _ in range(4):
            y, x = rng.integers(0, u.shape[0] - 224), rng.integers(0, u.shape[1] - 224)
            crops.append(((u[y:y + 224, x:x + 224] - mean) / std)[None].astype(np.float32))
    int8 = nncf.quantize(graph, nncf.Dataset(crops), subset_size=len(crops))
    ours = calibrate_bundle(bundle, calibration_images(spec, 8)[0])  # as `iterseg quantize` does
    own = unet_graph(ours.s2, ours.int8_inputs["s2"])
    models = {"f32": compiled(graph, "f32"), "bf16": compiled(graph, "bf16"), "nncf int8": compiled(int8, "bf16"),
              "iterseg int8": compiled(own, "bf16")}
    x = np.random.rand(16, 224, 224, 3).astype(np.float32)
    speed = interleaved_medians({k: (lambda m=m, x=x: m(x)) for k, m in models.items()}, rounds=9)
    dice = {k: [] for k in models}
    for sample in spec.split("test")[:test_images]:
        u, target, fov = unit(sample)
        h, w = u.shape[:2]
        padded_h, padded_w = -(-h // 16) * 16, -(-w // 16) * 16
        xin = np.pad((u - mean) / std, ((0, padded_h - h), (0, padded_w - w), (0, 0)),
                     mode="reflect")[None].astype(np.float32)
        for k, m in models.items():
            mask = m(xin)[0][0, 0, :h, :w] >= 0
            t = target > 0
            f = fov if fov is not None else np.ones_like(t)
            a, b = mask[f], t[f]
            dice[k].append(2 * (a & b).sum() / (a.sum() + b.sum()))
    out[name] = {"seconds_16x224": speed, "dice_baseline_test": {k: float(np.mean(v)) for k, v in dice.items()},
                 "images": len(dice["f32"])}
    print(name, json.dumps(out[name]), flush=True)
out["load_after"] = os.getloadavg()
print(json.dumps(out))
(Path(__file__).parent / "results" / "openvino_int8.json").write_text(json.dumps(out, indent=1) + "\n")
