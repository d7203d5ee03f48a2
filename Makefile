# Two commands a user needs: `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/quickstart
# The public datasets are read in place; point HNT_DATA_DIR elsewhere to use another copy.
ifneq ($(wildcard ../shared/data),)
export HNT_DATA_DIR ?= $(abspath ../shared/data)
endif

.PHONY: install install-test quickstart test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,plots]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

quickstart: install
	$(PY) -m hnt_jax.main --config configs/synthetic.py --workdir $(WORKDIR)

# Test files are spread over TEST_WORKERS processes (pytest-xdist), each file whole on one worker so that its
# module fixtures are built once; most of the suite is single-threaded compilation.
TEST_WORKERS ?= 2

test: install-test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) workdirs .pytest_cache
