# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench bench-inputs bench-recipe bench-embeddings bench-pitch bench-profile bench-snr bench-suite gpu-check venv clean

$(BIN)/timbrespace-ray: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

venv: $(BIN)/timbrespace-ray

demo: venv
	$(BIN)/timbrespace-ray demo --output demo_output

test: venv
	$(BIN)/python -m pytest -q -n 2 --dist loadscope tests

bench: venv
	$(BIN)/python tests/benchmarks/bench_features.py

bench-inputs: venv
	$(BIN)/python tests/benchmarks/bench_inputs.py

bench-recipe: venv
	$(BIN)/python tests/benchmarks/bench_recipe.py --set train.cpus_per_worker=2

bench-embeddings: venv
	$(BIN)/python tests/benchmarks/bench_embeddings.py

bench-pitch: venv
	$(BIN)/python tests/benchmarks/bench_pitch.py

bench-profile: venv
	$(BIN)/python tests/benchmarks/bench_profile.py

bench-snr: venv
	$(BIN)/python tests/benchmarks/bench_snr.py

# the evaluation suite's sets (Debian packages fetched with apt-get: needs the network once)
bench-suite: venv
	$(BIN)/python tests/benchmarks/speech_sets.py

# on a CUDA machine: tokens, train and embed on the GPU in bf16 (k-means via cuML when installed)
gpu-check: venv
	$(BIN)/python tests/benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) demo_output
