#!/usr/bin/env bash
# One-shot GPU check of memory-aware admission (issue 12 §2): runs tests/e2e/test_memory_admission.py with two
# sentence-transformers MiniLM workers on CUDA under gpu_policy=memory and a GPU budget that fits one of them, and
# prints nvidia-smi and the measured figures. Installs nothing: run it from the repository root with the project's
# venv (.venv, torch with CUDA) already in place. Takes 1–3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
nvidia-smi
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))'
export MODELHOST_TEST_DEVICE=${MODELHOST_TEST_DEVICE:-cuda}
# the test writes the measured footprints, the budget, the eviction counts and the sampler's maximum here
export MODELHOST_TEST_REPORT=${MODELHOST_TEST_REPORT:-$(mktemp)}
status=0
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} timeout 290 "$PY" -m pytest -x -q -p no:cacheprovider tests/e2e/test_memory_admission.py || status=$?
cat "$MODELHOST_TEST_REPORT"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
exit $status
