"""The offline composer: a findings paragraph from the active features' descriptions, without a language model.

Appendix F notes that the feature descriptions can be joined into a report
"using only regex", which makes SAE-Rad's inference cost negligible; this
module is that lower bound, and the default of the demo. It is
deterministic and reads nothing but the descriptions of the active features
and their importance scores. It ignores the indication and the prior reports
(it has no language model to relate them to the image): the configurations
``indication`` and ``indication_priors`` exist only on the LLM path
(:mod:`saerad.reports.prompt`), and the offline composer's output is the
``no_aux`` configuration.

Steps
-----
1. Candidates. Every statement (sentence) of every active, non-flagged
   description is a candidate. Its findings are the description's
   ``findings`` field, or ``sentence_findings(text)`` when the field is
   missing or empty (an empty field may mean "not labelled"; relabelling a
   sentence that truly states no finding gives the empty set again).
2. Duplicates. Candidates with the same non-empty findings set, or (for
   statements without findings) the same normalised text, are one
   candidate. It keeps the provenance of every feature that stated it and
   the wording of the most important one. Its score aggregates the
   importances of its distinct features: ``"sum"`` (default: a statement
   made by several features is better supported, which is the "majority"
   of Appendix B.5) or ``"max"``.
3. Contradictions. When some candidates state a finding present and others
   absent, the polarity with the larger support (same aggregate over the
   distinct features stating it) wins and every candidate stating the
   losing polarity is dropped; on an exact tie both sides are dropped,
   since nothing decides between them. Dropped candidates are recorded.
4. Order and length. Candidates are taken by score (ties: the smaller
   leading feature id, then the text); a candidate whose findings were all
   already stated by selected sentences adds its features to those
   sentences instead of repeating them; at most ``max_sentences`` sentences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from saerad.reports.active import ActiveFeature
from saerad.text import normalise_sentence

Finding = tuple[str, bool]
AGGREGATES = ("sum", "max")


@dataclass(frozen=True)
class Statement:
    """One sentence of a feature description and the SynthCXR findings it states."""

    text: str
    findings: frozenset | None  # None or empty: to be labelled with sentence_findings


@dataclass
class ComposedSentence:
    """A sentence of the composed report with the features it came from (strongest first)."""

    text: str
    feature_ids: list[int]
    score: float
    findings: frozenset


@dataclass
class ComposedReport:
    """The composer's output: the paragraph, its sentences, and what was left out and why."""

    text: str
    sentences: list[ComposedSentence]
    contradicted: list[ComposedSentence] = field(default_factory=list)
    truncated: list[ComposedSentence] = field(default_factory=list)
    n_active: int = 0
    n_described: int = 0

    def sentence_records(self) -> list[dict]:
        """``[{"text", "feature_ids"}]`` as in ``generated.jsonl``."""
        return [{"text": s.text, "feature_ids": list(s.feature_ids)} for s in self.sentences]


def description_statements(record) -> list[Statement]:
    """The statements of a description record, whatever its shape.

    Accepts the lead's ``FeatureDescription`` (``statements`` = ``(text,
    frozenset)`` pairs), a JSON line of ``descriptions.jsonl`` as a dict
    (``statements`` = ``{"text", "findings": [[finding, present], ...]}``),
    or an object with ``text`` / ``findings`` attributes per statement.
    A description without statements falls back to its whole ``description``
    text as one statement whose findings are unknown.
    """
    statements = _get(record, "statements", None)
    if not statements:
        text = _get(record, "description", "")
        return [Statement(text.strip(), None)] if isinstance(text, str) and text.strip() else []
    result = []
    for item in statements:
        if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str):
            text, findings = item
        else:
            text, findings = _get(item, "text", None), _get(item, "findings", None)
        if not isinstance(text, str):
            raise ValueError(f"feature {_get(record, 'feature', '?')}: a statement has no text: {item!r}")
        if not text.strip():
            continue
        result.append(Statement(text.strip(), None if findings is None else _as_findings(findings)))
    return result


