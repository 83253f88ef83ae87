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


def test_every_design_reference_names_an_existing_section():
    secs = set(_sections(DOC.read_text()))
    bad, seen = [], 0
    ref = re.compile(r"docs/design\.md\s*((?:§\s*\d+(?:\.\d+)*(?:\s*(?:,|and|/|–|-)\s*)?)+)")
    for path in _repo_files():
        if path.resolve() == Path(__file__).resolve():
            continue
        for m in ref.finditer(path.read_text(errors="replace")):
            for num in re.findall(r"§\s*(\d+(?:\.\d+)*)", m.group(1)):
                seen += 1
                if num not in secs:
                    bad.append(f"{path.relative_to(ROOT)}: §{num}")
    assert seen > 0, "no docs/design.md § references found (the scan is broken)"
    assert not bad, f"references to missing sections of docs/design.md: {bad}"


def test_nothing_cites_the_old_spec_file():
    this = Path(__file__).resolve()
    hits = []
    for path in _repo_files():
        if path.resolve() in (this, DOC.resolve()):
            continue  # the doc explains what it replaces
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.search(r"SPEC\.md|SPEC\s*§|SPEC;|\(SPEC\b", line):
                hits.append(f"{path.relative_to(ROOT)}:{i}")
    assert not hits, f"still citing SPEC.md instead of docs/design.md: {hits}"


@pytest.mark.parametrize("name", sorted(fastskel.ops.__all__))
def test_every_public_op_is_in_the_op_section(name):
    ops = _sections(DOC.read_text())["4"]
    assert f"`{name}" in ops, f"fastskel.ops.{name} is not described in docs/design.md §4"


def test_section_checker_sees_missing_sections():
    secs = _sections("## 1. A\ntext\n### 1.2 B\nmore\n## 2. C\n")
    assert set(secs) == {"1", "1.2", "2"} and "more" in secs["1"] and "more" not in secs["2"]
