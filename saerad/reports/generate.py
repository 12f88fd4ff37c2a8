"""Reports for every test study, written to ``reports/generated.jsonl``, and their check against SynthCXR's truth.

:func:`generate_reports` writes one line per test study and system/config
(common.md's format)::

    {"study_id", "system": "sae_rad" | "nearest_neighbour",
     "config": "no_aux" | "indication" | "indication_priors" | "-",
     "report", "reference", "sentences": [{"text", "feature_ids"}], "reason"}

SAE-Rad is written by the offline composer (config ``no_aux``: it reads
nothing but the features) when no language-model client is given, and by the
language model in each requested configuration when one is. Every test study
gets a line from every system/config; when no report can be produced, the
line says why in ``reason`` and ``report`` is "".

Lines are appended to ``generated.jsonl.partial`` as they are produced (a
killed run resumes from there, when its settings match) and the final file
is written atomically, sorted, at the end.

The remaining functions compare reports with the findings planted in
SynthCXR images (``data/ground_truth.csv``): :func:`synthcxr_sentence_marks`
marks sentences for the Appendix C.1-style figures,
:func:`finding_f1_against_truth` scores each system, and :func:`tau_study`
shows how the threshold of Eq. 10 trades report length against F1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm import tqdm

from saerad.io import atomic_path, read_jsonl
from saerad.reports.active import active_features, load_activations, study_activations
from saerad.reports.composer import _default_findings_of, compose_report
from saerad.reports.prompt import CONFIGS, build_report_prompt, descriptions_with_scores, prior_reports_by_study
from saerad.reports.provenance import DEFAULT_THRESHOLD, attach_provenance, split_sentences

SYSTEMS = ("sae_rad", "nearest_neighbour")
RECORD_KEYS = ("study_id", "system", "config", "report", "reference", "sentences", "reason")


def generate_reports(
    artifacts_root: str | Path,
    descriptions: Mapping[int, object],
    tau: float,
    client=None,
    configs: Sequence[str] = CONFIGS,
    activations: tuple[sp.spmatrix, pd.DataFrame] | None = None,
    out_path: str | Path | None = None,
    max_sentences: int = 6,
    aggregate: str = "sum",
    statements_per_feature: int | None = None,
    provenance_threshold: float = DEFAULT_THRESHOLD,
    baseline_options: Mapping | None = None,
    batch_size: int = 64,
    resume: bool = True,
    progress: bool = False,
    baseline: bool = True,
) -> Path:
    """Write ``generated.jsonl`` for every test study of ``artifacts_root``.

    Parameters
    ----------
    artifacts_root
        ``artifacts/<profile>``: reads ``data/studies.csv``, ``data/priors.csv``,
        the encode stage's tokens and (unless given) ``features/activations.npz``.
    descriptions
        Feature id -> description record (``saerad.features.descriptions``).
    tau
        Activation threshold of Eq. 10.
    client
        A :mod:`saerad.llm` client; None uses the offline composer.
    configs
        LLM configurations to write (ignored without a client).
    activations
        ``(csr [n_images, d_sae], index)`` to use instead of the features stage's files.
    out_path
        Default ``<artifacts_root>/reports/generated.jsonl``.
    max_sentences, aggregate, statements_per_feature
        Offline composer settings (:func:`saerad.reports.composer.compose_report`).
    baseline_options
        Passed to :func:`saerad.reports.baseline.nearest_neighbours` (chunk sizes, device).
    batch_size
        LLM prompts per ``complete_many`` call (progress is saved between calls).
    baseline
        Also write the nearest-neighbour baseline (False: SAE-Rad lines only, e.g. when the
        baseline is already written elsewhere).
    """
    from saerad.reports.baseline import nearest_neighbour_reports
    from saerad.encode.tokens import load_class_tokens

    root = Path(artifacts_root)
    out_path = Path(out_path) if out_path is not None else root / "reports" / "generated.jsonl"
    studies = _read_studies(root / "data" / "studies.csv")
    test = studies[studies["split"] == "test"]
    reference = dict(zip(test["study_id"], test["findings"]))
    matrix, index = activations if activations is not None else load_activations(root / "features")
    have_images = set(index["study_id"].astype(int))
    with_images = [s for s in test["study_id"] if s in have_images]
    study_matrix, study_ids = study_activations(matrix, index, with_images)
    row_of = {int(s): k for k, s in enumerate(study_ids)}

    system_configs = [("sae_rad", c) for c in configs] if client is not None else [("sae_rad", "no_aux")]
    if client is not None and any(c not in CONFIGS for c in configs):
        raise ValueError(f"configs must be drawn from {CONFIGS}, got {list(configs)}")
    if baseline:
        system_configs.append(("nearest_neighbour", "-"))
    settings = {"tau": float(tau), "max_sentences": max_sentences, "aggregate": aggregate,
                "statements_per_feature": statements_per_feature,
                "llm": None if client is None else _client_name(client),
                "systems": system_configs, "n_descriptions": len(descriptions)}
    done, partial = _open_partial(out_path, settings, resume)

    def write(record: dict) -> None:
        record = {k: record[k] for k in RECORD_KEYS}
        partial.write(json.dumps(record, sort_keys=True) + "\n")
        partial.flush()
        done[(record["study_id"], record["system"], record["config"])] = record

    try:
        active_by_study = {int(s): active_features(study_matrix[row_of[int(s)]], tau) for s in with_images}

        def base(study_id, system, config):
            return {"study_id": int(study_id), "system": system, "config": config,
                    "reference": reference[study_id] if isinstance(reference[study_id], str) else ""}

        # SAE-Rad, offline composer
        if client is None:
            for study_id in tqdm(test["study_id"], desc="compose", disable=not progress):
                if (int(study_id), "sae_rad", "no_aux") in done:
                    continue
                record = base(study_id, "sae_rad", "no_aux")
                if int(study_id) not in active_by_study:
                    write({**record, "report": "", "sentences": [], "reason": "no encoded frontal image"})
                    continue
                composed = compose_report(active_by_study[int(study_id)], descriptions, max_sentences, aggregate,
                                          statements_per_feature=statements_per_feature)
                reason = None if composed.sentences else _empty_reason(composed)
                write({**record, "report": composed.text, "sentences": composed.sentence_records(), "reason": reason})
        else:
            priors = prior_reports_by_study(root / "data" / "priors.csv") if "indication_priors" in configs else {}
            indication = dict(zip(test["study_id"], test["indication"]))
            pending = []
            for study_id in test["study_id"]:
                for config in configs:
                    if (int(study_id), "sae_rad", config) in done:
                        continue
                    record = base(study_id, "sae_rad", config)
                    active = active_by_study.get(int(study_id))
                    pairs = descriptions_with_scores(active, descriptions) if active is not None else []
                    if active is None or not pairs:
                        why = "no encoded frontal image" if active is None else (
                            f"no feature above tau={tau:g} has a usable description ({len(active)} active)")
                        write({**record, "report": "", "sentences": [], "reason": why})
                        continue
                    prompt = build_report_prompt(pairs, config, indication.get(study_id), priors.get(int(study_id), ()),
                                                 key=f"report-{study_id}-{config}")
                    pending.append((record, active, prompt))
            bar = tqdm(total=len(pending), desc="llm reports", disable=not progress)
            for start in range(0, len(pending), batch_size):
                batch = pending[start:start + batch_size]
                completions = client.complete_many([p for _, _, p in batch], progress=False)
                for (record, active, _), completion in zip(batch, completions):
                    text = (completion.text or "").strip()
                    if completion.text is None or not text:
                        why = f"language model failed: {completion.error or 'empty reply'}"
                        write({**record, "report": "", "sentences": [], "reason": why})
                        continue
                    attached = attach_provenance(text, active, descriptions, provenance_threshold)
                    write({**record, "report": text, "sentences": attached.sentences, "reason": None})
                bar.update(len(batch))
            bar.close()

        # Nearest-neighbour baseline
        missing_nn = ([s for s in test["study_id"] if (int(s), "nearest_neighbour", "-") not in done]
                      if baseline else [])
        if missing_nn:
            train_tokens, train_index = load_class_tokens(root, split="train")
            test_tokens, test_index = load_class_tokens(root, split="test")
            keep = test_index["study_id"].isin(missing_nn).to_numpy()
            train_findings = dict(zip(studies["study_id"], studies["findings"]))
            if keep.any():
                found = nearest_neighbour_reports(train_tokens, train_index, test_tokens[keep],
                                                  test_index[keep].reset_index(drop=True), train_findings,
                                                  **dict(baseline_options or {}))
                predicted = dict(zip(found["study_id"], found["report"]))
            else:
                predicted = {}
            for study_id in missing_nn:
                record = base(study_id, "nearest_neighbour", "-")
                if int(study_id) not in predicted:
                    write({**record, "report": "", "sentences": [], "reason": "no encoded frontal image"})
                    continue
                text = predicted[int(study_id)]
                write({**record, "report": text, "reason": None,
                       "sentences": [{"text": s, "feature_ids": []} for s in split_sentences(text)]})
    finally:
        partial.close()

    order = {key: k for k, key in enumerate(system_configs)}
    records = sorted(done.values(), key=lambda r: (r["study_id"], order.get((r["system"], r["config"]), 99)))
    with atomic_path(out_path) as temporary:
        temporary.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records), encoding="utf-8")
    _partial_path(out_path).unlink(missing_ok=True)
    return out_path


def read_generated(path: str | Path) -> pd.DataFrame:
    """``generated.jsonl`` as a DataFrame (one row per line), checking the fields."""
    rows = [record for _, record in read_jsonl(path, RECORD_KEYS)]
    return pd.DataFrame(rows, columns=list(RECORD_KEYS))


def synthcxr_sentence_marks(
    report_sentences: Iterable[str | Mapping], true_findings: Iterable[str] | Mapping[str, object],
    findings_of: Callable[[str], set] | None = None,
) -> tuple[list[tuple[str, str]], list[str]]:
    """Mark each generated sentence against the image's planted findings.

    A sentence is ``"shared"`` when every SynthCXR finding it states agrees
    with the truth (present where planted, absent where not), ``"extra"``
    when at least one disagrees (a finding that is not in the image, or one
    denied that is), and ``"none"`` when it states no SynthCXR finding at all
    (e.g. "The lungs are well expanded.": the truth cannot judge it).

    Parameters
    ----------
    report_sentences
        Sentence texts, or ``{"text": ...}`` records from ``generated.jsonl``.
    true_findings
        Names of the planted findings, or a mapping finding -> 0/1.

    Returns
    -------
    (marks, missed)
        ``[(text, "shared" | "extra" | "none")]`` and the planted findings no
        sentence states present, in :data:`FINDINGS` order.
    """
    from saerad.synthcxr import FINDINGS

    findings_of = findings_of or _default_findings_of()
    truth = _true_set(true_findings)
    unknown = truth - set(FINDINGS)
    if unknown:
        raise ValueError(f"unknown SynthCXR findings {sorted(unknown)}; expected names from FINDINGS")
    marks, stated_present = [], set()
    for item in report_sentences:
        text = item["text"] if isinstance(item, Mapping) else item
        stated = {(name, bool(present)) for name, present in findings_of(text) if name in FINDINGS}
        stated_present |= {name for name, present in stated if present}
        if not stated:
            marks.append((text, "none"))
        elif all((name in truth) == present for name, present in stated):
            marks.append((text, "shared"))
        else:
            marks.append((text, "extra"))
    missed = [name for name in FINDINGS if name in truth and name not in stated_present]
    return marks, missed


def study_truth(ground_truth: pd.DataFrame | str | Path) -> pd.DataFrame:
    """Planted findings per study (0/1, columns :data:`FINDINGS`): present in any of the study's images."""
    from saerad.synthcxr import FINDINGS

    source = "ground truth table" if isinstance(ground_truth, pd.DataFrame) else str(ground_truth)
    table = ground_truth if isinstance(ground_truth, pd.DataFrame) else pd.read_csv(ground_truth, dtype={"dicom_id": str})
    missing = [c for c in ("study_id",) + tuple(FINDINGS) if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing columns {missing}")
    return table.groupby("study_id")[list(FINDINGS)].max().fillna(0).astype(int)


def findings_stated_present(report: str, findings_of: Callable[[str], set] | None = None) -> set[str]:
    """SynthCXR findings some sentence of ``report`` states present."""
    findings_of = findings_of or _default_findings_of()
    present = set()
    for sentence in split_sentences(report) if isinstance(report, str) else []:
        present |= {name for name, is_present in findings_of(sentence) if is_present}
    return present


def finding_f1_against_truth(
    generated: str | Path | pd.DataFrame, ground_truth: pd.DataFrame | str | Path,
    findings_of: Callable[[str], set] | None = None,
) -> pd.DataFrame:
    """Finding-level F1 of each system/config against the planted truth.

    A study predicts a finding when a sentence of its report states it
    present (``sentence_findings``); studies without a report predict
    nothing and still count. Per finding ``F1 = 2TP / (2TP + FP + FN)``;
    a finding with no planted and no predicted case has no F1 and is left
    out of the macro average (``n_findings_in_macro`` says how many count).

    Returns
    -------
    DataFrame
        One row per system/config: ``system, config, n_studies,
        n_without_report, macro_f1, micro_f1, n_findings_in_macro`` and
        ``f1_<finding>`` for the 16 findings.
    """
    from saerad.synthcxr import FINDINGS

    findings_of = findings_of or _default_findings_of()
    table = generated if isinstance(generated, pd.DataFrame) else read_generated(generated)
    truth = study_truth(ground_truth)
    rows = []
    for (system, config), group in table.groupby(["system", "config"], sort=True):
        missing = sorted(set(group["study_id"]) - set(truth.index))
        if missing:
            raise ValueError(f"{len(missing)} studies of {system}/{config} have no ground truth (e.g. {missing[:3]})")
        predicted = pd.DataFrame(0, index=group["study_id"].to_numpy(), columns=list(FINDINGS))
        for study_id, report in zip(group["study_id"], group["report"]):
            for name in findings_stated_present(report, findings_of) & set(FINDINGS):
                predicted.loc[study_id, name] = 1
        scores = f1_scores(predicted.to_numpy(), truth.loc[predicted.index, list(FINDINGS)].to_numpy())
        row = {"system": system, "config": config, "n_studies": len(group),
               "n_without_report": int((group["report"].fillna("").str.strip() == "").sum()), **scores["summary"]}
        row.update({f"f1_{name}": value for name, value in zip(FINDINGS, scores["per_finding"])})
        rows.append(row)
    return pd.DataFrame(rows)


def f1_scores(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Per-column F1 and their macro/micro averages for 0/1 matrices ``[n_studies, n_findings]``."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    tp = (predicted & truth).sum(0)
    fp = (predicted & ~truth).sum(0)
    fn = (~predicted & truth).sum(0)
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        per_finding = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), np.nan)
    defined = ~np.isnan(per_finding)
    total = 2 * tp.sum() + fp.sum() + fn.sum()
    summary = {
        "macro_f1": float(per_finding[defined].mean()) if defined.any() else float("nan"),
        "micro_f1": float(2 * tp.sum() / total) if total else float("nan"),
        "n_findings_in_macro": int(defined.sum()),
    }
    return {"per_finding": per_finding, "summary": summary}


