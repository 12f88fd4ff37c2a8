"""No Open-i report text in the repository.

The Indiana University reports are licensed CC BY-NC-ND 4.0: the book reads them from the installed
``torchxrayvision`` at run time and must never store them or copies derived from them. This test
takes the sentences that only one report uses (boilerplate such as "No pneumothorax." is shared by
hundreds and is not anyone's text) and at least twelve words long, and looks for each in every file
git tracks or would track (executed chapters, artifacts and the built book are ignored).
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter

import pytest

from saerad.metrics.chexpert_rules import split_sentences
from saerad.openi.reports import packaged_reports_available, read_reports
from saerad.paths import REPO_ROOT

SHINGLE = 8  # words
MIN_WORDS = 12
MAX_FILE_BYTES = 5_000_000


def normalise(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split()


def distinctive_sentences() -> list[list[str]]:
    reports = read_reports()
    per_report = [set(split_sentences(f"{f or ''} {i or ''}")) for f, i in zip(reports["findings"], reports["impression"])]
    uses = Counter(sentence for sentences in per_report for sentence in sentences)
    words = [normalise(sentence) for sentence, count in uses.items() if count == 1]
    return [w for w in words if len(w) >= MIN_WORDS and "xxxx" not in w[:SHINGLE]]


def repository_files() -> list:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return [REPO_ROOT / name for name in listed if name]


def file_words(path) -> list[str] | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:4096]:
        return None  # binary
    return normalise(data.decode("utf-8", errors="ignore"))


def scan(paths, sentences: list[list[str]], root) -> list[str]:
    """``"file: first words ..."`` for every sentence (a list of normalised words) found in a file."""
    starts = {tuple(words[:SHINGLE]): words for words in sentences}
    found = []
    for path in paths:
        words = file_words(path)
        if not words:
            continue
        joined = " " + " ".join(words) + " "
        for position in range(len(words) - SHINGLE + 1):
            sentence = starts.get(tuple(words[position:position + SHINGLE]))
            if sentence is not None and f" {' '.join(sentence)} " in joined:
                found.append(f"{path.relative_to(root)}: {' '.join(sentence[:SHINGLE])} ...")
    return found


@pytest.mark.skipif(not packaged_reports_available(), reason="torchxrayvision (the Open-i reports) is not installed")
def test_no_open_i_report_sentence_is_in_the_repository():
    sentences = distinctive_sentences()
    assert len(sentences) > 1000  # the sample is not empty by accident
    found = scan(repository_files(), sentences, REPO_ROOT)
    assert not found, "Open-i report text found in the repository (CC BY-NC-ND: do not store it):\n" + "\n".join(found)


def test_the_scan_finds_a_planted_sentence_across_line_breaks(tmp_path):
    words = normalise("The quick mediastinal silhouette jumps over seventeen lazy hemidiaphragms near the apex today.")
    planted = tmp_path / "notes.md"
    planted.write_text("Intro.\nThe quick mediastinal silhouette jumps over seventeen lazy\nhemidiaphragms near the "
                       "apex today. End.")
    (tmp_path / "other.md").write_text("The quick mediastinal silhouette jumps over seventeen lazy cats.")
    assert scan([planted, tmp_path / "other.md"], [words], tmp_path) == [
        "notes.md: the quick mediastinal silhouette jumps over seventeen lazy ..."]
