# Two commands set everything up on a fresh clone:
#   make demo   install into .venv, then run the main job on the generated demo data
#   make test   install into .venv (with test tools), then run the test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= --quiet --disable-pip-version-check

# Telemetry off for every tool, whoever runs them (also set by the project's settings).
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export YOLO_OFFLINE := 1
export HF_HUB_OFFLINE := 1
export PYTHONWARNINGS := ignore::UserWarning:mlflow.pyfunc.utils.data_validation

.PHONY: install demo test bench lock viz clean-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade "pip>=24"
	$(BIN)/python -m pip install $(PIP_FLAGS) -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip check
	@touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m cv_pipelines.main_job

# pytest exits 5 when it collected no test: that is a failure too.
test: install
	@$(BIN)/python -m pytest; status=$$?; \
	if [[ $$status -eq 5 ]]; then echo "make test: no tests were collected; failing." >&2; fi; \
	exit $$status

bench: install
	$(BIN)/python bench/bench_ingestion.py

# Re-resolve the pinned versions after changing dependencies in pyproject.toml.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install $(PIP_FLAGS) -e '.[test]'
	.venv-lock/bin/python -m pip check
	{ sed -n '1,3p' constraints.txt; .venv-lock/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .venv-lock

viz: install
	$(BIN)/kedro viz run --host 127.0.0.1 --no-browser
