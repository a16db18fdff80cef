# Two commands do all the set-up on a fresh machine: `make run` (the main job) and `make test`.
TORCH ?= 2.13.0
# another torch gets a venv of its own: `make test TORCH=2.11.0` (the GPU machines' release) on this CPU
VENV ?= $(if $(filter 2.13.0,$(TORCH)),.venv,.venv-torch$(TORCH))
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH)   # 2.13.0: the CPU build on disk; other releases: multi-GB CUDA builds from PyPI
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/herd speedrun --preset tiny --out runs/speedrun

test: $(STAMP)
	$(PY) -m pytest -q -rs

bench: $(STAMP)
	$(PY) benchmarks/decode_cpu.py

clean:
	rm -rf $(VENV) .pytest_cache
