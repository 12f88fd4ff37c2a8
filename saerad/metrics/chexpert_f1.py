"""CheXpert F1 of generated reports and the agreement of our report labeler.

CheXpert F1 (paper Section 5.1 and Appendix B.2) compares the labels of each
generated report with the labels of its reference report, one binary
decision per (study, observation):

* a label counts as **positive** when it is positive (1) or uncertain (-1);
  negative (0) and not mentioned (NaN) count as negative -- the
  "uncertain as positive" convention of CheXbert-based report metrics
  (Miura et al. 2021, the ``f1chexbert`` package);
* reference labels are the truth, generated labels the prediction;
* **micro** F1 pools true/false positives and false negatives over the
  observations; **macro** F1 is the mean of per-observation F1, where an
  observation with no positive in either set scores 0 (scikit-learn's
  ``zero_division=0``, which is what the usual implementations get);
* "5" = Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion;
  "14" = all CheXpert observations including No Finding.

For bootstrapping, ``binary_label_arrays`` turns label tables into boolean
arrays once and ``chexpert_f1_from_arrays`` scores any resample of study
rows (``indices``) without touching the DataFrames again.

``evaluate_labeler`` measures the rule-based labeler of
``saerad.metrics.chexpert_rules`` against SynthCXR's truth on a data folder
(the table the chapter prints).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from saerad.io import read_jsonl
from saerad.metrics.chexpert_rules import label_report, report_findings, sentence_findings
from saerad.mimic.loader import CHEXPERT_OBSERVATIONS
from saerad.synthcxr.catalogue import FINDINGS

KEY_OBSERVATIONS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def labels_frame(reports, index=None, labeler=label_report) -> pd.DataFrame:
    """Label many reports into a study x observation table.

    Parameters
    ----------
    reports : sequence of str
        Report texts (non-strings are labelled as empty reports).
    index : sequence, optional
        Row labels (e.g. study ids).
    labeler : callable, optional
        ``text -> {observation: label}``; default the rule-based
        ``label_report``.

    Returns
    -------
    pandas.DataFrame
        Columns ``CHEXPERT_OBSERVATIONS``; values 1.0 / 0.0 / -1.0 / NaN.
    """
    rows = [labeler(r if isinstance(r, str) else "") for r in reports]
    return pd.DataFrame(rows, index=index, columns=list(CHEXPERT_OBSERVATIONS), dtype=float)


def binary_label_arrays(generated: pd.DataFrame, reference: pd.DataFrame,
                        observations=CHEXPERT_OBSERVATIONS) -> tuple[np.ndarray, np.ndarray]:
    """Boolean "positive or uncertain" arrays of two aligned label tables.

    Parameters
    ----------
    generated, reference : pandas.DataFrame
        Study x observation label tables with the same index (rows are
        aligned by index; a study missing from either raises).
    observations : sequence of str
        Columns to use, in order.

    Returns
    -------
    (pred, true) : numpy.ndarray of bool, shape [n_studies, n_observations]
    """
    missing = [o for o in observations if o not in generated.columns or o not in reference.columns]
    if missing:
        raise ValueError(f"label tables lack observation columns {missing}")
    if not generated.index.equals(reference.index):
        if set(generated.index) != set(reference.index):
            raise ValueError("generated and reference label tables cover different studies "
                             f"({len(set(generated.index) ^ set(reference.index))} not in both)")
        generated = generated.loc[reference.index]
    pred = generated[list(observations)].to_numpy(dtype=float)
    true = reference[list(observations)].to_numpy(dtype=float)
    return np.isin(pred, (1.0, -1.0)), np.isin(true, (1.0, -1.0))


def _f1(tp, fp, fn) -> np.ndarray:
    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)


def chexpert_f1_from_arrays(pred: np.ndarray, true: np.ndarray, observations=CHEXPERT_OBSERVATIONS,
                            indices=None) -> dict[str, float]:
    """CheXpert micro/macro F1 over the 5 key and all given observations.

    Parameters
    ----------
    pred, true : numpy.ndarray of bool, shape [n_studies, len(observations)]
        From ``binary_label_arrays``.
    observations : sequence of str
        Column names of the arrays.
    indices : array of int, optional
        Study rows to use (a bootstrap resample; repeats allowed).

    Returns
    -------
    dict
        ``micro_f1_5``, ``macro_f1_5``, ``micro_f1_14``, ``macro_f1_14`` (the
        "14" scores use every column given), and ``f1/<observation>``.
    """
    pred = np.asarray(pred, dtype=bool)
    true = np.asarray(true, dtype=bool)
    if pred.shape != true.shape or pred.ndim != 2 or pred.shape[1] != len(observations):
        raise ValueError(f"pred {pred.shape} and true {true.shape} must both be [n, {len(observations)}]")
    if indices is not None:
        pred, true = pred[indices], true[indices]
    tp = (pred & true).sum(0)
    fp = (pred & ~true).sum(0)
    fn = (~pred & true).sum(0)
    per = _f1(tp, fp, fn)
    key = [i for i, o in enumerate(observations) if o in KEY_OBSERVATIONS]
    out = {
        "micro_f1_5": float(_f1(tp[key].sum(), fp[key].sum(), fn[key].sum())),
        "macro_f1_5": float(per[key].mean()) if key else float("nan"),
        "micro_f1_14": float(_f1(tp.sum(), fp.sum(), fn.sum())),
        "macro_f1_14": float(per.mean()),
    }
    out.update({f"f1/{o}": float(per[i]) for i, o in enumerate(observations)})
    return out


def chexpert_f1(generated: pd.DataFrame, reference: pd.DataFrame) -> dict[str, float]:
    """CheXpert F1 of generated against reference label tables (see module docstring)."""
    pred, true = binary_label_arrays(generated, reference)
    return chexpert_f1_from_arrays(pred, true)


# ---------------------------------------------------------------------------
# Labeler agreement with SynthCXR's truth
# ---------------------------------------------------------------------------

def _binary_scores(pred: np.ndarray, true: np.ndarray, names) -> pd.DataFrame:
    tp = (pred & true).sum(0)
    fp = (pred & ~true).sum(0)
    fn = (~pred & true).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), np.nan)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan)
    f1 = np.where(tp + fp + fn > 0, _f1(tp, fp, fn), np.nan)
    return pd.DataFrame({"name": list(names), "support": true.sum(0), "predicted": pred.sum(0), "tp": tp,
                         "precision": precision, "recall": recall, "f1": f1})


def _read_facts(path: Path) -> dict[int, dict]:
    out = {}
    for number, record in read_jsonl(path, ("study_id", "sentences")):
        try:
            out[int(record["study_id"])] = record
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}:{number}: field 'study_id' is {record['study_id']!r}; expected an integer") from error
    return out


def evaluate_labeler(data_dir, sections=("findings",), progress: bool = False) -> dict[str, pd.DataFrame]:
    """Agreement of the rule-based labeler with SynthCXR's truth.

    Parameters
    ----------
    data_dir : path
        A data folder written by the pipeline (``studies.csv``,
        ``ground_truth.csv``, ``synthcxr/synthcxr-report-facts.jsonl.gz``).
    sections : tuple of str
        Report-facts sections whose sentences form the "full report" used
        for the CheXpert comparison in addition to the ``findings`` column
        (the generator's CheXpert columns describe the whole report).
    progress : bool
        Show a progress bar over studies.

    Returns
    -------
    dict of pandas.DataFrame
        ``findings16``: per SynthCXR finding, labeler on the ``findings``
        text of ``studies.csv`` vs planted truth (a study has a finding when
        any of its frontal images has it; uncertain mentions count as
        present) -- the report itself may omit a finding, so this bounds the
        labeler and the generator together.
        ``findings16_facts``: the same text vs the findings the report's
        facts state (labeler error only).
        ``chexpert14``: per observation, labels of the full report text
        (every sentence in the facts file) vs the CheXpert columns of
        ``studies.csv``, positive = positive or uncertain; plus
        ``exact_agreement`` (same 4-way label).
        ``chexpert14_findings_text``: the ``findings`` column alone vs the
        same columns.
        ``sentences``: per finding, sentence-level agreement of
        ``sentence_findings`` with the facts of every sentence
        (``(finding, present)`` pairs: precision / recall / F1).
        ``summary``: one row per table with macro-F1 (mean over rows with
        support) and micro-F1.
    """
    from tqdm import tqdm

    data_dir = Path(data_dir)
    studies_path = data_dir / "studies.csv"
    gt_path = data_dir / "ground_truth.csv"
    facts_path = data_dir / "synthcxr" / "synthcxr-report-facts.jsonl.gz"
    for p in (studies_path, gt_path, facts_path):
        if not p.exists():
            raise FileNotFoundError(f"evaluate_labeler needs {p}")
    studies = pd.read_csv(studies_path)
    gt = pd.read_csv(gt_path)
    for col in ("study_id", "findings", *CHEXPERT_OBSERVATIONS):
        if col not in studies.columns:
            raise ValueError(f"{studies_path}: missing column {col!r}")
    for col in ("study_id", "view_position", *FINDINGS):
        if col not in gt.columns:
            raise ValueError(f"{gt_path}: missing column {col!r}")
    facts = _read_facts(facts_path)
    frontal = gt[gt["view_position"].isin(("AP", "PA"))]
    truth = frontal.groupby("study_id")[list(FINDINGS)].max().astype(bool)
    studies = studies[studies["study_id"].isin(truth.index) & studies["study_id"].isin(facts.keys())]
    studies = studies.reset_index(drop=True)
    ids = studies["study_id"].to_numpy()

    n, k = len(studies), len(FINDINGS)
    pred16 = np.zeros((n, k), bool)
    facts16 = np.zeros((n, k), bool)
    full_texts = []
    sent_pairs = []  # (predicted set, true set) per sentence
    col = {f: j for j, f in enumerate(FINDINGS)}
    for i, (sid, text) in enumerate(tqdm(zip(ids, studies["findings"]), total=n, disable=not progress,
                                         desc="labeler")):
        for f, present in report_findings(text).items():
            pred16[i, col[f]] = present
        rec = facts[int(sid)]
        findings_sents = [s for s in rec["sentences"] if isinstance(text, str) and s["text"] in text]
        for s in findings_sents:
            for fact in s["facts"]:
                if fact["finding"] in col and fact["present"]:
                    facts16[i, col[fact["finding"]]] = True
        full_texts.append(" ".join(s["text"] for s in rec["sentences"]
                                   if s["section"] in sections + ("impression", "findings_and_impression",
                                                                  "other", "wet_read")))
        for s in rec["sentences"]:
            want = {}
            for fact in s["facts"]:
                if fact["finding"] in col:
                    want[fact["finding"]] = want.get(fact["finding"], False) or bool(fact["present"])
            sent_pairs.append((sentence_findings(s["text"]), set(want.items())))
    true16 = truth.loc[ids, list(FINDINGS)].to_numpy()

    tables: dict[str, pd.DataFrame] = {}
    tables["findings16"] = _binary_scores(pred16, true16, FINDINGS)
    tables["findings16_facts"] = _binary_scores(pred16, facts16, FINDINGS)

    ref = studies.set_index("study_id")[list(CHEXPERT_OBSERVATIONS)].astype(float)
    for name, texts in (("chexpert14", full_texts), ("chexpert14_findings_text", list(studies["findings"]))):
        lab = labels_frame(texts, index=ids)
        p, t = binary_label_arrays(lab, ref.loc[ids])
        table = _binary_scores(p, t, CHEXPERT_OBSERVATIONS)
        a, b = lab.to_numpy(float), ref.loc[ids].to_numpy(float)
        table["exact_agreement"] = ((a == b) | (np.isnan(a) & np.isnan(b))).mean(0)
        tables[name] = table

    pairs = [(f, v) for f in FINDINGS for v in (True, False)]
    pp = np.array([[pair in got for pair in pairs] for got, _ in sent_pairs], bool)
    tt = np.array([[pair in want for pair in pairs] for _, want in sent_pairs], bool)
    sent = _binary_scores(pp, tt, [f"{f} {'present' if v else 'absent'}" for f, v in pairs])
    tables["sentences"] = sent

    rows = []
    for name in ("findings16", "findings16_facts", "chexpert14", "chexpert14_findings_text", "sentences"):
        t = tables[name]
        with_support = t[t["support"] > 0]
        rows.append({"table": name, "rows_with_support": int(len(with_support)),
                     "macro_f1": float(with_support["f1"].mean()),
                     "micro_f1": _micro(t)})
    exact = float(np.mean([got == want for got, want in sent_pairs]))
    rows.append({"table": "sentences_exact_set_match", "rows_with_support": len(sent_pairs),
                 "macro_f1": np.nan, "micro_f1": exact})
    tables["summary"] = pd.DataFrame(rows)
    return tables


def _micro(table: pd.DataFrame) -> float:
    tp = table["tp"].sum()
    fp = table["predicted"].sum() - tp
    fn = table["support"].sum() - tp
    return float(_f1(tp, fp, fn))
