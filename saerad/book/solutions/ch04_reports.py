"""Solutions of the reports chapter's exercises (``notebooks/04_reports.ipynb``).

Each composes offline reports for the test studies with the changed setting, in Python, from the
features stage's activations and descriptions (nothing is written to the chapter's artifacts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from saerad.book.solutions import solution
from saerad.book.solutions._format import fixed, table_cells


def _inputs(artifacts_root: Path) -> dict[str, Any]:
    """What the reports chapter reads: its settings, descriptions, activations and the test studies."""
    from saerad.features.descriptions import read_descriptions
    from saerad.params import stage_parameters
    from saerad.reports.active import load_activations

    settings = stage_parameters(artifacts_root, "reports")
    activations, index = load_activations(artifacts_root / "features")
    studies = pd.read_csv(artifacts_root / "data" / "studies.csv")
    test_ids = studies.loc[studies["split"] == "test", "study_id"]
    test_ids = [int(s) for s in test_ids[test_ids.isin(index["study_id"])]]
    per_feature = None if settings["statements_per_feature"] == 0 else int(settings["statements_per_feature"])
    return {"settings": settings, "per_feature": per_feature, "activations": activations, "index": index,
            "test_ids": test_ids, "ground_truth": artifacts_root / "data" / "ground_truth.csv",
            "descriptions": read_descriptions(artifacts_root / "features" / "descriptions.jsonl")}


def _direction(changed: float, default: float) -> str:
    return "higher" if changed > default else "lower" if changed < default else "unchanged"


@solution("04.1", keys=("tau_default", "sentences_default", "f1_default", "sentences_changed", "f1_changed",
                        "f1_direction", "n_studies"),
          reads=("features", "reports"), reports__tau=0.5)
def lower_threshold(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Report length and finding macro-F1 on the test studies at the chapter's tau and at the exercise's."""
    from saerad.reports.active import study_activations
    from saerad.reports.generate import tau_study

    inputs = _inputs(artifacts_root)
    settings = inputs["settings"]
    if not inputs["test_ids"] or not inputs["ground_truth"].exists():
        raise ValueError("exercise 04.1 needs SynthCXR's planted findings and encoded test studies")
    matrix, ids = study_activations(inputs["activations"], inputs["index"], inputs["test_ids"])
    default_tau, changed_tau = float(settings["tau"]), float(parameters["reports.tau"])
    table = tau_study(matrix, ids, inputs["descriptions"], [default_tau, changed_tau], inputs["ground_truth"],
                      max_sentences=int(settings["max_sentences"]), aggregate=settings["aggregate"],
                      statements_per_feature=inputs["per_feature"])
    default, changed = table.iloc[0], table.iloc[1]
    return {"tau_default": f"{default_tau:g}", "sentences_default": fixed(default["mean_sentences"], 1),
            "f1_default": float(default["macro_f1"]), "sentences_changed": fixed(changed["mean_sentences"], 1),
            "f1_changed": float(changed["macro_f1"]),
            "f1_direction": _direction(float(changed["macro_f1"]), float(default["macro_f1"])),
            "n_studies": len(ids)}


def sentence_kind(text: str) -> str:
    """``"finding"`` (states a finding present), ``"negative"`` (only denies findings) or ``"other"``."""
    from saerad.metrics.chexpert_rules import sentence_findings

    stated = sentence_findings(text)
    if any(present for _, present in stated):
        return "finding"
    return "negative" if stated else "other"


@solution("04.2", keys=("table", "negative_share_default", "negative_share_all_sum", "negative_share_all_max",
                        "f1_default", "f1_all_sum", "f1_all_max", "sum_verdict", "negative_change", "f1_change"),
          reads=("features", "reports"), reports__statements_per_feature=0)
