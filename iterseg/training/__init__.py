"""Training, evaluation and int8 calibration of the U-Nets on data specs.

data.py (specs: images, masks, splits)  sampling.py (crops, augmentation, stage-1 weights)
losses.py  loop.py (train_stage)  assemble.py (run folder -> bundle)  evaluate.py + metrics.py
calibrate.py (int8 calibration on training images). Inference runs through iterseg/engine/.
"""
