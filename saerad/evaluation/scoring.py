"""Scoring one system: which studies count, and every Table 1 metric as a bootstrap-ready statistic.

Input is ``reports/generated.jsonl`` (one line per test study and system/config,
read with :func:`saerad.reports.generate.read_generated`).  Nothing here
implements a metric: the metric modules of :mod:`saerad.metrics` are wired
together, and each result is kept per study so that
:mod:`saerad.evaluation.tables` can put a bootstrap interval on it.

Studies whose reference report is empty after normalisation (MIMIC's "___"
placeholder, or nothing) cannot be scored by any metric and are left out of
every system alike; :func:`scoring_sets` counts them.  A study where a system
produced no report stays in, with an empty report: not writing a report is a
failure of the system, not of the study.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from saerad.evaluation.schema import (CHEXPERT_KEYS, CONFIG_LABELS, LLM_JUDGE_METHOD, NA_NO_LLM_JUDGE, NA_NOT_SYNTHCXR,
                                      NN_LABEL, OFFLINE_METHOD, ORACLE_METHOD, TABLE1_METRICS)
from saerad.metrics import nlg
from saerad.metrics.bootstrap import f1_of_means, resample_indices
from saerad.metrics.chexpert_f1 import binary_label_arrays, chexpert_f1_from_arrays, labels_frame



@dataclass
class ScoringSet:
    """The scored studies of one system/config (sorted by study id)."""

    system: str
    config: str
    label: str
    frame: pd.DataFrame  # study_id, report, reference, sentences, reason

    @property
    def study_ids(self) -> np.ndarray:
        return self.frame["study_id"].to_numpy(dtype=np.int64)


def system_label(system: str, config: str, writer: str = "offline composer") -> str:
    """Display name of a system/config, e.g. ``SAE-Rad (offline composer)``."""
    if system == "nearest_neighbour":
        return NN_LABEL
    if system != "sae_rad":
        raise ValueError(f"unknown system {system!r} in generated.jsonl; expected 'sae_rad' or 'nearest_neighbour'")
    if config not in CONFIG_LABELS:
        raise ValueError(f"unknown SAE-Rad config {config!r}; expected one of {list(CONFIG_LABELS)}")
    if config == "no_aux" and writer == "offline composer":
        return "SAE-Rad (offline composer)"
    return f"SAE-Rad ({writer}, {CONFIG_LABELS[config]})"


def scorable_reference(text) -> bool:
    """False for references no metric can use: not text, or empty after normalisation ("___")."""
    return isinstance(text, str) and bool(nlg.normalise(text))


def scoring_sets(generated, writer: str = "offline composer") -> tuple[dict[str, ScoringSet], pd.DataFrame]:
    """Split ``generated.jsonl`` into one :class:`ScoringSet` per system/config.

    Parameters
    ----------
    generated
        Path of ``generated.jsonl`` or its DataFrame (``read_generated``).
    writer
        Who wrote SAE-Rad's reports (a label: "offline composer" or a model name).

    Returns
    -------
    (sets, counts)
        ``sets``: label -> ScoringSet, SAE-Rad configs first, the baseline last.
        ``counts``: per system/config the lines, the studies left out for an
        unusable reference, the studies scored and how many of them have no
        report (with the most common reason).
    """
    from saerad.reports.generate import read_generated

    table = generated if isinstance(generated, pd.DataFrame) else read_generated(generated)
    if table.empty:
        raise ValueError("generated.jsonl has no lines: run the reports stage first")
    duplicated = table.duplicated(["study_id", "system", "config"])
    if duplicated.any():
        raise ValueError(f"generated.jsonl: {int(duplicated.sum())} duplicate (study_id, system, config) lines")
    order = {"sae_rad": 0, "nearest_neighbour": 1}
    sets, counts = {}, []
    for (system, config), group in sorted(table.groupby(["system", "config"], sort=False),
                                          key=lambda item: (order.get(item[0][0], 2), item[0][1])):
        label = system_label(system, config, writer)
        keep = group["reference"].map(scorable_reference)
        frame = group[keep].sort_values("study_id").reset_index(drop=True)
        frame["study_id"] = frame["study_id"].astype(np.int64)
        frame["report"] = frame["report"].map(lambda text: text if isinstance(text, str) else "")
        empty = frame["report"].map(lambda text: not nlg.normalise(text))
        reasons = frame.loc[empty, "reason"].dropna()
        counts.append({"system": label, "config": config, "lines": len(group),
                       "excluded_unusable_reference": int((~keep).sum()), "scored": len(frame),
                       "scored_without_report": int(empty.sum()),
                       "most_common_reason": reasons.value_counts().index[0] if len(reasons) else ""})
        sets[label] = ScoringSet(system, config, label, frame)
    return sets, pd.DataFrame(counts)




@dataclass
class Measure:
    """One metric of one system: a bootstrap statistic over its studies, or why there is none.

    ``statistic`` is a 1-D array of per-study values (the metric is their
    mean) or a callable ``indices -> float`` (see :mod:`saerad.metrics.bootstrap`).
    """

    metric: str
    method: str
    statistic: object = None
    na: str | None = None
    note: str = ""


# Columns of a METEOR 1.5 statistics line: test length, reference length, test / reference function
# words, then per matcher stage (4) test content, reference content, test function and reference function
# matches, then chunks and the test / reference word matches.
_TEST_MATCHES = [4 + 4 * stage + k for stage in range(4) for k in (0, 2)]
_REFERENCE_MATCHES = [5 + 4 * stage + k for stage in range(4) for k in (0, 2)]
_CHUNKS = 20


def _perfect_matches(stats: np.ndarray) -> np.ndarray:
    """Rows whose hypothesis matches its reference exactly, as METEOR tests it (all matched, one chunk)."""
    return ((stats[:, _TEST_MATCHES].sum(1) == stats[:, 0]) & (stats[:, _REFERENCE_MATCHES].sum(1) == stats[:, 1])
            & (stats[:, _CHUNKS] == 1))


class MeteorStatistic:
    """Corpus METEOR of a resample of studies, computed exactly by the METEOR jar.

    METEOR's corpus score is its scoring function applied to the *sum* of the
    segments' statistics (except that an exact match's single chunk is not
    added: ``MeteorStats.addStats``), so the statistics of a resample are summed here
    (one matrix product for all resamples) and each sum is sent as one
    segment: one Java round trip scores every resample.  ``prefill`` does this
    for the resample matrix the bootstrap will use; other index sets are
    scored on demand.
    """

    def __init__(self, stat_lines: Sequence[str]):
        stats = np.array([[float(v) for v in line.split()] for line in stat_lines], dtype=float)
        # METEOR's aggregation (MeteorStats.addStats) leaves out the chunk count of a segment that matches
        # its reference exactly (every word matched, in one chunk); sum the same way.
        stats[_perfect_matches(stats), _CHUNKS] = 0.0
        self.stats = stats
        self._known: dict[bytes, float] = {}

    def _score(self, rows: np.ndarray) -> np.ndarray:
        counts = np.stack([np.bincount(r, minlength=len(self.stats)) for r in rows]).astype(float)
        sums = counts @ self.stats
        lines = [" ".join(repr(float(v)) for v in row) for row in sums]
        proc = nlg.meteor_scorer()
        if proc is None:
            raise RuntimeError(nlg.NA_JAVA)
        return np.array(proc.aggregate(lines)[1], dtype=float)

    def prefill(self, indices: np.ndarray) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        for row, value in zip(indices, self._score(indices)):
            self._known[row.tobytes()] = float(value)

    def __call__(self, indices) -> float:
        row = np.asarray(indices, dtype=np.int64)
        key = row.tobytes()
        if key not in self._known:
            self._known[key] = float(self._score(row[None, :])[0])
        return self._known[key]


class CachedLabeler:
    """Labels each distinct text once (references repeat across systems)."""

    def __init__(self, name: str, label_many: Callable[[list[str]], list[dict]]):
        self.name = name
        self._label_many = label_many
        self._memo: dict[str, dict] = {}

    def frame(self, texts: Sequence[str], index=None) -> pd.DataFrame:
        texts = [t if isinstance(t, str) else "" for t in texts]
        new = sorted(set(texts) - set(self._memo))
        for text, labels in zip(new, self._label_many(new) if new else []):
            self._memo[text] = labels
        return labels_frame(texts, index=index, labeler=self._memo.__getitem__)


def rule_labeler() -> CachedLabeler:
    """The rule-based CheXpert labeler of :mod:`saerad.metrics.chexpert_rules`."""
    from saerad.metrics.chexpert_rules import label_report

    return CachedLabeler("rule labeler", lambda texts: [label_report(t) for t in texts])


def chexbert_labeler(checkpoint, tokenizer_dir, device: str = "cpu") -> CachedLabeler | str:
    """CheXbert from user-supplied files, or ``"n/a: ..."`` when they are not given."""
    from saerad.metrics.chexbert import load_chexbert

    checkpoint = checkpoint or None
    tokenizer_dir = tokenizer_dir or None
    if checkpoint is None:
        return "n/a: needs the CheXbert checkpoint chexbert.pth (parameter chexbert_checkpoint is empty)"
    loaded = load_chexbert(checkpoint, tokenizer_dir, device=device)
    if isinstance(loaded, str):
        return loaded
    return CachedLabeler("CheXbert", loaded.label_reports)


def rger_scorer(model_path, encoder_dir=None, cuda: int = -1):
    """RGER scorer from a user-supplied RadGraph model, or ``"n/a: ..."``."""
    from saerad.metrics.rger import NA_MODEL, load_rger

    if not model_path:  # "" would be read as the current folder
        return NA_MODEL + " (parameter radgraph_model is empty)"
    return load_rger(model_path, encoder_dir=encoder_dir or None, cuda=cuda)


def radfact_client(backend: str, model: str = "", base_url: str = "", cache_dir=None, profile: str = "demo",
                   acknowledge_restricted_data_use: bool = False, max_concurrency: int = 4):
    """``(client, method label)`` for RadFact: the offline approximation or a language model.

    A remote backend in the paper profile sends MIMIC-CXR text out, which the
    LLM layer refuses unless acknowledged (a loopback endpoint is always allowed).
    """
    from saerad.features.stage import make_llm_client
    from saerad.metrics.radfact import make_offline_radfact_client

    if backend == "offline":
        offline_cache = Path(cache_dir) / "radfact" if cache_dir else None
        return make_offline_radfact_client(cache_dir=offline_cache), OFFLINE_METHOD
    client = make_llm_client("radfact", backend, model, None, cache_dir, profile, acknowledge_restricted_data_use,
                             base_url, max_concurrency)
    return client, f"{LLM_JUDGE_METHOD} ({model or backend})"


@dataclass
class SystemScores:
    """All measurements of one system/config (per-study tables kept for Table 2 and Appendix G)."""

    label: str
    n_studies: int
    measures: list[Measure] = field(default_factory=list)
    radfact: pd.DataFrame | None = None
    radfact_method: str | None = None
    oracle: pd.DataFrame | None = None
    nlg: dict | None = None


def score_system(scoring: ScoringSet, labelers: Sequence[CachedLabeler | str] = (), rger=None,
                 radfact=None, facts=None, meteor: bool = True, progress: bool = False) -> SystemScores:
    """Every Table 1 metric of one system, as bootstrap-ready per-study statistics.

    Parameters
    ----------
    scoring
        The system's studies (:func:`scoring_sets`).
    labelers
        CheXpert labelers (:func:`rule_labeler`, :func:`chexbert_labeler`);
        a string stands for an unavailable CheXbert and gives n/a rows.
    rger
        An ``RGERScorer`` or the n/a reason string (None: not requested).
    radfact
        ``(client, method)`` from :func:`radfact_client`, or None.
    facts
        :class:`saerad.metrics.oracle.SentenceFacts` on SynthCXR: adds the
        exact oracle RadFact against the reference; None elsewhere.
    """
    from saerad.metrics.radfact import radfact as run_radfact

    frame = scoring.frame
    refs, hyps = frame["reference"].tolist(), frame["report"].tolist()
    out = SystemScores(scoring.label, len(frame))
    if len(frame) == 0:
        out.measures = [Measure(m, "", na="n/a: no study with a usable reference") for m in TABLE1_METRICS]
        return out

    if radfact is not None:
        client, method = radfact
        table = run_radfact(hyps, refs, client, progress=progress)
        table.insert(0, "study_id", scoring.study_ids)
        out.radfact, out.radfact_method = table, method
        failures = int(table["failures"].sum())
        out.measures.append(Measure("RadFact F1", method, f1_of_means(table["precision"], table["recall"]),
                                    note=f"{failures} judge failures counted as not entailed" if failures else ""))
        if method == OFFLINE_METHOD:
            out.measures.append(Measure("RadFact F1", LLM_JUDGE_METHOD, na=NA_NO_LLM_JUDGE))
    if facts is None:
        out.measures.append(Measure("RadFact F1", ORACLE_METHOD, na=NA_NOT_SYNTHCXR))
    else:
        from saerad.metrics.oracle import oracle_radfact

        oracle = oracle_radfact(hyps, facts, references=refs, study_ids=scoring.study_ids)
        out.oracle = oracle
        unknown = int(oracle["n_candidate_unknown"].sum())
        left_out = f"{unknown} generated sentences without known facts left out" if unknown else ""
        out.measures.append(Measure("RadFact F1", ORACLE_METHOD, f1_of_means(oracle["precision"], oracle["recall"]),
                                    note=left_out))

    scores = nlg.nlg_scores(refs, hyps, meteor=meteor)
    out.nlg = scores
    bleu_stats = scores["stats"]["bleu"]
    out.measures.append(Measure("BL4", "pycocoevalcap", lambda idx: nlg.corpus_bleu4_from_stats(bleu_stats, idx)))
    out.measures.append(Measure("RG-L", "pycocoevalcap", scores["stats"]["rouge_l"]["scores"]))
    if scores["stats"]["meteor"] is None:
        out.measures.append(Measure("MTR", "pycocoevalcap", na=scores["meteor"]))
    else:
        out.measures.append(Measure("MTR", "pycocoevalcap", MeteorStatistic(scores["stats"]["meteor"]["stat_lines"])))

    if rger is None:
        out.measures.append(Measure("RGER", "RadGraph", na="n/a: not requested"))
    elif isinstance(rger, str):
        out.measures.append(Measure("RGER", "RadGraph", na=rger))
    else:
        out.measures.append(Measure("RGER", "RadGraph", rger.score(refs, hyps)["per_study"]))

    for labeler in labelers:
        if isinstance(labeler, str):
            out.measures += [Measure(metric, "CheXbert", na=labeler) for metric in CHEXPERT_KEYS]
            continue
        pred, true = binary_label_arrays(labeler.frame(hyps, index=scoring.study_ids),
                                         labeler.frame(refs, index=scoring.study_ids))
        for metric, key in CHEXPERT_KEYS.items():
            out.measures.append(Measure(metric, labeler.name, _chexpert_statistic(pred, true, key)))
    return out


def _chexpert_statistic(pred: np.ndarray, true: np.ndarray, key: str) -> Callable[[np.ndarray], float]:
    def statistic(indices: np.ndarray) -> float:
        return chexpert_f1_from_arrays(pred, true, indices=indices)[key]

    return statistic


def prefill(statistic, n_studies: int, n_resamples: int, seed: int) -> None:
    """Score all of a bootstrap's resamples of a METEOR statistic in one Java round trip (others: no-op)."""
    if isinstance(statistic, MeteorStatistic):
        statistic.prefill(resample_indices(n_studies, n_resamples, seed))
