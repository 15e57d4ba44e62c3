"""README commands and snippets stay true: the Python snippet runs against a real server."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from tests.support.server import REPO_ROOT, ServerProcess

README = (REPO_ROOT / "README.md").read_text()


def test_readme_python_snippet_runs(server: ServerProcess) -> None:
    (snippet,) = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert "http://127.0.0.1:8000" in snippet
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(snippet.replace("http://127.0.0.1:8000", server.url), {})  # noqa: S102 - our own README
    assert out.getvalue().split() == ["2", "384"]


def test_readme_setup_commands_exist() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", README, flags=re.M):
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"README names `make {target}`"
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
    for link in re.findall(r"\]\((docs/[^)]+)\)", README):
        assert Path(REPO_ROOT / link).is_file(), link