def every_statement(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Kinds of sentence in the test reports with one statement per feature and with all, by sum and by max."""
    from saerad.reports.active import active_features, study_activations
    from saerad.reports.composer import compose_report
    from saerad.reports.generate import f1_scores, study_truth
    from saerad.metrics.chexpert_rules import sentence_findings
    from saerad.synthcxr import FINDINGS

    inputs = _inputs(artifacts_root)
    settings = inputs["settings"]
    matrix, ids = study_activations(inputs["activations"], inputs["index"], inputs["test_ids"])
    truth = study_truth(inputs["ground_truth"]).loc[list(ids), list(FINDINGS)].to_numpy()
    variants = [("chapter's (first statement, sum)", inputs["per_feature"], settings["aggregate"]),
                ("every statement, sum", None, "sum"), ("every statement, max", None, "max")]
    rows = []
    for label, per_feature, aggregate in variants:
        kinds: list[str] = []
        predicted = np.zeros_like(truth)
        for position in range(len(ids)):
            active = active_features(matrix[position], float(settings["tau"]))
            composed = compose_report(active, inputs["descriptions"], int(settings["max_sentences"]), aggregate,
                                      statements_per_feature=per_feature)
            for sentence in composed.sentences:
                kinds.append(sentence_kind(sentence.text))
                for name, present in sentence_findings(sentence.text):
                    if present:
                        predicted[position, FINDINGS.index(name)] = 1
        counts = pd.Series(kinds, dtype=object).value_counts()
        total = max(len(kinds), 1)
        rows.append({"composer": label, "sentences": round(len(kinds) / max(len(ids), 1), 2),
                     "finding (%)": round(100 * counts.get("finding", 0) / total, 1),
                     "denial (%)": round(100 * counts.get("negative", 0) / total, 1),
                     "no finding (%)": round(100 * counts.get("other", 0) / total, 1),
                     "macro-F1": round(float(f1_scores(predicted, truth)["summary"]["macro_f1"]), 3)})
    negative = [float(row["denial (%)"]) for row in rows]
    # The sum "makes it worse" only if it lets more negatives in than the maximum does (by a point or more).
    verdict = "does make it worse" if negative[1] >= negative[2] + 1 else "does not make it worse"
    # Every statement against the chapter's composer: does the share of denials move by more than a point?
    change = round(negative[1] - negative[0], 1)
    negative_change = "rises" if change > 1 else "falls" if change < -1 else "hardly moves"
    shown = table_cells(rows, {"sentences": 1, "finding (%)": 1, "denial (%)": 1, "no finding (%)": 1,
                                "macro-F1": 3})
    return {"table": shown, "negative_share_default": fixed(negative[0], 1),
            "negative_share_all_sum": fixed(negative[1], 1), "negative_share_all_max": fixed(negative[2], 1), "f1_default": rows[0]["macro-F1"],
            "f1_all_sum": rows[1]["macro-F1"], "f1_all_max": rows[2]["macro-F1"],
            "sum_verdict": verdict, "negative_change": negative_change,
            "f1_change": _direction(rows[1]["macro-F1"], rows[0]["macro-F1"])}


@solution("04.3", keys=("finding", "n_cases", "study_id", "nn_sentence", "feature", "feature_auroc",
                        "feature_described", "feature_statement", "feature_activation", "tau", "fired",
                        "sae_says"),
          reads=("features", "reports"))
def rare_finding_the_baseline_gets(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The rarest planted finding the nearest neighbour states correctly (side and size too) and SAE-Rad does not,
    and the feature that would have had to fire for it."""
    from saerad.features.alignment import feature_finding_auroc, ground_truth_labels
    from saerad.metrics.planted import judge_sentence, planted_findings, sentence_claims
    from saerad.reports.active import study_activations
    from saerad.reports.generate import read_generated
    from saerad.reports.provenance import split_sentences

    inputs = _inputs(artifacts_root)
    generated = read_generated(artifacts_root / "reports" / "generated.jsonl")
    planted = planted_findings(inputs["ground_truth"])
    first = generated.drop_duplicates(["study_id", "system"]).set_index(["system", "study_id"])["report"]

    def stated_correctly(system: str, study_id: int) -> dict[str, str]:
        # Finding -> the first sentence that states it with the planted side and size (the reports chapter's rule).
        found: dict[str, str] = {}
        for sentence in split_sentences(first.get((system, study_id), "") or ""):
            for name in judge_sentence(sentence, planted[study_id])[2]:
                found.setdefault(name, sentence)
        return found

    cases: dict[str, list[tuple[int, str]]] = {}
    for study_id in inputs["test_ids"]:
        nn, sae = stated_correctly("nearest_neighbour", study_id), stated_correctly("sae_rad", study_id)
        for name in sorted(set(nn) - set(sae)):
            cases.setdefault(name, []).append((study_id, nn[name]))
    if not cases:
        return {"finding": "none", "n_cases": 0, "study_id": "none", "nn_sentence": "", "feature": "none",
                "feature_auroc": float("nan"), "feature_described": "no", "feature_statement": "none",
                "feature_activation": "n/a", "tau": f"{float(inputs['settings']['tau']):g}", "fired": "no",
                "sae_says": "nothing"}
    index = inputs["index"]
    train = index["split"] == "train"
    prevalence = ground_truth_labels(artifacts_root / "data", index[train].reset_index(drop=True)).mean()
    finding = min(cases, key=lambda name: (prevalence.get(name, 0.0), name))
    study_id, nn_sentence = cases[finding][0]
    # The feature that separates the finding best on the training images: the one that "would have had to fire".
    rows = np.flatnonzero(train.to_numpy())
    labels = ground_truth_labels(artifacts_root / "data", index.iloc[rows].reset_index(drop=True), findings=[finding])
    auroc = feature_finding_auroc(inputs["activations"][rows], labels)
    best = auroc[finding].astype(float).idxmax()
    matrix, _ = study_activations(inputs["activations"], index, [study_id])
    activation = float(matrix[0, int(best)])
    description = inputs["descriptions"].get(int(best))
    statements = list(getattr(description, "statements", ()) or ())
    first_statement = (statements[0][0] if isinstance(statements[0], tuple) else getattr(statements[0], "text", ""))\
        if statements else "none"
    # What SAE-Rad's report says about the finding, if anything (stated on the wrong side or size, or not at all).
    sae_sentences = [s for s in split_sentences(first.get(("sae_rad", study_id), "") or "")
                     if any(claim.finding == finding for claim in sentence_claims(s))]
    tau = float(inputs["settings"]["tau"])
    return {"finding": finding.replace("_", " "), "n_cases": len(cases[finding]), "study_id": str(int(study_id)),
            "nn_sentence": nn_sentence, "feature": int(best), "feature_auroc": float(auroc.loc[best, finding]),
            "feature_described": "yes" if description is not None and description.ok else "no",
            "feature_statement": first_statement, "feature_activation": fixed(activation, 2), "tau": f"{tau:g}",
            "fired": "yes" if activation > tau else "no",
            "sae_says": " ".join(f'"{s}"' for s in sae_sentences) or "nothing about it"}
