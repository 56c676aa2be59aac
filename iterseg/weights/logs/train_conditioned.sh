#!/usr/bin/env bash
# Conditioned S2 for the three embedded models, fine-tuned from each bundle's S2 (new input channel at
# zero). float32: this machine has AVX2 only, where bf16 autocast is emulated and ~17x slower.
set -x
cd /work/main
I=.venv/bin/iterseg
$I train --spec ph2 --data-root ../shared/data --stage s2 --condition --init-from ph2 --sampling uncertain --out runs/cond/ph2 --name ph2 --epochs 8 --steps 30 --lr 3e-4 --no-bf16 > runs/cond/ph2.out 2>&1
$I train --spec drive --data-root ../shared/data --stage s2 --condition --init-from drive --out runs/cond/drive --name drive --epochs 10 --steps 30 --lr 3e-4 --no-bf16 > runs/cond/drive.out 2>&1
$I train --spec hrf --data-root ../shared/data --stage s2 --condition --init-from hrf --out runs/cond/hrf --name hrf --epochs 8 --steps 30 --lr 3e-4 --no-bf16 > runs/cond/hrf.out 2>&1
