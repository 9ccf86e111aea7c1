# Two commands (README): `make report` builds the demo report, `make test` runs the tests.
# Both create .venv with pip and install the package first; nothing else is needed
# beyond Python 3.11.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STUDY  ?= studies/demo.yml

.PHONY: test report lab install clean demo-data

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name evaluation --display-name "Python (evaluation)"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

# Validates the study, then runs every chapter for every indicator (full bootstrap
# draws) and writes outputs/<study>/index.html.
report: $(STAMP)
	$(BIN)/evaluation validate $(STUDY) --write-panel
	$(BIN)/evaluation batch $(STUDY) --jobs 2

demo-data: $(STAMP)
	$(BIN)/evaluation demo-data

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=.

clean:
	rm -rf $(VENV) outputs/*/ .pytest_cache
