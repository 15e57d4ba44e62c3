"""OCR with RapidOCR on ONNX Runtime and the PP-OCR ONNX models bundled in the ``rapidocr`` wheel (no download).

Source: the directory holding the models (``package:rapidocr/models``). Options, besides those of
``modelhost.backends.vision.ocr_base``: ``params`` — RapidOCR configuration overrides (``{"Det.box_thresh": 0.6}``);
``det_limit_side_len`` (1280) and ``det_limit_type`` (``max``): the detector sees the page scaled so its longer
side is at most this (recognition always reads crops of the full-resolution image). RapidOCR's own default
(shorter side at least 736) upscales a 900×200 snippet to 3312×736 and took 3.6 s instead of 0.2 s here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelhost.backends.base import resolve_source
from modelhost.backends.vision.ocr_base import Line, OcrBackend, reading_order
from modelhost.errors import BackendFault

if TYPE_CHECKING:
    from PIL import Image


class RapidOcr(OcrBackend):
    requires = ("rapidocr", "onnxruntime", "numpy", "PIL")
    extra = "ocr"
    # rapidocr's package import is lazy: its main module brings OpenCV, shapely, pyclipper, omegaconf (1.7 s)
    zygote_preload = ("rapidocr.main", "numpy", "PIL")

    def load(self) -> None:
        import numpy as np
        from PIL import Image, ImageDraw
        from rapidocr import RapidOCR

        model_dir = Path(resolve_source(self.spec.source))
        if not model_dir.is_dir() or not any(model_dir.glob("*.onnx")):
            # Without its model files RapidOCR would try to download them: refuse instead.
            raise BackendFault(f"no RapidOCR ONNX models in {str(model_dir)!r}", code="model_files_missing")
        threads = self.spec.threads
        params: dict[str, Any] = {
            "Global.log_level": "warning",
            "Global.model_root_dir": str(model_dir),
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            "EngineConfig.onnxruntime.use_cuda": self.spec.device.startswith("cuda"),
            "Det.limit_type": str(self.options.get("det_limit_type", "max")),
            "Det.limit_side_len": int(self.options.get("det_limit_side_len", 1280)),
        }
        if self.spec.device.startswith("cuda:"):
            params["EngineConfig.onnxruntime.cuda_ep_cfg.device_id"] = int(self.spec.device.split(":", 1)[1])
        params.update(dict(self.options.get("params", {})))
        self.engine = RapidOCR(params=params)
        self.np = np
        # RapidOCR loads its three models lazily, on the first image that needs each: do it now, with a word.
        warm = Image.new("RGB", (320, 64), "white")
        ImageDraw.Draw(warm).text((10, 20), "modelhost", fill="black")
        self.engine(np.asarray(warm))

    def recognize(self, image: Image.Image) -> list[list[Line]]:
        result: Any = self.engine(self.np.asarray(image))  # RapidOCROutput when det+rec run
        boxes = getattr(result, "boxes", None)
        if boxes is None:
            return []
        lines: list[Line] = []
        for box, text, score in zip(boxes, result.txts or (), result.scores or (), strict=True):
            if not str(text).strip():
                continue
            points = [[round(float(x), 1), round(float(y), 1)] for x, y in box]
            lines.append({"text": str(text), "box": points, "confidence": round(float(score), 4)})
        return reading_order(lines)

    def info(self) -> dict[str, Any]:
        return {"packages": ["rapidocr", "onnxruntime", "pillow"], "engine": "RapidOCR (PP-OCR ONNX)"}
