"""The Python examples of the README and of the pages under docs/ run as written (the docs stay true)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(page.relative_to(ROOT).as_posix(), k, block) for page in PAGES
          for k, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))]


def test_readme_has_python_examples():
    assert sum(1 for page, _, _ in BLOCKS if page == "README.md") >= 2


@pytest.mark.parametrize("page, index, block", BLOCKS, ids=[f"{page}-{k}" for page, k, _ in BLOCKS])
def test_python_example_runs(page, index, block):
    namespace: dict = {}
    exec(compile(block, f"{page} python block {index}", "exec"), namespace)
