# The two README commands: `make demo` and `make test`. Each creates .venv on first use and installs
# the CPU build of torch first (a plain `torch` requirement would pull a 3 GB CUDA build), then
# iterseg in editable mode. The install is redone only when setup.py changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
INSTALLED := $(VENV)/.installed
SAMPLE := iterseg/samples/IMD002.jpg

.PHONY: demo test bench install clean

$(INSTALLED): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/iterseg predict $(SAMPLE) --patches 16 --out demo-out

test: $(INSTALLED)
	$(BIN)/python -m pytest

bench: $(INSTALLED)
	$(BIN)/python -m pytest benchmarks/ --benchmark-only --benchmark-columns=median,min,max,rounds

clean:
	rm -rf $(VENV) demo-out iterseg-out .pytest_cache .benchmarks
