"""Solutions of the reader-study chapter's exercises (``notebooks/07_reader_study.ipynb``).

The simulated readers annotate review pages written to a temporary folder; nothing is written to the
chapter's artifacts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from saerad.book.solutions import solution
from saerad.book.solutions._format import fixed, table_cells

#: Thumbnail size of the pages the solutions build (they are never looked at; small is fast).
_IMAGE_SIZE = 64


def _inputs(artifacts_root: Path) -> dict[str, Any]:
    from saerad import reader_study
    from saerad.metrics.oracle import SentenceFacts, study_truth
    from saerad.params import stage_parameters
    from saerad.reports.generate import read_generated

    data_dir = artifacts_root / "data"
    facts_path = data_dir / "synthcxr" / "synthcxr-report-facts.jsonl.gz"
    if not facts_path.exists() or not (data_dir / "ground_truth.csv").exists():
        raise ValueError("the reader-study exercises need SynthCXR's sentence facts and planted truth")
    return {"settings": stage_parameters(artifacts_root, "reader_study"),
            "generated": read_generated(artifacts_root / "reports" / "generated.jsonl"),
            "page_inputs": reader_study.review_inputs(data_dir), "facts": SentenceFacts.from_synthcxr(facts_path),
            "truth": study_truth(data_dir / "ground_truth.csv"), "ground_truth": data_dir / "ground_truth.csv"}


def _simulated(inputs: Mapping[str, Any], folder: Path, n_cases: int, seed: int,
               error_rates: tuple[float, ...]) -> pd.DataFrame:
    """Simulated readers (one per error rate) on a fresh page of ``n_cases`` studies: the long table."""
    from saerad import reader_study

    systems = tuple(inputs["settings"]["systems"])
    page = reader_study.build_review_page(inputs["generated"], out_dir=folder / f"page-{n_cases}-{seed}",
                                          n_cases=n_cases, systems=systems, seed=seed, image_size=_IMAGE_SIZE,
                                          **inputs["page_inputs"])
    exports = [reader_study.simulate_reader(inputs["generated"], page.unblinding_path, inputs["facts"],
                                            inputs["truth"], f"simulated-{number}", seed=seed + number,
                                            error_rate=rate, exported_at="2026-01-01T00:00:00+00:00")
               for number, rate in enumerate(error_rates, start=1)]
    return reader_study.read_exports(exports, page.unblinding_path)


def _significant_p(long: pd.DataFrame, reader: str, comparator: str = "nearest_neighbour") -> float:
    """One-sided Fisher p of "SAE-Rad has fewer significant-error sentences (of all sentences)" for one reader."""
    from saerad import reader_study

    tests = reader_study.fisher_tests(long[long["reader"] == reader])
    row = tests[(tests["outcome"] == "significant") & (tests["denominator"] == "all sentences")
                & (tests["comparator"] == comparator)]
    return float(row["p_one_sided"].iloc[0]) if len(row) else float("nan")


@solution("07.1", keys=("kept", "kept_wrong_side", "kept_wrong_size", "share_wrong", "example", "example_reason"),
          reads=("reports", "reader_study"))
def what_the_simulated_reader_cannot_see(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Sentences the exact simulated reader keeps although they give a planted finding the wrong side or size."""
    from saerad.metrics.planted import planted_findings, sentence_errors

    inputs = _inputs(artifacts_root)
    settings = inputs["settings"]
    planted = planted_findings(inputs["ground_truth"])
    with tempfile.TemporaryDirectory() as folder:
        long = _simulated(inputs, Path(folder), int(settings["simulated_cases"]), int(settings["seed"]), (0.0,))
    kept = long[long["action"] == "keep"]
    wrong_side, wrong_size, example, example_reason = 0, 0, "", ""
    for study_id, text in zip(kept["study_id"], kept["text"]):
        errors = dict(sentence_errors(text, planted[int(study_id)]))
        wrong_side += "side" in errors
        wrong_size += "size" in errors and "side" not in errors
        if ("side" in errors or "size" in errors) and not example:
            example, example_reason = text, errors.get("side") or errors["size"]
    return {"kept": len(kept), "kept_wrong_side": wrong_side, "kept_wrong_size": wrong_size,
            "share_wrong": fixed(100 * (wrong_side + wrong_size) / len(kept), 1) + " %" if len(kept) else "n/a",
            "example": example or "none", "example_reason": example_reason or "none"}


