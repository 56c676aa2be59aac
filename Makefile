# The two README commands: `make demo` and `make test`. Each creates .venv on first use and installs
# the CPU build of torch first, from PyTorch's CPU wheel index (a plain `torch` requirement would pull
# a 3 GB CUDA build on Linux), falling back to the default index when that one cannot be reached
# (10 s timeout, no retries); then iterseg in editable mode: `make demo` without the test extras,
# `make test` with them. Each install is redone only when setup.py changes.
# `make test` skips the tests marked slow (setup.cfg); `make test-slow` runs only those, `make test-all` both;
# `make lint` runs ruff; these three install the `dev` extra (test extras plus Dask, MONAI, ruff).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# --no-compile: Python compiles what is imported on first use; byte-compiling all of torch at install
# doubled the install time (94 s -> 54 s for torch and the test extras on 2 cores)
PIP := $(BIN)/python -m pip install --quiet --no-compile --disable-pip-version-check
# ... which needs Python to be allowed to write what it compiles: with PYTHONDONTWRITEBYTECODE set
# (some shells and containers set it) every process would compile torch anew (import 3 s -> 6 s)
unexport PYTHONDONTWRITEBYTECODE
TORCH_INSTALLED := $(VENV)/.torch-installed
INSTALLED := $(VENV)/.installed
TEST_INSTALLED := $(VENV)/.test-installed
DEV_INSTALLED := $(VENV)/.dev-installed
BENCH_INSTALLED := $(VENV)/.bench-installed
# the real datasets (PH2, DRIVE, HRF); benchmarks that need them skip when the folder is missing
DATA ?= $(or $(ITERSEG_DATA),../shared/data)
SAMPLE := iterseg/samples/IMD002.jpg
UNCONDITIONED := runs/unconditioned
UNCONDITIONED_COMMIT := 24a5261^

.PHONY: demo test test-auto test-slow test-all lint bench bench-sweeps bench-int8 bench-gigapixel bench-slide bench-cluster install clean

$(TORCH_INSTALLED):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --timeout 10 --retries 0 --index-url $(TORCH_CPU_INDEX) $(TORCH) || \
		{ echo "$(TORCH_CPU_INDEX) not reachable: torch from the default index"; $(PIP) $(TORCH); }
	touch $@

# one pip call per target: `make test` on a fresh clone installs iterseg once, with its test extras
$(INSTALLED): $(TORCH_INSTALLED) setup.py
	$(PIP) -e .
	touch $@

$(TEST_INSTALLED): $(TORCH_INSTALLED) setup.py
	$(PIP) -e '.[test]'
	touch $@

# the slow tests and the linter need more (dask, MONAI, ruff): installed by their targets, not by `make test`
$(DEV_INSTALLED): $(TORCH_INSTALLED) setup.py
	$(PIP) -e '.[dev]'
	touch $@

$(BENCH_INSTALLED): $(TEST_INSTALLED)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	touch $@

install: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/iterseg predict $(SAMPLE) --patches 16 --out demo-out

test: $(TEST_INSTALLED)
	$(BIN)/python -m pytest -m "not slow"

# the fast suite with `--precision auto` forced to fp32 on torch, then to bf16 on OpenVINO, whatever
# this CPU would pick (ITERSEG_AUTO_PRECISION, ITERSEG_AUTO_BACKEND): a test that assumes one meaning
# of auto fails on every machine; CI runs it
test-auto: $(TEST_INSTALLED)
	ITERSEG_AUTO_PRECISION=fp32 ITERSEG_AUTO_BACKEND=torch $(BIN)/python -m pytest -m "not slow" -q
	ITERSEG_AUTO_PRECISION=bf16 ITERSEG_AUTO_BACKEND=openvino $(BIN)/python -m pytest -m "not slow" -q

# the tests marked slow (int8 compilation, torch.compile, sweeps, the real-data checks); CI runs them
test-slow: $(DEV_INSTALLED)
	$(BIN)/python -m pytest -m slow || test $$? -eq 5  # 5: no test is marked slow

# the whole suite, the tests marked slow included
test-all: $(DEV_INSTALLED)
	$(BIN)/python -m pytest

# ruff, configured in ruff.toml
lint: $(DEV_INSTALLED)
	$(BIN)/ruff check iterseg kernels tests benchmarks

# speed suites (about 7 minutes) then the FLOP/Dice sweep on DRIVE (about 3 minutes); see benchmarks/README.md
bench: $(BENCH_INSTALLED) $(UNCONDITIONED)/drive.pt
	ITERSEG_DATA=$(DATA) $(BIN)/python -m pytest benchmarks/ --benchmark-only -s \
		--benchmark-columns=median,min,max,rounds --benchmark-json=benchmarks/results/speed.json
	if [ -d "$(DATA)/DRIVE" ]; then $(BIN)/python -m benchmarks.sweep --spec drive --model drive --data-root $(DATA) \
		--previous $(UNCONDITIONED)/drive.pt --groups core,iterative,sliding --precisions fp32; \
	else echo "skipping the DRIVE sweep: no datasets at $(DATA) (set DATA=... or ITERSEG_DATA)"; fi

# the FLOP/Dice sweeps of all three datasets (about an hour; HRF alone about 45 minutes)
bench-sweeps: $(BENCH_INSTALLED) $(UNCONDITIONED)/drive.pt $(UNCONDITIONED)/ph2.pt $(UNCONDITIONED)/hrf.pt
	$(BIN)/python -m benchmarks.sweep --spec ph2 --model ph2 --data-root $(DATA) \
		--unconditioned $(UNCONDITIONED)/ph2.pt --groups core,iterative,sliding,conditioned
	for d in drive hrf; do $(BIN)/python -m benchmarks.sweep --spec $$d --model $$d --data-root $(DATA) \
		--previous $(UNCONDITIONED)/$$d.pt --groups core --precisions fp32 || exit 1; done

# The bundles as they were before 2026-12-02 (1/8 stage 1, unconditioned S2): for PH2, the unconditioned
# S2 its conditioned S2 was fine-tuned from (curves and baseline of the PH2 sweep); for DRIVE and HRF,
# the previous stage 1 with the same S2 as the shipped bundles (the `previous/mean` curve).
$(UNCONDITIONED)/%.pt:
	mkdir -p $(UNCONDITIONED)
	git show $(UNCONDITIONED_COMMIT):iterseg/weights/$*.pt > $@.part && mv $@.part $@

# int8 against fp32 and bf16 on each dataset: bundle size, seconds per image, Dice (about 25 minutes)
bench-int8: $(BENCH_INSTALLED)
	$(BIN)/python -m benchmarks.int8 --spec ph2 --model ph2 --data-root $(DATA) --images 20
	$(BIN)/python -m benchmarks.int8 --spec drive --model drive --data-root $(DATA) --images 20
	$(BIN)/python -m benchmarks.int8 --spec hrf --model hrf --data-root $(DATA) --images 4 --emulated-bf16-images 0

# streaming: 5000^2, 10000^2 and 20000^2 synthetic pyramidal BigTIFFs (written once into /tmp; about 3 minutes)
bench-gigapixel: $(BENCH_INSTALLED)
	$(BIN)/python -m benchmarks.gigapixel --sizes 5000,10000,20000 --patches 64

# a 40000 x 30000 Aperio-style .svs (written once into /tmp, about 4 minutes) under a 3 GB address-space
# limit (about 2-3 minutes), on torch (OpenVINO needs 2.3 GB there); see benchmarks/README.md
bench-slide: $(BENCH_INSTALLED)
	$(BIN)/python -m benchmarks.slide --limit-gb 3 --backend torch

# a folder on LocalClusters of 1 and 2 workers, scheduler overhead, one 10000^2 BigTIFF over 2 workers (about 8 minutes)
bench-cluster: $(BENCH_INSTALLED)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dask]'
	$(BIN)/python -m benchmarks.cluster

clean:
	rm -rf $(VENV) demo-out iterseg-out .pytest_cache .benchmarks
