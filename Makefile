# `make demo` and `make test` are all the set-up there is: the first call creates .venv, installs the
# project and any missing system package (scripts/bootstrap.sh); later calls start at once.
VENV    := .venv
STAMP   := $(VENV)/.installed
PY      := $(VENV)/bin/python
# real data sets shared beside the project (see ../shared/data/README.md); override by setting it
DOMAINFM_DATA ?= $(abspath $(wildcard ../shared/data))
export DOMAINFM_DATA

.PHONY: demo test lint bench install clean gpu-check

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/domainfm demo -o runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

# peers used only by the benchmarks (datatrove, lightly) are installed on demand
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'

# everything that needs a GPU (prepare here, run there: scripts/gpu_check.py); ARGS=--smoke: CPU, toy sizes
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py all -o runs/gpu_check $(ARGS)

clean:
	rm -rf $(VENV) runs
