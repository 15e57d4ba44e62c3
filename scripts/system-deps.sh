#!/usr/bin/env bash
# Debian packages modelhost's default backends and tests use. Idempotent: installs only what is missing.
# Run as root (CI, containers) or through sudo; `make install` calls it when it can.
set -euo pipefail
PACKAGES=(
  # one package per line; keep the reason next to it
  ffmpeg  # decodes uploaded audio (any format, any rate) in speech workers
  flite   # test speech with known text (several voices)
  espeak-ng  # the espeak-ng text-to-speech backend; test speech in other voices and languages
  pocketsphinx-testdata  # real human speech for tests (LibriVox readings with transcripts)
  tesseract-ocr      # the tesseract OCR backend (model tesseract-eng)
  tesseract-ocr-eng  # English language data for tesseract
  poppler-utils      # pdftoppm/pdfinfo: PDF pages rendered to images for OCR in workers
  fonts-dejavu-core  # fonts the OCR tests render text with
  fonts-liberation2  # more fonts (Liberation Sans/Serif/Mono) for the OCR tests
  g++    # compiles llama-cpp-python (llama.cpp) during pip install: it has no wheel on PyPI
  libreoffice-impress      # presentation videos: .pptx → PDF (soffice --headless --convert-to pdf)
  fonts-crosextra-carlito  # metric-compatible stand-in for Calibri, the default font of PowerPoint decks
  redis-server  # the cluster tests: a private, restartable Redis broker per test run (tests/e2e/test_cluster.py)
  cmake  # the same build (scikit-build-core fetches a cmake wheel when this one is missing or too old)
  chromium  # the dashboard tests drive it headless through Playwright (tests/e2e/test_dashboard.py)
)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "system-deps: missing Debian packages ${missing[*]}; install them as root" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
