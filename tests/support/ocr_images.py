"""Images with known text for OCR tests and benchmarks, rendered with Pillow in Debian's fonts."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation2"))
# fonts-dejavu-core and fonts-liberation2 (scripts/system-deps.sh)
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansMono.ttf",
    "LiberationSans-Regular.ttf",
    "LiberationSerif-Regular.ttf",
    "LiberationMono-Regular.ttf",
)
SENTENCES = (
    "Invoice 2024-117 was paid on 3 March.",
    "The quick brown fox jumps over the lazy dog.",
    "Total due: 1,284.50 EUR (incl. VAT 19%)",
    "Meeting moved to Room B, 14:30 sharp!",
    "Please reply to support@example.com today.",
    "Pack my box with five dozen liquor jugs.",
)


def font_path(name: str) -> Path:
    for folder in FONT_DIRS:
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"font {name} not found: install fonts-dejavu-core and fonts-liberation2")


def render_lines(
    lines: list[str],
    font: str,
    size: int,
    *,
    margin: int = 40,
    spacing: float = 1.8,
    page: tuple[int, int] | None = None,
) -> Image.Image:
    """Black text on white, one line under the other; the canvas fits the text unless ``page`` is given."""
    face = ImageFont.truetype(str(font_path(font)), size)
    widths = [int(face.getlength(line)) for line in lines]
    step = int(size * spacing)
    width, height = page or (max(widths) + 2 * margin, step * len(lines) + 2 * margin)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * step), line, font=face, fill="black")
    return image


def degrade(image: Image.Image, *, angle: float, noise: float, seed: int, blur: float = 0.6) -> Image.Image:
    """A scanned look: slight rotation, blur, grey background, salt-and-pepper-free Gaussian-like pixel noise."""
    rng = random.Random(seed)
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white")
    soft = rotated.filter(ImageFilter.GaussianBlur(blur)).convert("L")
    noisy = soft.point(lambda v: int(40 + v * 0.75))  # lower contrast: ink ~40, paper ~231
    pixels = noisy.load()
    assert pixels is not None
    width, height = noisy.size
    for _ in range(int(width * height * noise)):
        x, y = rng.randrange(width), rng.randrange(height)
        value = pixels[x, y]
        assert isinstance(value, int)
        pixels[x, y] = max(0, min(255, value + rng.randint(-90, 90)))
    return noisy.convert("RGB")


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width``×``height`` pixels but carries almost no data (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalize(text: str) -> str:
    return " ".join(text.split())


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate after collapsing whitespace (line breaks and spaces count as one space)."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    return levenshtein(ref, hyp) / max(len(ref), 1)