def validation_tau_study(
    artifacts_root: str | Path, activations: sp.spmatrix, index: pd.DataFrame, descriptions: Mapping[int, object],
    taus: Sequence[float], max_sentences: int = 6, aggregate: str = "sum",
    statements_per_feature: int | None = None,
) -> pd.DataFrame | None:
    """:func:`tau_study` on the validation studies that have an encoded image (the reports chapter's choice of tau).

    Parameters
    ----------
    artifacts_root
        ``artifacts/<profile>``: reads ``data/studies.csv`` and ``data/ground_truth.csv``.
    activations, index
        Image activations ``[n_images, d_sae]`` and their index (with ``study_id``).
    descriptions, taus, max_sentences, aggregate, statements_per_feature
        As :func:`tau_study`.

    Returns
    -------
    DataFrame or None
        The tau table, or None without planted ground truth (MIMIC-CXR) or validation studies.
    """
    data_dir = Path(artifacts_root) / "data"
    if not (data_dir / "ground_truth.csv").exists():
        return None
    studies = _read_studies(data_dir / "studies.csv")
    validation_ids = studies.loc[studies["split"] == "validate", "study_id"]
    validation_ids = validation_ids[validation_ids.isin(index["study_id"])].tolist()
    if not validation_ids:
        return None
    study_matrix, study_ids = study_activations(activations, index, validation_ids)
    return tau_study(study_matrix, study_ids, descriptions, taus, data_dir / "ground_truth.csv",
                     max_sentences=max_sentences, aggregate=aggregate, statements_per_feature=statements_per_feature)


