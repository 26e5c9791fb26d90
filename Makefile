# weft-lightning: install, test, demo, lint (ruff + mypy), bench.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WEFT := $(BIN)/weft
DEMO_DIR ?= runs/demo

.PHONY: install test test-fast demo lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

demo: install
	@rm -rf $(DEMO_DIR)
	@start=$$(date +%s); \
	$(WEFT) fit --config configs/demo.yaml --trainer.default_root_dir $(DEMO_DIR) && \
	$(WEFT) test --config configs/demo.yaml --trainer.default_root_dir $(DEMO_DIR) --ckpt_path best && \
	echo "Demo finished in $$(( $$(date +%s) - start )) s." && \
	echo "Checkpoints:     $$(ls -d $(DEMO_DIR)/lightning_logs/*/checkpoints | tail -n 1)" && \
	echo "Prediction maps: $(DEMO_DIR)/predictions/synthetic/"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy weft_lightning

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python benchmarks/bench_train_step.py --preset cpu-small --with-cp \
		--out benchmarks/results/train_step_cpu_small_cp.json
	$(BIN)/python benchmarks/bench_train_step.py --preset cpu-small --no-with-cp \
		--out benchmarks/results/train_step_cpu_small_nocp.json
	$(BIN)/python benchmarks/bench_inference.py --preset cpu-small \
		--out benchmarks/results/inference_cpu_small.json
	$(BIN)/python benchmarks/common.py readme

clean:
	rm -rf runs .pytest_cache .ruff_cache
