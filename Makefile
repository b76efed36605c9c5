# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= $(if $(FDM_SHARED),$(FDM_SHARED),../shared)
OUT ?= demo-out

.PHONY: install test test-litert lint demo clean

install: $(VENV)/.installed

# The exact tested versions (constraints.txt) within pyproject's supported ranges: everything (tests, export,
# INT8, OpenVINO, ExecuTorch, timm).
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $@ $(VENV)/.installed-demo

# What the demo needs only (core + the train extra: about 5.6 of the full 6.5 GB on disk is torch with its
# CUDA libraries either way), with pip's progress shown.
$(VENV)/.installed-demo: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing fdmobilenet for the demo (torch, torchvision, scikit-learn, matplotlib; several GB on a fresh machine) ..."
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -c constraints.txt -e ".[train]"
	touch $@

lint: install
	$(VENV)/bin/ruff check src tests benchmarks hubconf.py
	$(VENV)/bin/ruff format --check src tests benchmarks hubconf.py

test: lint
	$(PY) -m pytest -q -ra

# LiteRT's converter cannot share .venv (its pins differ from constraints.txt): its own environment, and the
# tests that need it (skipped by `make test`).
VENV_LITERT ?= .venv-litert
test-litert:
	test -x $(VENV_LITERT)/bin/python || $(PYTHON) -m venv $(VENV_LITERT)
	$(VENV_LITERT)/bin/python -m pip install -q --disable-pip-version-check -e ".[litert,train]" "pytest>=8"
	$(VENV_LITERT)/bin/python -m pytest -q -p no:cacheprovider tests/test_litert.py

demo: $(VENV)/.installed-demo
	bash scripts/demo.sh "$(OUT)" "$(SHARED)"

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache
