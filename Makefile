# The two commands a user needs: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint install clean

$(STAMP): pyproject.toml constraints-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints-dev.txt -e '.[host,device,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeprune demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu and not trt and not jetson"

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check edgeprune tests benchmarks
	$(BIN)/ruff format --check edgeprune tests benchmarks
	$(BIN)/mypy edgeprune

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
