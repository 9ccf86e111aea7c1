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
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

# Until the report chapters exist this validates the demo study and writes the
# validated panel to outputs/demo/.
report: $(STAMP)
	$(BIN)/evaluation validate $(STUDY) --write-panel

demo-data: $(STAMP)
	$(BIN)/evaluation demo-data

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks

clean:
	rm -rf $(VENV) outputs/*/ .pytest_cache
