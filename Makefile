# Every target works on a fresh machine: it creates .venv if missing, installs the CPU
# torch wheel first (pip install torch pulls a multi-GB CUDA build otherwise), then the package.
# demo/install get what the demo needs (the package and matplotlib for its plot); test/lint add
# the [dev,bnb] extras and DeepSpeed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: test demo install lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.cfg setup.py
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[plots]"
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e ".[dev,bnb]"
	# DeepSpeed for the ZeRO-3 tests; built against the torch above (no isolation), no CUDA ops are compiled.
	$(BIN)/python -m pip install --no-build-isolation deepspeed
	touch $(TEST_STAMP)

install: $(STAMP)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

demo: $(STAMP)
	$(BIN)/python examples/run_npo.py

lint: $(TEST_STAMP)
	$(BIN)/ruff check unlearn_trainer tests examples benchmarks

clean:
	rm -rf $(VENV) outputs