def compose_report(
    active: Sequence[ActiveFeature],
    descriptions: Mapping[int, object],
    max_sentences: int = 6,
    aggregate: str = "sum",
    findings_of: Callable[[str], set] | None = None,
    statements_per_feature: int | None = None,
) -> ComposedReport:
    """Compose the findings paragraph from the active features (see the module docstring).

    Parameters
    ----------
    active
        :func:`saerad.reports.active.active_features` of one study.
    descriptions
        Feature id -> description record (see :func:`description_statements`);
        records whose ``status`` is not ``"ok"`` are skipped.
    max_sentences
        Upper bound on the report's sentences (Appendix B.5 asks for 5–6).
    aggregate
        ``"sum"`` or ``"max"`` of the importances of the features behind a statement.
    findings_of
        Labeler for statements without a ``findings`` field; default
        :func:`saerad.metrics.chexpert_rules.sentence_findings` (imported only
        when needed).
    statements_per_feature
        Use only the first this many statements of each description (None:
        all). A description leads with what its reports share most, so 1
        keeps each feature's main statement and stops the generic statements
        that many descriptions repeat ("no pneumothorax") from outvoting the
        specific ones.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be >= 1, got {max_sentences}")
    if statements_per_feature is not None and statements_per_feature < 1:
        raise ValueError(f"statements_per_feature must be >= 1 or None, got {statements_per_feature}")
    combine = sum if aggregate == "sum" else max
    importance = {item.feature: float(item.importance) for item in active}

    candidates: dict[object, _Candidate] = {}
    n_described = 0
    for item in active:
        record = descriptions.get(item.feature)
        if record is None or _get(record, "status", "ok") != "ok":
            continue
        statements = description_statements(record)[:statements_per_feature]
        if statements:
            n_described += 1
        for statement in statements:
            findings = statement.findings
            if not findings:
                findings_of = findings_of or _default_findings_of()
                findings = _as_findings(findings_of(statement.text))
            key = findings if findings else ("text", normalise_text(statement.text))
            candidate = candidates.setdefault(key, _Candidate(findings=findings))
            candidate.add(item.feature, item.importance, statement.text)

    scored = list(candidates.values())
    for candidate in scored:
        candidate.score = combine(importance[f] for f in candidate.features)
    kept, contradicted = _resolve_contradictions(scored, importance, combine)
    kept.sort(key=lambda c: (-c.score, c.ordered_features(importance)[0], c.text()))

    selected: list[_Candidate] = []
    truncated: list[_Candidate] = []
    for candidate in kept:
        stated = set().union(*(c.findings for c in selected)) if selected else set()
        if candidate.findings and candidate.findings <= stated:
            for chosen in selected:
                if chosen.findings & candidate.findings:
                    chosen.absorb(candidate)
            continue
        if len(selected) < max_sentences:
            selected.append(candidate)
        else:
            truncated.append(candidate)

    sentences = [c.to_sentence(importance) for c in selected]
    return ComposedReport(
        text=" ".join(s.text for s in sentences),
        sentences=sentences,
        contradicted=[c.to_sentence(importance) for c in contradicted],
        truncated=[c.to_sentence(importance) for c in truncated],
        n_active=len(active),
        n_described=n_described,
    )


def normalise_text(text: str) -> str:
    """The key for "same text": :func:`saerad.text.normalise_sentence` (lower case, numbers as #, no punctuation)."""
    return normalise_sentence(text)


def as_sentence(text: str) -> str:
    """Capitalise the first letter and end with a full stop."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


class _Candidate:
    """A statement merged over the features that state it."""

    def __init__(self, findings: frozenset):
        self.findings = findings
        self.features: list[int] = []
        self.wordings: list[tuple[float, int, str]] = []
        self.score = 0.0

    def add(self, feature: int, importance: float, text: str) -> None:
        if feature not in self.features:
            self.features.append(feature)
        self.wordings.append((importance, feature, text))

    def absorb(self, other: "_Candidate") -> None:
        for feature in other.features:
            if feature not in self.features:
                self.features.append(feature)

    def text(self) -> str:
        # The most important feature's wording; then the lower feature id, then the shorter text.
        _, _, text = min(self.wordings, key=lambda w: (-w[0], w[1], len(w[2]), w[2]))
        return as_sentence(text)

    def ordered_features(self, importance: Mapping[int, float]) -> list[int]:
        return sorted(self.features, key=lambda f: (-importance[f], f))

    def to_sentence(self, importance: Mapping[int, float]) -> ComposedSentence:
        return ComposedSentence(self.text(), self.ordered_features(importance), float(self.score), self.findings)


def _resolve_contradictions(candidates, importance, combine):
    """Drop the candidates stating the losing polarity of a contested finding."""
    support: dict[Finding, set[int]] = {}
    for candidate in candidates:
        for finding in candidate.findings:
            support.setdefault(finding, set()).update(candidate.features)
    losing: set[Finding] = set()
    for (name, present), features in support.items():
        if not present or (name, False) not in support:
            continue
        for_present = combine(importance[f] for f in features)
        for_absent = combine(importance[f] for f in support[(name, False)])
        if for_present > for_absent:
            losing.add((name, False))
        elif for_absent > for_present:
            losing.add((name, True))
        else:
            losing.update({(name, True), (name, False)})
    kept = [c for c in candidates if not (c.findings & losing)]
    dropped = [c for c in candidates if c.findings & losing]
    return kept, dropped


def _as_findings(findings: Iterable) -> frozenset:
    result = set()
    for item in findings:
        try:
            name, present = item
        except (TypeError, ValueError):
            raise ValueError(f"a finding must be a (name, present) pair, got {item!r}") from None
        if not isinstance(name, str) or not isinstance(present, (bool, int)):
            raise ValueError(f"a finding must be a (str, bool) pair, got {item!r}")
        result.add((name, bool(present)))
    return frozenset(result)


def _get(record, name, default):
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def _default_findings_of() -> Callable[[str], set]:
    from saerad.metrics.chexpert_rules import sentence_findings

    return sentence_findings
