#!/usr/bin/env bash
# One-shot GPU check of cold start for GPU models (issue 12 §1): MiniLM on sentence-transformers with device cuda,
# plain spawn vs a fork from the torch zygote → first result (bench/bench_cold_start.py --device cuda; each copy
# prints the GPU memory its worker reports, so a fork that silently fell back to the CPU would show), then the same
# on the CPU of that machine for comparison. Installs nothing: run it from the repository root with the project's
# venv (.venv, torch with CUDA) in place, or PYTHON=python3. Takes 1–3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))'
export PYTHONUNBUFFERED=1
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} "$PY" bench/bench_cold_start.py --only torch --device cuda --runs "${RUNS:-3}"
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} "$PY" bench/bench_cold_start.py --only torch --device cpu --runs "${RUNS:-3}"
