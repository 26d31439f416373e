# The two commands a new user needs: `make run` and `make test`. Both set up .venv first.
SYSTEM_PYTHON := $(shell command -v python3)
PYTHON ?= $(SYSTEM_PYTHON)
VENV := .venv
PY := $(VENV)/bin/python
# DVC stages call `python`: the one in .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# tinysoundfont's optional playback dependency (pyaudio) does not build here
	$(PY) -m pip install -q --no-deps tinysoundfont==0.3.7
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/dvc repro
	$(PY) -m songspace report

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) stages/bench.py --out metrics/bench.json

clean:
	rm -rf $(VENV)
