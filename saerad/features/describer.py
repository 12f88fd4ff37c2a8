"""The offline describer: what the top-activating reports share, without a language model.

A feature is described by the statements that (a) many of its top-activating reports make and
(b) are over-represented there compared with the whole training corpus: "No pneumothorax" is in
most reports and says nothing about a feature, "Left-sided pacemaker" in 8 of 10 top reports
against 9 % of the corpus does.

A *statement* is a sentence reduced to a key: the set of findings it asserts or denies when the
labeler finds any (so "Small left effusion." and "There is a small left pleural effusion." count
as one statement), otherwise its normalised text. The description quotes, for each chosen
statement, the wording most often used in the top reports.

The describer answers the very prompt a language model would get (it reads the reports back out
of it), so it runs through the same :mod:`saerad.llm` path, cache and records as Claude does.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Sequence

from saerad.features.annotation import reports_in_prompt
from saerad.text import normalise_sentence, split_sentences

FindingKey = Callable[[str], set]


class StatementKeys:
    """Maps sentences to statement keys, memoised (reports repeat the same sentences a lot)."""

    def __init__(self, finding_key: FindingKey | None):
        self.finding_key = finding_key
        self._cache: dict[str, Hashable] = {}

    def key(self, sentence: str) -> Hashable:
        normalised = normalise_sentence(sentence)
        if normalised not in self._cache:
            findings = frozenset(self.finding_key(sentence)) if self.finding_key is not None else frozenset()
            self._cache[normalised] = ("findings", findings) if findings else ("text", normalised)
        return self._cache[normalised]

    def report_keys(self, report: str) -> dict[Hashable, list[str]]:
        """``{key: [sentences of the report with that key]}``."""
        keys: dict[Hashable, list[str]] = defaultdict(list)
        for sentence in split_sentences(report):
            keys[self.key(sentence)].append(sentence)
        return keys


def key_findings(key: Hashable) -> frozenset:
    kind, value = key
    return value if kind == "findings" else frozenset()


def key_order(key: Hashable) -> tuple:
    """A sort key for statement keys that is the same in every process.

    ``str()`` of a frozenset lists its items in hash order, and string hashes change with
    ``PYTHONHASHSEED``: ties broken that way made descriptions differ between runs.
    """
    kind, value = key
    return (kind, tuple(sorted(value)) if kind == "findings" else (value,))


@dataclass(frozen=True)
class ChosenStatement:
    text: str
    support: int  # number of top reports making the statement
    lift: float  # support share / corpus share


class OfflineDescriber:
    """Describe features by their shared, over-represented statements.

    Parameters
    ----------
    corpus_reports
        Findings of the training studies: the base rate of every statement.
    finding_key
        ``sentence -> {(finding, present)}`` (the rule-based labeler); None keys by text only.
    min_support
        A statement must appear in at least this many of the top reports.
    min_lift
        ... and be at least this many times more frequent there than in the corpus.
    max_statements
        At most this many statements per description.
    """

    def __init__(self, corpus_reports: Iterable[str], finding_key: FindingKey | None,
                 min_support: int = 3, min_lift: float = 2.0, max_statements: int = 3):
        self.keys = StatementKeys(finding_key)
        self.min_support, self.min_lift, self.max_statements = min_support, min_lift, max_statements
        corpus = [report for report in corpus_reports if isinstance(report, str)]
        if not corpus:
            raise ValueError("the offline describer needs a non-empty corpus of training reports")
        self.corpus_size = len(corpus)
        self.document_frequency: Counter = Counter()
        for report in corpus:
            self.document_frequency.update(self.keys.report_keys(report).keys())
        digest = hashlib.sha256("\x1e".join(corpus).encode()).hexdigest()[:12]
        # The name goes into the LLM cache key: another corpus or setting must not reuse old replies.
        self.name = (f"offline-describer-v1(corpus={digest},support={min_support},lift={min_lift},"
                     f"max={max_statements})")

    def choose(self, reports: Sequence[str]) -> list[ChosenStatement]:
        """The statements that describe a feature whose top reports are ``reports``."""
        support: Counter = Counter()
        wordings: dict[Hashable, Counter] = defaultdict(Counter)
        for report in reports:
            for key, sentences in self.keys.report_keys(report).items():
                support[key] += 1
                wordings[key].update(sentence.strip() for sentence in sentences)
        candidates = []
        for key, count in support.items():
            corpus_share = (self.document_frequency[key] + 1) / (self.corpus_size + 1)
            lift = (count / len(reports)) / corpus_share
            if count >= self.min_support and lift >= self.min_lift:
                candidates.append((count * math.log(lift), count, lift, key))
        candidates.sort(key=lambda item: (-item[0], -item[1], key_order(item[3])))
        chosen: list[ChosenStatement] = []
        covered: set = set()
        for _, count, lift, key in candidates:
            findings = {name for name, _present in key_findings(key)}
            if findings & covered:
                continue  # a statement about a finding already described adds nothing new
            covered |= findings
            wording = min(wordings[key].items(), key=lambda item: (-item[1], len(item[0]), item[0]))[0]
            chosen.append(ChosenStatement(wording, count, lift))
            if len(chosen) == self.max_statements:
                break
        return chosen

    def describe(self, reports: Sequence[str]) -> str:
        """A reply in the format the annotation prompt asks for, reasoning lines included."""
        chosen = self.choose(reports)
        lines = [f"I read {len(reports)} reports and counted the statements they share, against how often "
                 f"each appears among {self.corpus_size} training reports."]
        for statement in chosen:
            lines.append(f"- \"{statement.text}\" in {statement.support} of {len(reports)} reports "
                         f"({statement.lift:.1f} times the corpus rate).")
        if not chosen:
            lines.append(f"No statement is made by at least {self.min_support} reports at {self.min_lift:g} "
                         "times its corpus rate; I cannot name what these images share.")
            return "\n".join(lines)
        sentences = [_as_sentence(statement.text) for statement in chosen]
        first = sentences[0][0].lower() + sentences[0][1:] if not _starts_with_acronym(sentences[0]) else sentences[0]
        lines.append("*This feature represents " + " ".join([first, *sentences[1:]]))
        return "\n".join(lines)

    def respond(self, prompt) -> str:
        """Responder for ``saerad.llm.make_client("offline", responder=...)``."""
        return self.describe(reports_in_prompt(prompt.user))


def _as_sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _starts_with_acronym(text: str) -> bool:
    word = text.split(" ", 1)[0]
    return len(word) > 1 and word[:2].isupper()
