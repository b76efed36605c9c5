# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= $(if $(FDM_SHARED),$(FDM_SHARED),../shared)
OUT ?= demo-out

.PHONY: install test lint demo clean

install: $(VENV)/.installed

# The exact tested versions (constraints.txt) within pyproject's supported ranges.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $@

lint: install
	$(VENV)/bin/ruff check src tests benchmarks hubconf.py
	$(VENV)/bin/ruff format --check src tests benchmarks hubconf.py

test: lint
	$(PY) -m pytest -q -ra

demo: install
	bash scripts/demo.sh "$(OUT)" "$(SHARED)"

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache
