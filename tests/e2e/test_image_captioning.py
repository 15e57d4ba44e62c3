"""Image captioning through a real server: a tiny random VisionEncoderDecoder (ViT + GPT-2) built here, added
through the model API, served by the transformers captioning backend (PIL image processor, no torchvision)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.support.server import ServerProcess
from tests.support.tiny_models import build_tiny_captioner

MODEL = "test-tiny-captioner"


@pytest.fixture(scope="module")
def captioner(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = build_tiny_captioner(tmp_path_factory.mktemp("tiny-captioner"))
    with server.client() as http:
        created = http.post(
            "/v1/models",
            json={"id": MODEL, "task": "image-captioning", "backend": "transformers-captioning", "source": str(path)},
        )
        assert created.status_code == 201, created.text
        yield MODEL
        http.delete(f"/v1/models/{MODEL}")


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48)) -> bytes:
    image = Image.new("RGB", size, (200, 30, 30))
    for x in range(size[0] // 2):
        image.putpixel((x, x % size[1]), (0, 0, 255))
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_caption_shapes_and_types(server: ServerProcess, captioner: str, fmt: str, mime: str) -> None:
    with server.client() as http:
        response = http.post(
            "/v1/images/captions",
            data={"model": captioner, "max_tokens": "6"},
            files={"file": (f"x.{fmt.lower()}", image_bytes(fmt), mime)},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == captioner
    assert isinstance(body["caption"], str)
    usage = body["usage"]
    assert 0 <= usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_caption_is_deterministic_and_prompt_prefixes_it(server: ServerProcess, captioner: str) -> None:
    with server.client() as http:

        def caption(**fields: str) -> dict[str, object]:
            response = http.post(
                "/v1/images/captions",
                data={"model": captioner, "max_tokens": "5", **fields},
                files={"file": ("x.png", image_bytes(), "image/png")},
            )
            assert response.status_code == 200, response.text
            body: dict[str, object] = response.json()
            return body

        assert caption() == caption()
        prompted = caption(prompt="An image of")
        assert str(prompted["caption"]).startswith("An image of")
        assert isinstance(prompted["usage"], dict)
        assert prompted["usage"]["prompt_tokens"] > 0


def test_a_pdf_is_captioned_by_its_first_page_as_ocr_reads_it(server: ServerProcess, captioner: str) -> None:
    page = Image.open(io.BytesIO(image_bytes())).convert("RGB")
    pdf = io.BytesIO()
    page.save(pdf, "PDF", save_all=True, append_images=[page])
    with server.client() as http:
        response = http.post(
            "/v1/images/captions",
            data={"model": captioner},
            files={"file": ("two-pages.pdf", pdf.getvalue(), "application/pdf")},
        )
    assert response.status_code == 200, response.text
    assert response.json()["caption"]


def test_bad_images_are_4xx(server: ServerProcess, captioner: str) -> None:
    huge = Image.new("1", (9000, 9000))  # 81 Mpx, a few KB as PNG: a decompression bomb for the 64 Mpx limit
    buf = io.BytesIO()
    huge.save(buf, "PNG")
    cases = [
        (
            {"file": ("x.png", b"this is not an image", "image/png")},
            {"model": captioner},
            415,
            "unsupported_media_type",
        ),
        ({"file": ("x.png", image_bytes()[:40], "image/png")}, {"model": captioner}, 400, "invalid_image"),
        ({"file": ("x.png", buf.getvalue(), "image/png")}, {"model": captioner}, 413, "image_too_large"),
        (
            {"file": ("x.pdf", b"%PDF-1.4\nthis is no pdf\n", "application/pdf")},
            {"model": captioner},
            400,
            "invalid_pdf",
        ),
        ({"file": ("x.png", b"", "image/png")}, {"model": captioner}, 400, "empty_file"),
        ({"file": ("x.png", image_bytes(), "image/png")}, {"model": "nope"}, 404, None),
        ({"file": ("x.png", image_bytes(), "image/png")}, {"model": "gemma-3-270m"}, 404, None),
        ({"file": ("x.png", image_bytes(), "image/png")}, {"model": captioner, "max_tokens": "0"}, 400, None),
        ({"file": ("x.png", image_bytes(), "image/png")}, {"model": captioner, "max_tokens": "x"}, 400, None),
        ({}, {"model": captioner}, 400, "missing_file"),
        (
            {"file": ("x.png", image_bytes(), "image/png")},
            {"model": captioner, "prompt": "cat " * 200},  # more than the tiny decoder's 128 positions
            400,
            "context_length_exceeded",
        ),
    ]
    with server.client() as http:
        for files, data, status, code in cases:
            response = http.post("/v1/images/captions", data=data, files=files or {"unused": ("a", b"a")})
            assert response.status_code == status, (data, response.text)
            error = response.json()["error"]
            assert error["message"]
            if code:
                assert error["code"] == code
        not_multipart = http.post("/v1/images/captions", json={"model": captioner})
        assert not_multipart.status_code == 400
    assert server.worker(captioner) is not None  # bad uploads never crash the worker
