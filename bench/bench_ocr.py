"""OCR through modelhost vs the library called directly, measured in one run.

Prints seconds per page (median over pages × runs) for A4 pages rendered at 150 dpi (1240 × 1754, ~30 lines of
text in six fonts):

* ``POST /v1/ocr`` with the built-in ``rapidocr`` model, one PNG per request, against ``RapidOCR`` called
  in-process with the same settings (one intra-op thread, detector side limit 1280) on the same PNG bytes
  (Pillow decode included on both sides, as the worker decodes); also RapidOCR with its own defaults, for scale;
* the same pages as one multi-page PDF through the server (``pdftoppm`` at 200 dpi included), per page;
* ``tesseract-eng`` through the server against ``pytesseract.image_to_data`` in-process (one OpenMP thread).

Run: ``python bench/bench_ocr.py [--pages 4 --runs 2]``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.ocr_images import FONTS, SENTENCES, encode, render_lines  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

A4_150DPI = (1240, 1754)


def make_pages(count: int) -> list[bytes]:
    pages = []
    for p in range(count):
        lines = [f"{i + 1}. {SENTENCES[(i + p) % len(SENTENCES)]}" for i in range(30)]
        image = render_lines(lines, FONTS[p % len(FONTS)], 24, margin=90, spacing=2.0, page=A4_150DPI)
        pages.append(encode(image, "PNG"))
    return pages


def timed_pair(
    first: Callable[[bytes], object], second: Callable[[bytes], object], pages: list[bytes], runs: int
) -> tuple[float, float]:
    """Median seconds per page of two callables, interleaved page by page so that load on a shared machine
    falls on both alike."""
    first(pages[0])  # warm-up
    second(pages[0])
    a, b = [], []
    for _ in range(runs):
        for page in pages:
            for fn, times in ((first, a), (second, b)):
                t = time.perf_counter()
                fn(page)
                times.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b)


def direct_rapidocr(params: dict[str, object]) -> Callable[[bytes], object]:
    import numpy as np
    from PIL import Image
    from rapidocr import RapidOCR

    engine = RapidOCR(params={"Global.log_level": "warning", **params})

    def run(data: bytes) -> object:
        with Image.open(io.BytesIO(data)) as image:
            return engine(np.asarray(image.convert("RGB")))

    return run


def direct_tesseract() -> Callable[[bytes], object]:
    import pytesseract
    from PIL import Image

    os.environ["OMP_THREAD_LIMIT"] = "1"

    def run(data: bytes) -> object:
        with Image.open(io.BytesIO(data)) as image:
            return pytesseract.image_to_data(image.convert("RGB"), lang="eng", output_type=pytesseract.Output.DICT)

    return run


def through_server(server: ServerProcess, model: str, filename: str = "page.png") -> Callable[[bytes], object]:
    http = server.client(timeout=600)

    def run(data: bytes) -> object:
        response = http.post("/v1/ocr", files={"file": (filename, data)}, data={"model": model})
        assert response.status_code == 200, response.text
        return response.json()

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    pages = make_pages(args.pages)

    same_settings = {
        "EngineConfig.onnxruntime.intra_op_num_threads": 1,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        "Det.limit_type": "max",
        "Det.limit_side_len": 1280,
    }
    from PIL import Image

    images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pages]
    pdf = encode(images[0], "PDF", save_all=True, append_images=images[1:], resolution=150)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp)).start()
        try:
            served, direct = timed_pair(
                through_server(server, "rapidocr"), direct_rapidocr(same_settings), pages, args.runs
            )
            _, direct_defaults = timed_pair(lambda _: None, direct_rapidocr({}), pages[:2], 1)
            served_tess, direct_tess = timed_pair(
                through_server(server, "tesseract-eng"), direct_tesseract(), pages, args.runs
            )
            pdf_call = through_server(server, "rapidocr", "doc.pdf")
            pdf_times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                result = pdf_call(pdf)
                pdf_times.append((time.perf_counter() - t) / args.pages)
            assert isinstance(result, dict)
            assert len(result["pages"]) == args.pages
        finally:
            server.stop()

    print(f"== OCR: seconds per A4 page at 150 dpi ({args.pages} pages x {args.runs} runs, medians; 1 thread) ==")
    print(f"rapidocr   server {served:.3f} s  direct {direct:.3f} s  ratio {served / direct:.3f}x")
    print(f"rapidocr   direct with the library's own defaults (all threads, det min side 736): {direct_defaults:.3f} s")
    print(
        f"rapidocr   server, one {args.pages}-page PDF (pdftoppm at 200 dpi included): "
        f"{statistics.median(pdf_times):.3f} s"
    )
    print(f"tesseract  server {served_tess:.3f} s  direct {direct_tess:.3f} s  ratio {served_tess / direct_tess:.3f}x")


if __name__ == "__main__":
    main()
