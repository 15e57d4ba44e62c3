"""OCR reading order: rows top to bottom, lines left to right, on boxes as detectors return them."""

from __future__ import annotations

from typing import Any

from modelhost.backends.vision.ocr_base import quad, reading_order


def line(text: str, x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    return {"text": text, "box": quad(x0, y0, x1, y1), "confidence": 1.0}


def texts(rows: list[list[dict[str, Any]]]) -> list[list[str]]:
    return [[str(item["text"]) for item in row] for row in rows]


def test_rows_top_to_bottom_and_left_to_right_whatever_the_detection_order() -> None:
    detected = [
        line("world", 120, 12, 200, 30),
        line("second", 10, 60, 90, 80),
        line("Hello", 10, 10, 100, 32),
        line("row", 100, 62, 150, 79),
    ]
    assert texts(reading_order(detected)) == [["Hello", "world"], ["second", "row"]]


def test_a_slightly_slanted_line_stays_in_its_row_and_a_close_row_is_separate() -> None:
    detected = [
        line("a", 10, 100, 50, 120),
        line("b", 60, 105, 100, 125),  # 5 px lower: same row (within half a line height)
        line("c", 10, 122, 50, 142),  # 22 px lower: the next row
    ]
    assert texts(reading_order(detected)) == [["a", "b"], ["c"]]


def test_columns_of_a_table_read_row_by_row_and_nothing_is_lost() -> None:
    detected = [
        line(f"r{r}c{c}", 10 + 100 * c, 10 + 40 * r, 80 + 100 * c, 30 + 40 * r) for c in (2, 0, 1) for r in (1, 0)
    ]
    rows = reading_order(detected)
    assert texts(rows) == [["r0c0", "r0c1", "r0c2"], ["r1c0", "r1c1", "r1c2"]]
    assert sum(len(row) for row in rows) == len(detected)
    assert reading_order([]) == []


def test_quad_is_clockwise_from_top_left() -> None:
    assert quad(1, 2, 3, 4) == [[1, 2], [3, 2], [3, 4], [1, 4]]
