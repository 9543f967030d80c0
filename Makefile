# Every target works on a fresh machine: it creates .venv if missing, installs the CPU
# torch wheel first (pip install torch pulls a multi-GB CUDA build otherwise), then the package.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo install lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.cfg setup.py
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[dev,bnb]"
	# DeepSpeed for the ZeRO-3 tests; built against the torch above (no isolation), no CUDA ops are compiled.
	$(BIN)/python -m pip install --no-build-isolation deepspeed
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

demo: $(STAMP)
	$(BIN)/python examples/run_npo.py

lint: $(STAMP)
	$(BIN)/ruff check unlearn_trainer tests examples benchmarks

clean:
	rm -rf $(VENV) outputs
