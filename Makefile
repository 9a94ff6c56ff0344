# Two entry points (see README): `make quick` runs the main experiment, `make test` the whole test suite.
# Both create the virtual environment and prepare the data root first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_DATA ?= ../shared/data
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg

.PHONY: setup data quick test notebooks browser clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# Offline machines: copy the dataset files from a local mirror (here ../shared/data) into data/.
# Elsewhere this does nothing and the package downloads what it needs on first use.
data:
	@if [ -d "$(SHARED_DATA)" ]; then \
		mkdir -p data/MNIST/raw data/cifar-10-batches-py; \
		cp -n $(SHARED_DATA)/MNIST/raw/* data/MNIST/raw/ 2>/dev/null || true; \
		cp -n $(SHARED_DATA)/cifar-10-batches-py/* data/cifar-10-batches-py/ 2>/dev/null || true; \
		chmod -R u+w data; \
		echo "data/ prepared from $(SHARED_DATA)"; \
	fi

# Through `lth sweep`: 1-thread Ray tasks on every core beat one 2-thread process here (benchmarks/bench_sweep.py).
quick: setup data
	$(VENV)/bin/lth sweep lenet-mnist --profile quick --control reinit --trials 2 --json reports/lenet-mnist-quick.json
	$(VENV)/bin/lth report lenet-mnist --from-json reports/lenet-mnist-quick.json --out reports

# Unit tests, the notebooks under nbval, and the JupyterLab browser test, in a fresh run store.
test: setup data
	LTH_PROFILE=quick LTH_RUNS_DIR=$$(mktemp -d) $(PY) -m pytest tests notebooks e2e $(NBVAL) --durations=15

# Re-execute the notebooks in CI conditions (quick profile, a fresh run store, a fresh HOME) and save
# their outputs, widget state included, so that nbval compares against what a fresh clone produces.
# NB="notebooks/01_lenet_mnist.ipynb" executes one.
NB ?= notebooks/0*.ipynb
notebooks: setup data
	HOME=$$(mktemp -d) LTH_PROFILE=quick LTH_RUNS_DIR=$$(mktemp -d) $(VENV)/bin/jupyter nbconvert --to notebook \
		--execute --inplace --ExecutePreprocessor.timeout=1800 --ExecutePreprocessor.kernel_name=python3 $(NB)

clean:
	rm -rf $(VENV) reports
