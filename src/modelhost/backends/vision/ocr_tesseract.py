"""OCR with Tesseract (Debian ``tesseract-ocr`` + language packs such as ``tesseract-ocr-eng``) through pytesseract.

Source: the language(s) to read, Tesseract-style (``eng``, ``eng+deu``). Options, besides those of
``modelhost.backends.vision.ocr_base``: ``psm`` (page segmentation mode, Tesseract's default 3), ``tessdata_dir``,
``timeout_seconds`` per page (120). Lines come in Tesseract's own reading order (blocks, paragraphs, lines); a
line's confidence is the mean of its words' (0..1).
"""

from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING, Any

from modelhost.backends.vision.ocr_base import Line, OcrBackend, quad
from modelhost.errors import BackendFault, BadInput

if TYPE_CHECKING:
    from PIL import Image


class TesseractOcr(OcrBackend):
    requires = ("pytesseract", "PIL")
    extra = "ocr"

    def load(self) -> None:
        import pytesseract

        # Tesseract's OpenMP threads: as many as the model's intra-op thread setting.
        os.environ["OMP_THREAD_LIMIT"] = str(self.spec.threads)
        try:
            self.version = str(pytesseract.get_tesseract_version())
        except pytesseract.TesseractNotFoundError:
            raise BackendFault(
                "the tesseract program is not installed (Debian: tesseract-ocr tesseract-ocr-eng)",
                code="model_files_missing",
            ) from None
        self.lang = self.spec.source.strip() or "eng"
        config = []
        if "psm" in self.options:
            config.append(f"--psm {int(self.options['psm'])}")
        if self.options.get("tessdata_dir"):
            config.append(f"--tessdata-dir {shlex.quote(str(self.options['tessdata_dir']))}")
        self.config = " ".join(config)
        self.timeout = float(self.options.get("timeout_seconds", 120))
        available = set(pytesseract.get_languages(config=self.config))
        missing = [lang for lang in self.lang.split("+") if lang not in available]
        if missing:
            raise BackendFault(
                f"tesseract has no language data for {', '.join(missing)} (Debian: tesseract-ocr-{missing[0]}); "
                f"installed: {', '.join(sorted(available))}",
                code="model_files_missing",
            )
        self.pytesseract = pytesseract

    def recognize(self, image: Image.Image) -> list[list[Line]]:
        pytesseract = self.pytesseract
        try:
            data = pytesseract.image_to_data(
                image, lang=self.lang, config=self.config, timeout=self.timeout, output_type=pytesseract.Output.DICT
            )
        except RuntimeError as exc:  # pytesseract's timeout
            raise BadInput(f"tesseract: {exc}", param="file", status=413, code="ocr_timeout") from None
        grouped: dict[tuple[int, int, int], list[int]] = {}
        for i, word in enumerate(data["text"]):
            if int(data["level"][i]) == 5 and str(word).strip():
                key = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
                grouped.setdefault(key, []).append(i)
        rows: list[list[Line]] = []
        for words in grouped.values():  # dicts keep Tesseract's reading order
            x0 = min(int(data["left"][i]) for i in words)
            y0 = min(int(data["top"][i]) for i in words)
            x1 = max(int(data["left"][i]) + int(data["width"][i]) for i in words)
            y1 = max(int(data["top"][i]) + int(data["height"][i]) for i in words)
            confidences = [float(data["conf"][i]) for i in words if float(data["conf"][i]) >= 0]
            confidence = sum(confidences) / len(confidences) / 100 if confidences else 0.0
            text = " ".join(str(data["text"][i]).strip() for i in words)
            rows.append([{"text": text, "box": quad(x0, y0, x1, y1), "confidence": round(confidence, 4)}])
        return rows

    def info(self) -> dict[str, Any]:
        return {"packages": ["pytesseract", "pillow"], "engine": f"Tesseract {self.version}", "lang": self.lang}