def tau_study(
    study_matrix: sp.spmatrix, study_ids: Sequence[int], descriptions: Mapping[int, object], taus: Sequence[float],
    ground_truth: pd.DataFrame | str | Path, max_sentences: int = 6, aggregate: str = "sum",
    findings_of: Callable[[str], set] | None = None, statements_per_feature: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Report length and finding F1 of the offline composer as a function of ``tau``.

    Parameters
    ----------
    study_matrix, study_ids
        Per-study activations (:func:`saerad.reports.active.study_activations`).

    Returns
    -------
    DataFrame
        ``tau, mean_active, mean_described, mean_sentences, share_empty,
        macro_f1, micro_f1, n_findings_in_macro``.
    """
    from saerad.synthcxr import FINDINGS

    findings_of = findings_of or _default_findings_of()
    truth = study_truth(ground_truth).loc[list(study_ids), list(FINDINGS)].to_numpy()
    matrix = sp.csr_matrix(study_matrix)
    rows = []
    for tau in tqdm(taus, desc="tau study", disable=not progress):
        predicted = np.zeros_like(truth)
        n_active, n_described, n_sentences = [], [], []
        for position in range(len(study_ids)):
            active = active_features(matrix[position], tau)
            composed = compose_report(active, descriptions, max_sentences, aggregate, findings_of,
                                      statements_per_feature)
            n_active.append(len(active))
            n_described.append(composed.n_described)
            n_sentences.append(len(composed.sentences))
            # Labelled from the text, as finding_f1_against_truth does, not from the statements' fields.
            for sentence in composed.sentences:
                for name, present in findings_of(sentence.text):
                    if present and name in FINDINGS:
                        predicted[position, FINDINGS.index(name)] = 1
        scores = f1_scores(predicted, truth)
        rows.append({"tau": float(tau), "mean_active": float(np.mean(n_active)),
                     "mean_described": float(np.mean(n_described)), "mean_sentences": float(np.mean(n_sentences)),
                     "share_empty": float(np.mean(np.array(n_sentences) == 0)), **scores["summary"]})
    return pd.DataFrame(rows)


# -- helpers --------------------------------------------------------------------------------------


def _read_studies(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the data stage first")
    studies = pd.read_csv(path)
    missing = [c for c in ("study_id", "split", "findings", "indication") if c not in studies.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    studies["study_id"] = studies["study_id"].astype(int)
    return studies


def _empty_reason(composed) -> str:
    if composed.n_active == 0:
        return "no feature above tau"
    if composed.n_described == 0:
        return f"none of the {composed.n_active} active features has a usable description"
    return "every statement of the active features was dropped as contradicted"


def _true_set(true_findings) -> set[str]:
    if isinstance(true_findings, Mapping):
        return {name for name, value in true_findings.items() if value == value and bool(value)}
    if isinstance(true_findings, pd.Series):
        return {name for name, value in true_findings.items() if value == value and bool(value)}
    return set(true_findings)


def _client_name(client) -> str:
    """``backend:model`` of a saerad.llm client, for the resume check."""
    usage = client.usage() if hasattr(client, "usage") else {}
    return f"{usage.get('backend', type(client).__name__)}:{usage.get('model', '?')}"


def _partial_path(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".partial")


def _open_partial(out_path: Path, settings: dict, resume: bool):
    """Records of a matching earlier partial run, and the partial file opened for appending."""
    path = _partial_path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"settings": settings}, sort_keys=True)
    done: dict[tuple, dict] = {}
    if resume and path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines and lines[0] == header:
            for line in lines[1:]:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # the line a killed run was writing
                done[(record["study_id"], record["system"], record["config"])] = record
            # Rewrite without a possibly truncated last line, then append.
            handle = path.open("w", encoding="utf-8")
            handle.write(header + "\n" + "".join(json.dumps(r, sort_keys=True) + "\n" for r in done.values()))
            handle.flush()
            return done, handle
    handle = path.open("w", encoding="utf-8")
    handle.write(header + "\n")
    handle.flush()
    return done, handle
