# `make demo` and `make test` are all a fresh clone needs: each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := runs/demo

.PHONY: demo test lint install clean

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

lint: $(STAMP)
	$(BIN)/ruff check jax_supcon configs tests

test: $(STAMP)
	$(BIN)/ruff check jax_supcon configs tests
	$(BIN)/python -m pytest -q -n 2 --durations=10

clean:
	rm -rf $(VENV) runs
