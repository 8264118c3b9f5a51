# `make demo` and `make test` are all a fresh clone needs: each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := runs/demo

.PHONY: demo test lint install clean bench-cpu accelerator-wheels

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/jax-supcon --config=configs/digits_supcon.py --workdir=$(DEMO)/pretrain
	$(BIN)/jax-supcon --config=configs/digits_linear.py --workdir=$(DEMO)/linear \
		--config.pretrained_workdir=$(DEMO)/pretrain
	@$(BIN)/python -c "import json; s = json.load(open('$(DEMO)/linear/summary.json')); print(f\"\\ndemo: SupCon on digits, linear-evaluation test top-1 = {s['test_top1']:.4f} ({s['test_examples']} held-out images); outputs in $(DEMO)/\")"

# The CPU step comparison: this library's SupCon ResNet-18 step against the same step in PyTorch
# (torch lives in its own virtual environment, .venv-torch; it is not a dependency).
bench-cpu: $(STAMP)
	test -x .venv-torch/bin/python || ($(PYTHON) -m venv .venv-torch && .venv-torch/bin/pip install --quiet torch==2.13.0 numpy)
	JAX_NUM_CPU_DEVICES=1 $(BIN)/python -m jax_supcon.bench step --config=configs/bench_cifar_resnet18.py --steps=20
	JAX_NUM_CPU_DEVICES=1 JAX_SUPCON_HUGE_PAGES=0 $(BIN)/python -m jax_supcon.bench step \
		--config=configs/bench_cifar_resnet18.py --steps=20
	.venv-torch/bin/python benchmarks/torch_supcon_step.py --steps=20
	.venv-torch/bin/python benchmarks/torch_supcon_step.py --steps=20 --channels_last
	GLIBC_TUNABLES=glibc.malloc.hugetlb=1 .venv-torch/bin/python benchmarks/torch_supcon_step.py --steps=20
	GLIBC_TUNABLES=glibc.malloc.hugetlb=1 .venv-torch/bin/python benchmarks/torch_supcon_step.py --steps=20 \
		--channels_last

# The pure-Python wheels benchmarks/accelerator.sh needs beyond jax, flax, optax and orbax (an
# accelerator image without them gets them by bringing benchmarks/wheels/ along).
accelerator-wheels: $(STAMP)
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --dest benchmarks/wheels \
		"ml-collections==$$($(BIN)/python -c 'from importlib.metadata import version; print(version("ml-collections"))')" \
		"dm-pix==$$($(BIN)/python -c 'from importlib.metadata import version; print(version("dm-pix"))')"
	ls benchmarks/wheels

lint: $(STAMP)
	$(BIN)/ruff check jax_supcon configs tests benchmarks

test: $(STAMP)
	$(BIN)/ruff check jax_supcon configs tests benchmarks
# Three workers on two cores: the tests that start processes or write checkpoints leave a core
# idle part of the time, which a third worker fills (8.3 instead of 9.2 minutes, docs/development.md).
	$(BIN)/python -m pytest -q -n 3 --durations=10

clean:
	rm -rf $(VENV) runs
