"""Image captioning with transformers image-to-text models: VisionEncoderDecoder (ViT + GPT-2 and the like),
BLIP, and others that ``AutoModelForImageTextToText`` loads and that caption from ``pixel_values``.

Uploads are decoded by ``modelhost.media.images`` with the rules OCR uses (EXIF orientation applied, RGB; a PDF or
multi-page TIFF is captioned by its first page; not an image 415, corrupt 400, more than ``max_image_pixels`` 413
before any pixel is decoded).
The image processor is always the PIL one (``backend="pil"``): torchvision is not needed.

Request: ``modelhost.schemas.image_captioning.CaptionRequest`` — ``prompt`` (optional text the caption starts
from: BLIP conditional captioning, or a decoder prefix), ``max_tokens`` (default 30, at most 512). Result:
``CaptionResult``.
Options: ``num_beams`` (1), ``trust_remote_code`` (false), ``max_image_pixels`` (64 000 000; ``max_pixels`` is read
too).
"""

from __future__ import annotations

from typing import Any

from modelhost.backends.base import Backend, Files, require_file, resolve_source
from modelhost.errors import BadInput
from modelhost.media.images import DEFAULT_DPI, DEFAULT_MAX_PAGES, DEFAULT_MAX_PIXELS, load_pages
from modelhost.schemas.image_captioning import CaptionRequest, CaptionResult


def first_page(data: bytes, max_pixels: int) -> Any:
    """The upload's first page as an RGB image, decoded with the rules OCR uses (``modelhost.media.images``): a PDF or
    a multi-page TIFF is captioned by its first page; what is not an image is 415, corrupt 400, too large 413."""
    pages = load_pages(data, max_pages=DEFAULT_MAX_PAGES, max_pixels=max_pixels, dpi=DEFAULT_DPI)
    try:
        return next(iter(pages))
    finally:
        close = getattr(pages, "close", None)  # a generator: closing it removes a rendered PDF's temporary files
        if close is not None:
            close()


class TransformersCaptioner(Backend[CaptionRequest]):
    requires = ("torch", "transformers", "PIL")
    extra = "vision"
    request_type = CaptionRequest

    def load(self) -> None:
        import torch
        import transformers

        auto_processor: Any = transformers.AutoImageProcessor
        auto_model: Any = transformers.AutoModelForImageTextToText

        torch.set_num_threads(self.spec.threads)
        source = resolve_source(self.spec.source)
        trust = bool(self.options.get("trust_remote_code", False))
        try:
            self.image_processor = auto_processor.from_pretrained(source, backend="pil", trust_remote_code=trust)
        except TypeError:  # transformers < 5 has no ``backend``; its default (slow) processor is the PIL one
            self.image_processor = auto_processor.from_pretrained(source, use_fast=False, trust_remote_code=trust)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=trust)
        self.model: Any = auto_model.from_pretrained(source, trust_remote_code=trust)
        self.model.to(self.spec.device)
        self.model.eval()
        self.encoder_decoder = bool(getattr(self.model.config, "is_encoder_decoder", False))
        self.max_pixels = int(self.options.get("max_image_pixels", self.options.get("max_pixels", DEFAULT_MAX_PIXELS)))
        config = self.model.config
        text_config = getattr(config, "decoder", None) or getattr(config, "text_config", None) or config
        limit = getattr(text_config, "max_position_embeddings", None) or getattr(text_config, "n_positions", None)
        self.max_positions = int(limit) if isinstance(limit, int) else 0
        self.torch = torch
        self.images = 0

    def infer(self, request: CaptionRequest, files: Files) -> CaptionResult:
        torch = self.torch
        max_tokens, prompt = request.max_tokens, request.prompt or None
        image = first_page(require_file(files), self.max_pixels)
        pixel_values = self.image_processor(images=image, return_tensors="pt")["pixel_values"]
        kwargs: dict[str, Any] = {
            "pixel_values": pixel_values.to(self.model.device, self.model.dtype),
            "max_new_tokens": max_tokens,
            "num_beams": int(self.options.get("num_beams", 1)),
            "do_sample": False,
        }
        prefix: list[int] = []
        if prompt:
            prefix = [int(i) for i in self.tokenizer(str(prompt), add_special_tokens=False)["input_ids"]]
            start = getattr(self.model.config, "decoder_start_token_id", None)
            if self.encoder_decoder and start is not None:  # VisionEncoderDecoder: the prompt prefixes the decoder
                prefix = [int(start), *prefix]
                kwargs["decoder_input_ids"] = torch.tensor([prefix], device=self.model.device)
            else:  # BLIP and decoder-style models take the prompt as input_ids
                prefix = [int(i) for i in self.tokenizer(str(prompt))["input_ids"]]
                kwargs["input_ids"] = torch.tensor([prefix], device=self.model.device)
        if self.max_positions and len(prefix) + max_tokens > self.max_positions:
            raise BadInput(
                f"prompt ({len(prefix)} tokens) + max_tokens ({max_tokens}) exceed this model's "
                f"{self.max_positions} positions",
                param="prompt",
                code="context_length_exceeded",
            )
        with torch.inference_mode():
            sequences = self.model.generate(**kwargs)
        ids = [int(i) for i in sequences[0].tolist()]
        generated = ids[len(prefix) :] if prefix and ids[: len(prefix)] == prefix else ids
        special = set(self.tokenizer.all_special_ids)
        completion = [i for i in generated if i not in special]
        caption = str(self.tokenizer.decode(ids, skip_special_tokens=True)).strip()
        self.images += 1
        return CaptionResult(caption=caption, prompt_tokens=len(prefix), completion_tokens=len(completion))

    def info(self) -> dict[str, Any]:
        return {
            "images_captioned": self.images,
            "architecture": type(self.model).__name__,
            "packages": ["transformers", "torch", "pillow"],
        }
