# The two commands a new user needs: `make run` and `make test`. Both set up .venv first.
SYSTEM_PYTHON := $(shell command -v python3)
PYTHON ?= $(SYSTEM_PYTHON)
VENV := .venv
PY := $(VENV)/bin/python
# DVC stages call `python`: the one in .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
STAMP := $(VENV)/.installed
# The numeric kernels' CPU instruction set, explicit (songspace/__init__.py sets the same
# defaults for a bare `dvc repro`); see README "Reproducibility".
export ATEN_CPU_CAPABILITY ?= avx2
export ONEDNN_MAX_CPU_ISA ?= AVX2
export MKL_CBWR ?= AVX2,STRICT
UV := uv==0.13.9

.PHONY: setup run check test test-slow bench thesis lock clean

# requirements.lock: every package, exact version and sha256, resolved from requirements.txt
# (`make lock` refreshes it). tinysoundfont is installed apart, without its dependencies: its
# optional playback dependency (pyaudio) does not build here.
# Until requirements.lock exists (`make lock`), requirements.txt is installed as it is.
REQS := $(if $(wildcard requirements.lock),requirements.lock,requirements.txt)
REQ_FLAGS := $(if $(wildcard requirements.lock),--require-hashes,)
$(STAMP): $(REQS) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(REQ_FLAGS) -r $(REQS)
	$(PY) -m pip install -q --no-deps tinysoundfont==0.3.7
	# musicnn's pretrained weights (its data files only; its code imports TensorFlow, never used)
	$(PY) -m pip install -q --no-deps musicnn==0.1.0
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# Resolve requirements.txt into requirements.lock with uv (hashes come from the index, nothing
# is downloaded). Pins already in requirements.lock are kept unless requirements.txt excludes them;
# `make lock LOCK_FLAGS=--upgrade` re-resolves everything, `LOCK_FLAGS="--upgrade-package NAME"` one.
LOCK_FLAGS ?=
lock:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(UV)
	$(VENV)/bin/uv pip compile -q --python $(PY) --generate-hashes --custom-compile-command "make lock" \
	  $(LOCK_FLAGS) --output-file requirements.lock requirements.txt

check: setup
	$(PY) -m songspace check

run: check
	$(VENV)/bin/dvc repro
	$(PY) -m songspace report

# two processes (pytest-xdist), a test file per process at a time: the suite is mostly real
# decoding, training and `dvc repro` subprocesses, each on one core
TEST_FLAGS ?= -n 2 --dist loadfile
# `make test`: the default suite; the real `dvc repro` runs and the other slow checks are marked
# `slow` and run by `make test-slow` (CI runs both)
test: setup
	$(PY) -m pytest -q $(TEST_FLAGS) -m "not slow"

test-slow: setup
	$(PY) -m pytest -q $(TEST_FLAGS) -m slow

bench: setup
	# benchmarks/ (beside the package); metrics/stage_times.txt: per-stage wall times of a
	# default `dvc repro` (see README)
	$(PY) -m benchmarks.bench --out metrics/bench.json --markdown metrics/bench.md --stage-times metrics/stage_times.txt

# The thesis's comparison as DVC experiments: every model with triplet loss, the ResNets with
# contrastive loss, on a small budget (THESIS_BUDGET), then the table.
THESIS_BUDGET ?= -S train.epochs=4 -S train.steps_per_epoch=10
thesis: setup
	for m in model1 model2 model3 model4 model5 model6 resnet18 resnet50; do \
	  dvc exp run --queue -n thesis-$$m -S model=$$m $(THESIS_BUDGET); done
	for m in resnet18 resnet50; do \
	  dvc exp run --queue -n thesis-$$m-contrastive -S model=$$m -S loss=contrastive \
	    -S augment.noise.strength=0.5 $(THESIS_BUDGET); done
	dvc queue start -j 1
	while dvc queue status | grep -qE 'Queued|Running'; do sleep 30; done
	dvc exp show --no-pager --md --drop '.*' \
	  --keep '^(Experiment|model|loss|headline.accuracy|headline.ci_low|headline.ci_high|headline.best_distance|headline.best_scaler)$$'

clean:
	rm -rf $(VENV)
