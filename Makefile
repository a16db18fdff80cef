# Two commands do all the set-up on a fresh machine: `make run` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the CPU build; other specs pull multi-GB CUDA builds
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
