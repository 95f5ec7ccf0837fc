# ssl-lightning: `make train` pretrains SimCLR on Fashion-MNIST; `make test` runs the test suite.
# Both install what they need first (`make install` is idempotent).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CONFIG ?= ssl_lightning/configs/simclr.yaml
ARGS ?=

.PHONY: install dataset train test docs benchmark release figures tensorboard clean

install: dataset $(BIN)/.installed

# Debian's dataset-fashion-mnist package, when missing and apt is usable (root, or sudo without a
# password). Elsewhere the data module downloads the dataset with torchvision instead.
dataset:
	@if [ -f $(FASHION_MNIST) ]; then \
		true; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update && apt-get install -y dataset-fashion-mnist; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist; \
	else \
		echo "note: $(FASHION_MNIST) is missing and apt-get is not usable here;"; \
		echo "      training will download Fashion-MNIST with torchvision (needs internet)."; \
	fi

# The virtual environment, rebuilt when the package's requirements change. constraints.txt pins the
# exact torch/torchvision builds. Then every subcommand's --help is built once, in one process, and
# stored in the help cache, so that even the first `ssl-lightning SUBCOMMAND --help` is quick.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(BIN)/python -c 'from ssl_lightning.cli.help_cache import warm; warm()'
	touch $@

train: install
	$(BIN)/ssl-lightning fit --config $(CONFIG) $(ARGS)

# One pytest worker per core (pytest-xdist): most of a tiny test is single-threaded Python.
test: install
	$(BIN)/pytest -n auto $(ARGS)

# The documentation site (mkdocs.yml: README.md as the front page, docs/, the API reference from the
# docstrings) into site/; --strict fails on a broken link or anchor, or a docstring that does not
# match its signature. make test builds it too (tests/test_docs.py).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Training throughput of every method and of lightly's SimCLR pipeline (ARGS="--quick" for a short run).
benchmark: install
	$(BIN)/python scripts/benchmark.py training $(ARGS)

# The shipped checkpoints (ssl_lightning/checkpoints/, package data): train every method, export,
# evaluate, write model cards and the manifest
# (about 1.5 hours on 2 CPU cores; ARGS="--gpu" on a GPU).
release: install
	$(BIN)/python scripts/train_release.py $(ARGS)

# The tables and pictures README shows, rewritten on purpose (evaluate, transfer and visualize write
# to a new results/<command>/run_N otherwise): the label-budget sweep of the four 4-epoch runs of
# README's training table (under $(RUNS); about 30 minutes on 2 CPU cores), the transfer comparison
# on digits, and the gallery of the shipped simclr-fashion-mnist.
RUNS ?= checkpoints
figures: install
	$(BIN)/ssl-lightning evaluate $(RUNS)/simclr/version_0/checkpoints/last.ckpt $(RUNS)/moco/version_0/checkpoints/last.ckpt \
		$(RUNS)/byol/version_0/checkpoints/last.ckpt $(RUNS)/barlow_twins/version_0/checkpoints/last.ckpt \
		--names SimCLR "MoCo v2" BYOL "Barlow Twins" --supervised_steps 300 --output_dir results/label_efficiency --overwrite
	$(BIN)/ssl-lightning transfer --config ssl_lightning/configs/transfer_digits.yaml --output_dir results/transfer/digits --overwrite
	$(BIN)/ssl-lightning visualize embeddings simclr-fashion-mnist --output_dir docs/gallery --overwrite
	$(BIN)/ssl-lightning visualize neighbours simclr-fashion-mnist --output_dir docs/gallery --overwrite
	$(BIN)/ssl-lightning visualize views --config ssl_lightning/configs/simclr.yaml --output_dir docs/gallery --overwrite

tensorboard: install
	$(BIN)/tensorboard --logdir checkpoints

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build dist site
