"""saerad.io.read_jsonl: the one JSON Lines reader behind descriptions, generated reports and report facts."""

import gzip

import pytest

from saerad.io import read_jsonl


def test_reads_plain_and_gzip_with_line_numbers_skipping_blank_lines(tmp_path):
    text = '{"a": 1}\n\n{"a": 2, "b": "x"}\n'
    plain = tmp_path / "records.jsonl"
    plain.write_text(text, encoding="utf-8")
    packed = tmp_path / "records.jsonl.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as handle:
        handle.write(text)
    expected = [(1, {"a": 1}), (3, {"a": 2, "b": "x"})]
    assert list(read_jsonl(plain, required=("a",))) == expected
    assert list(read_jsonl(packed, required=("a",))) == expected


@pytest.mark.parametrize("line, problem", [
    ("{not json", r"bad.jsonl:2: not valid JSON"),
    ("[1, 2]", r"bad.jsonl:2: expected a JSON object, got list"),
    ('{"b": 1}', r"bad.jsonl:2: record lacks field\(s\) \['a'\]; expected \['a'\]"),
])
def test_bad_line_is_named_by_file_and_line(tmp_path, line, problem):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 0}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=problem):
        list(read_jsonl(bad, required=("a",)))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        list(read_jsonl(tmp_path / "absent.jsonl"))
