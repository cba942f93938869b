# fa_explore developer tasks. Every target sets up .venv on first use.
#
#   make app                  serve the dashboard on http://127.0.0.1:$(APP_PORT) (Voila)
#   make lint                 ruff check . (make test runs it first)
#   make test                 lint, then the whole test suite
#                             (PYTEST_ARGS="-m 'not slow'" for a quick pass)
#   make train                one training run on digits with progress and final table
#   make bench                performance: step time of every rule vs BP (MLP, CNN; 1 and 2
#                             threads; CUDA when present), MACs, evaluation overhead, import
#                             time, scaling; table, JSON and HTML in benchmarks/results/
#   make bench-accuracy       train every rule with its defaults: accuracy vs floors, wall time
#   make load-test            the classroom load test: LOAD_N Chromium pages on one Voila
#                             server train for LOAD_SECONDS; table and JSON in
#                             benchmarks/results/load_test_N$(LOAD_N).{md,json}
#
# Variables: PYTHON (interpreter that creates .venv), TORCH, EXTRAS (what gets installed:
# app,dev,sweep, and just app for `make app`; another TORCH or a new extra re-installs),
# APP_PORT (the dashboard's port, 8866), TRAIN_ARGS, BENCH_ARGS, PYTEST_ARGS,
# LOAD_N (students of the load test, 8), LOAD_SECONDS (their training time, 60),
# LOAD_POOL (its preheated kernels; empty: voila.json's).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch is installed first and pinned, so that the package's own
# `torch>=2.3` is already satisfied and pip never pulls a CUDA build.
TORCH ?= torch==2.13.0
EXTRAS ?= app,dev,sweep
PIP_FLAGS ?=
PYTEST_ARGS ?=
TRAIN_ARGS ?= --rule fa --dataset digits --epochs 5
BENCH_ARGS ?=
LOAD_N ?= 8
LOAD_SECONDS ?= 60
LOAD_POOL ?=

ifeq ($(CI),true)
  # Logs, not a terminal: no progress bars, and say which tests took the time.
  PIP_FLAGS += --progress-bar off --no-input
  PYTEST_ARGS += -ra --durations=25
endif

STAMP := $(VENV)/.fa_explore-installed
# What was installed: TORCH and the extras (the EXTRAS of every install so far).
STAMP_VARS := $(VENV)/.fa_explore-install-vars
comma := ,

.PHONY: help install app lint test train bench bench-accuracy load-test FORCE

APP_PORT ?= 8866

# Help texts may name variables (written $$(NAME) there): shown with their values.
help: ## list the targets
	@grep -E '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | \
		sed -e 's/\$$(APP_PORT)/$(APP_PORT)/g' | \
		awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# Rewritten only when the install must change: another TORCH, or an extra that no
# install so far had. A venv with more than EXTRAS asks for is kept as it is, so
# `make app` (EXTRAS=app) after `make test` reinstalls nothing.
$(STAMP_VARS): FORCE
	@mkdir -p $(VENV)
	@have=$$(sed -n 's/.*EXTRAS=//p' $@ 2>/dev/null | tr ',' ' '); want="$$have"; \
	for extra in $(subst $(comma), ,$(EXTRAS)); do \
		[[ " $$want " == *" $$extra "* ]] || want="$$want $$extra"; \
	done; \
	want=$$(echo $$want | tr ' ' ','); \
	echo "TORCH=$(TORCH) EXTRAS=$$want" | cmp -s - $@ || echo "TORCH=$(TORCH) EXTRAS=$$want" > $@

# Reinstalled when pyproject.toml changes (new dependencies or extras) and when
# TORCH or the extras differ from the last install (e.g. `make install EXTRAS=sweep`).
$(STAMP): pyproject.toml $(STAMP_VARS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) "$(TORCH)"
	$(PY) -m pip install $(PIP_FLAGS) -e ".[$$(sed -n 's/.*EXTRAS=//p' $(STAMP_VARS))]"
	@# The dashboard's page template (voila.json names it), linked where this venv's
	@# Voila and Jupyter look for templates.
	@if [ -d $(VENV)/share/jupyter/voila/templates ]; then \
		ln -sfn "$(CURDIR)/share/jupyter/voila/templates/fa_explore" \
			$(VENV)/share/jupyter/voila/templates/fa_explore; fi
	@touch $@

install: $(STAMP) ## create .venv and install torch, then the package with its extras

# The app needs only the `app` extra (Voila, ipywidgets, plotly), not the test and
# sweep tools. Voila reads voila.json here: preheated kernels, culling, page template.
app: EXTRAS = app
app: $(STAMP) ## serve the dashboard with Voila on http://127.0.0.1:$(APP_PORT)
	$(VENV)/bin/voila apps/alignment_dashboard.ipynb --no-browser \
		--port=$(APP_PORT) --Voila.ip=127.0.0.1

lint: $(STAMP) ## check the code with ruff (the settings are in pyproject.toml)
	$(PY) -m ruff check .

test: $(STAMP) lint ## lint, then run the whole test suite
	@# pytest's exit code 5 means "no tests collected": not a failure of the code.
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit code 5): nothing failed"; rc=0; fi; \
	exit $$rc

train: $(STAMP) ## train on digits, printing progress and the final table
	$(VENV)/bin/fa-explore train $(TRAIN_ARGS)

bench: $(STAMP) ## step time of every rule vs BP, MACs, evaluation overhead, imports, scaling
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

bench-accuracy: $(STAMP) ## train every rule with its defaults: accuracy against the floors
	$(PY) benchmarks/step_time.py --accuracy $(BENCH_ARGS)

load-test: $(STAMP) ## LOAD_N students train on one Voila server for LOAD_SECONDS (not in make test)
	FA_EXPLORE_LOAD_N=$(LOAD_N) FA_EXPLORE_LOAD_SECONDS=$(LOAD_SECONDS) \
		FA_EXPLORE_LOAD_POOL=$(LOAD_POOL) \
		$(PY) -m pytest tests/browser/test_classroom_load.py --load-test $(PYTEST_ARGS)
