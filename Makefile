# modelhost — `make serve` and `make test` work on a fresh machine (Python 3.11, Debian).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
# torch is pinned in the same pip command as sentence-transformers, so no resolver reaches for a CUDA build.
TORCH := torch==2.13.0
# llama-cpp-python has no wheel on PyPI: pip compiles llama.cpp (about 5 min on 2 cores) and caches the wheel in
# ~/.cache/pip. GGML_NATIVE=OFF builds the portable AVX2/FMA/F16C kernels: a native build turns on AMX on CPUs that
# report it, and AMX crashes (SIGSEGV in ldtilecfg) in VMs that do not pass it through. pip's wheel cache ignores
# CMAKE_ARGS: after changing them, `$(VENV)/bin/pip cache remove llama_cpp_python` before reinstalling.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: install serve test test-unit lint typecheck bench docs clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/system-deps.sh
	@if command -v apt-get >/dev/null 2>&1; then ./scripts/system-deps.sh; else echo "no apt-get: install the packages in scripts/system-deps.sh yourself"; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH) -e '.[defaults,dev]'
	touch $(STAMP)

serve: install
	$(VENV)/bin/modelhost serve

test: install
	$(VENV)/bin/pytest

test-unit: install
	$(VENV)/bin/pytest tests/unit

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/bench_embeddings.py
	$(PY) bench/bench_speech.py
	$(PY) bench/bench_ocr.py
	$(PY) bench/bench_textgen.py

docs: install
	$(PY) -m modelhost.config --write docs/configuration.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
