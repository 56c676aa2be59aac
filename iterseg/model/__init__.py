"""The networks and how they are stored and run: the U-Net (unet.py), the bundle of stage-1 and
stage-2 networks with what is needed to feed them (bundle.py), its file format and the embedded
models (store.py), the CPU's features (cpu.py), precisions and torch.compile (runtime.py), int8
quantization (quantize.py), values kept between processes (cache.py) and glibc's malloc
(malloc.py). Nothing here knows about stage 1, the two-stage loop or training."""