@solution("07.2", keys=("n_seeds", "n_significant", "share_significant", "median_p", "p_at_chapter_size"),
          reads=("reports", "reader_study"), reader_study__simulated_cases=10, seeds=20)
def paper_sized_studies(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """How often an exact reader on 10 studies finds SAE-Rad's significant errors significantly fewer."""
    inputs = _inputs(artifacts_root)
    n_cases = int(parameters["reader_study.simulated_cases"])
    with tempfile.TemporaryDirectory() as folder:
        values = [_significant_p(_simulated(inputs, Path(folder), n_cases, int(seed), (0.0,)), "simulated-1")
                  for seed in range(int(parameters["seeds"]))]
        chapter = _simulated(inputs, Path(folder), int(inputs["settings"]["simulated_cases"]),
                             int(inputs["settings"]["seed"]), (0.0,))
    values = np.array(values, dtype=float)
    significant = int(np.sum(values < 0.05))
    return {"n_seeds": len(values), "n_significant": significant,
            "share_significant": fixed(100 * significant / len(values), 0) + " %",
            "median_p": float(np.nanmedian(values)), "p_at_chapter_size": _significant_p(chapter, "simulated-1")}


@solution("07.3", keys=("table", "reading_matching"), reads=())
def seven_percent(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Each reading of "7 % fewer edits" computed from the paper's counts."""
    from saerad.reader_study.paper import load_paper_counts

    systems = load_paper_counts()["systems"]
    rate = {name: system["edited"] / system["sentences"] for name, system in systems.items()}
    others = [name for name in systems if name != "sae_rad"]
    pooled = sum(systems[n]["edited"] for n in others) / sum(systems[n]["sentences"] for n in others)
    labels = {"chexagent": "CheXagent", "nearest_neighbour": "nearest neighbour"}
    comparators = [(labels.get(name, name), rate[name]) for name in others] + [("the others pooled", pooled)]
    rows = []
    for name, other in comparators:
        rows.append({"reading": f"fewer than {name}, in points", "value (%)": 100 * (other - rate["sae_rad"])})
        rows.append({"reading": f"fewer than {name}, relative", "value (%)": 100 * (1 - rate["sae_rad"] / other)})
    table = table_cells(rows, {"value (%)": 1})
    matching = [row["reading"] for row in rows if round(row["value (%)"]) == 7]
    return {"table": table, "reading_matching": "; ".join(matching) or "none"}


@solution("07.4", keys=("table", "rate_below", "kappa_below", "p_exact", "p_noisy", "p_noisy_range"),
          reads=("reports", "reader_study"), error_rates=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6))
def noisier_second_reader(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """κ between the exact and a noisy reader as the noise grows, with each reader's Fisher test."""
    from saerad import reader_study

    inputs = _inputs(artifacts_root)
    settings = inputs["settings"]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for rate in parameters["error_rates"]:
            long = _simulated(inputs, Path(folder), int(settings["simulated_cases"]), int(settings["seed"]),
                              (0.0, float(rate)))
            agreement = reader_study.reader_agreement(long)
            action = agreement[agreement["variable"] == "action"].iloc[0]
            rows.append({"error rate": float(rate), "κ (keep/edit/delete)": float(action["kappa"]),
                         "p, exact reader": _significant_p(long, "simulated-1"),
                         "p, noisy reader": _significant_p(long, "simulated-2")})
    below = next((row for row in rows if row["κ (keep/edit/delete)"] < 0.4), None)
    return {"table": table_cells(rows, {"error rate": 1, "κ (keep/edit/delete)": 2, "p, exact reader": 3,
                                        "p, noisy reader": 3}),
            "rate_below": fixed(below["error rate"], 1) if below else "none of those tried",
            "kappa_below": below["κ (keep/edit/delete)"] if below else float("nan"),
            "p_exact": rows[0]["p, exact reader"], "p_noisy": below["p, noisy reader"] if below else float("nan"),
            "p_noisy_range": f"{min(r['p, noisy reader'] for r in rows):.2f} to "
                             f"{max(r['p, noisy reader'] for r in rows):.2f}"}
