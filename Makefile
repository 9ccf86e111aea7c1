# Two commands (README): `make report` builds the demo report, `make test` runs the tests.
# Both create .venv with pip and install the package first; nothing else is needed
# beyond Python 3.11. `make report` installs the runtime only (the package and its Jupyter
# kernel); `make test` adds the test extras (peer estimators and validation data).

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP    := $(VENV)/.installed-test
STUDY  ?= studies/demo.yml

.PHONY: test report lab install install-test clean demo-data

install: $(RUNTIME_STAMP)

install-test: $(TEST_STAMP)

# the runtime: the package with its dependencies and the notebooks' kernel
$(RUNTIME_STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name evaluation --display-name "Python (evaluation)"
	touch $(RUNTIME_STAMP)

# the test extras on top of the runtime
$(TEST_STAMP): $(RUNTIME_STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest

# Validates the study, then runs every chapter for every indicator (full bootstrap
# draws) and writes outputs/<study>/index.html.
report: $(RUNTIME_STAMP)
	$(BIN)/evaluation validate $(STUDY) --write-panel
	$(BIN)/evaluation batch $(STUDY) --jobs 2

demo-data: $(RUNTIME_STAMP)
	$(BIN)/evaluation demo-data

lab: $(RUNTIME_STAMP)
	$(BIN)/jupyter lab --notebook-dir=.

clean:
	rm -rf $(VENV) outputs/*/ .pytest_cache
