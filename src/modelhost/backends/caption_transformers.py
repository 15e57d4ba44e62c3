"""Image captioning with transformers image-to-text models: VisionEncoderDecoder (ViT + GPT-2 and the like),
BLIP, and others that ``AutoModelForImageTextToText`` loads and that caption from ``pixel_values``.

Images are decoded here with Pillow (EXIF orientation applied, converted to RGB); a picture of more than
``max_pixels`` (option, default 40 million) is refused with 400 before it is decoded (decompression bombs).
The image processor is always the PIL one (``backend="pil"``): torchvision is not needed.

Payload: ``prompt`` (optional text the caption starts from: BLIP conditional captioning, or a decoder prefix),
``max_tokens`` (default 30, at most 512). Result: ``{"caption", "prompt_tokens", "completion_tokens"}``.
Options: ``num_beams`` (1), ``trust_remote_code`` (false), ``max_pixels``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

from modelhost.backends.base import Backend, resolve_source
from modelhost.worker.protocol import InvalidInput

DEFAULT_MAX_PIXELS = 40_000_000


def decode_image(data: bytes, max_pixels: int) -> Any:
    """Bytes → RGB PIL image; ``InvalidInput`` for anything Pillow cannot read or that is too large."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise InvalidInput("the uploaded image is empty", param="file", code="invalid_image")
    previous = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = max_pixels // 2  # Pillow raises above twice this, warns above it
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Any = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidInput(
                    f"the image is {width}x{height} pixels; at most {max_pixels} pixels are accepted",
                    param="file",
                    code="image_too_large",
                )
            image.load()
            image = ImageOps.exif_transpose(image) or image
            return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInput(f"the image is too large: {exc}", param="file", code="image_too_large") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"the upload is not a readable image: {exc}", param="file", code="invalid_image") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


class TransformersCaptioner(Backend):
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
        self.max_pixels = int(self.options.get("max_pixels", DEFAULT_MAX_PIXELS))
        config = self.model.config
        text_config = getattr(config, "decoder", None) or getattr(config, "text_config", None) or config
        limit = getattr(text_config, "max_position_embeddings", None) or getattr(text_config, "n_positions", None)
        self.max_positions = int(limit) if isinstance(limit, int) else 0
        self.torch = torch
        self.images = 0

    def infer(self, payload: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
        torch = self.torch
        if "file" not in files:
            raise InvalidInput("an image file is required", param="file", code="missing_file")
        max_tokens = payload.get("max_tokens") or 30
        if not isinstance(max_tokens, int) or not 1 <= max_tokens <= 512:
            raise InvalidInput("max_tokens must be an integer between 1 and 512", param="max_tokens")
        prompt = payload.get("prompt") or None
        image = decode_image(files["file"].read_bytes(), self.max_pixels)
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
            raise InvalidInput(
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
        return {"caption": caption, "prompt_tokens": len(prefix), "completion_tokens": len(completion)}

    def info(self) -> dict[str, Any]:
        return {
            "images_captioned": self.images,
            "architecture": type(self.model).__name__,
            "packages": ["transformers", "torch", "pillow"],
        }
