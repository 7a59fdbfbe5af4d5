# rnas: `make workbook` runs every notebook on the embedded default (smoke tier);
# `make test` runs the unit tests and every notebook under papermill.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Real data for tests and benchmarks, when the machine has the shared folder next to the project.
SHARED_DATA := $(abspath ../shared/data)
export RNAS_DATA_ROOT ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),$(abspath data))
TIER ?= smoke
# `make sweep STUDY=studies/tutorial.yaml SWEEP_ARGS="--workers 2"`: a study grid on Dask, then results/<name>/
STUDY ?= studies/smoke.yaml
SWEEP_ARGS ?=
# one BLAS/OpenMP thread per process: pytest workers and notebook kernels share two cores
export OMP_NUM_THREADS ?= 1
# the workbook runs one notebook at a time: its kernel gets every core
WORKBOOK_THREADS ?= $(shell nproc)
# pip installs without compiling (torch's wheel alone holds thousands of modules); Python compiles a
# module when it is first imported and keeps its bytecode inside the venv, also where
# PYTHONDONTWRITEBYTECODE is set, so only what the project imports is compiled, once
export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache
export PYTHONDONTWRITEBYTECODE :=

.PHONY: setup workbook test lab bench sweep clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile --upgrade pip
	$(PY) -m pip install --quiet --no-compile -r requirements.txt
	$(PY) -m pip install --quiet --no-compile --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

workbook: $(STAMP)
	OMP_NUM_THREADS=$(WORKBOOK_THREADS) $(PY) ci/run_notebooks.py --tier $(TIER)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q

sweep: $(STAMP)
	$(PY) -m rnas_lib.sweep $(STUDY) $(SWEEP_ARGS)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)
	for b in $(filter-out benchmarks/bench_paper_tier.py,$(wildcard benchmarks/bench_*.py)); do \
		echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache
