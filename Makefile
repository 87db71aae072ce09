# `make demo` and `make test` work on a fresh machine: they create the virtualenv if missing.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --editable '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/wvirt demo --out out/demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) out build *.egg-info
