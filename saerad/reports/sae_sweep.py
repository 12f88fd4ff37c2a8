"""Table 2's SAE ablation, measured: SAE-Rad reports written from each SAE of a sweep.

The paper compares expansion factors ×32/×64/×128 and their denser variants by
the RadFact of the reports each SAE writes (Section 5.2, Table 2, Appendix H).
The SAE chapter trains the demo's counterpart (``x4``, ``x8``, ``x16`` and
``*_dense``, Table 5); this module runs, for each of them, exactly the steps the
features and reports chapters run for the main SAE:

1. sparse activations of every image (:func:`~saerad.features.activations.encode_dataset_to_sparse`,
   cached with its manifest under ``metrics/sae_sweep/<sae>/``);
2. the top-activating *training* studies of every live feature and their offline
   descriptions (:mod:`saerad.features.stage`, the LLM cache under ``llm_cache/``);
3. tau: the value of the grid with the best finding macro-F1 on the *validation*
   split (:func:`~saerad.reports.generate.validation_tau_study`) when SynthCXR's
   planted truth exists, else the reports stage's tau (``tau_chosen_by`` says which);
4. one offline-composed SAE-Rad report per *test* study
   (:func:`~saerad.reports.generate.generate_reports`, without the baseline).

Settings are the chapters' own: each notebook's parameter defaults overridden by
the values its stage recorded in ``<artifacts_root>/<stage>/stage.json``. The
describer and the composer are always the offline ones.

Outputs (all written atomically, rewritten only when their bytes change)::

    metrics/sae_sweep/generated.jsonl     generated.jsonl records (system "sae_rad", config "no_aux")
                                          plus "sae" (folder name) and "tau", SAE by SAE, study by study
    metrics/sae_sweep/sweep_summary.csv   one row per SAE (see SUMMARY_COLUMNS)
    metrics/sae_sweep/<sae>/              activations (+ manifest), descriptions.jsonl, tau_study.csv,
                                          generated.jsonl and sweep.json, written last: the inputs
                                          (SAE weights, tokens, data files, settings) the SAE's output
                                          was computed from; a rerun with the same inputs skips the SAE.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import pandas as pd
from tqdm import tqdm

from saerad.io import read_json, write_json, write_table, write_text

#: Version of the per-SAE record; a change recomputes every SAE.
SWEEP_FORMAT = 1
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Stage -> chapter notebook whose ``parameters`` cell gives the defaults.
STAGE_NOTEBOOKS = {"features": "03_features.ipynb", "reports": "04_reports.ipynb"}
SUMMARY_COLUMNS = ("sae", "architecture", "expansion_factor", "d_sae", "images", "l0", "dead_features",
                   "live_features", "described_features", "flagged_features", "tau", "tau_chosen_by",
                   "validation_macro_f1", "test_studies", "empty_reports", "mean_sentences",
                   "sentences_without_source")


def stage_settings(artifacts_root: str | Path, stage: str) -> dict:
    """The parameters a chapter ran with: :func:`saerad.params.stage_parameters` (defaults, then the record).

    Parameters
    ----------
    artifacts_root
        ``artifacts/<profile>``.
    stage
        ``"features"`` or ``"reports"``.
    """
    from saerad.params import stage_parameters

    if stage not in STAGE_NOTEBOOKS:
        raise ValueError(f"stage must be one of {sorted(STAGE_NOTEBOOKS)}, got {stage!r}")
    return stage_parameters(artifacts_root, stage)


def available_saes(artifacts_root: str | Path) -> list[str]:
    """Folder names under ``<artifacts_root>/sae/`` that hold an SAE (a ``cfg.json``), sorted."""
    return sorted(path.parent.name for path in (Path(artifacts_root) / "sae").glob("*/cfg.json"))


def table5_sweep_names(artifacts_root: str | Path) -> list[str]:
    """The SAE chapter's Table 5 sweep (``sae/table5.csv``): sparse SAEs by size, then the dense ones by size."""
    path = Path(artifacts_root) / "sae" / "table5.csv"
    if not path.exists():
        from saerad.params import stage_parameters

        if (Path(artifacts_root) / "sae" / "stage.json").exists() and \
                not stage_parameters(artifacts_root, "sae").get("run_table5", True):
            raise FileNotFoundError(
                f"{path} does not exist because the sae stage ran with run_table5=false: set "
                "metrics.score_sae_sweep=false, or name SAE folders in metrics.table2_saes, or re-run the sae stage "
                "with sae.run_table5=true")
        raise FileNotFoundError(f"{path} does not exist: run the sae stage first, or name the SAE folders "
                                "(metrics.table2_saes)")
    table = pd.read_csv(path)
    missing = {"name", "expansion_factor"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    table["dense"] = table["name"].astype(str).str.endswith("_dense")
    return table.sort_values(["dense", "expansion_factor"], kind="stable")["name"].astype(str).tolist()


def sweep_settings(artifacts_root: str | Path, tau: float | None = None,
                   tau_grid: Sequence[float] | None = None) -> dict:
    """Everything besides the data and the SAE that a sweep's output depends on.

    Features settings (``top_k``, ``chunk_size``, ``device``, offline describer
    thresholds) and reports settings (``tau``, ``tau_grid``, ``max_sentences``,
    ``aggregate``, ``statements_per_feature``) as the chapters ran; ``tau`` and
    ``tau_grid``, when given, replace the latter two's choice.
    """
    features, reports = stage_settings(artifacts_root, "features"), stage_settings(artifacts_root, "reports")
    device = features["device"]
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "format": SWEEP_FORMAT, "profile": features["profile"], "device": device,
        "top_k": int(features["top_k"]), "chunk_size": int(features["chunk_size"]),
        "min_support": int(features["min_support"]), "min_lift": float(features["min_lift"]),
        "max_statements": int(features["max_statements"]),
        "tau": None if tau is None else float(tau), "stage_tau": float(reports["tau"]),
        "tau_grid": [float(t) for t in (reports["tau_grid"] if tau_grid is None else tau_grid)],
        "max_sentences": int(reports["max_sentences"]), "aggregate": reports["aggregate"],
        "statements_per_feature": int(reports["statements_per_feature"]),
    }


def choose_tau(tau: float | None, tau_table: pd.DataFrame | None, stage_tau: float) -> tuple[float, str, float | None]:
    """``(tau, chosen_by, validation macro-F1 at tau)``.

    ``chosen_by`` is ``"argument"`` (given), ``"validation_macro_f1"`` (best row of
    the validation tau study; a tie goes to the first tau of the grid) or
    ``"reports_stage"`` (no tau study: no planted truth or no validation studies).
    """
    if tau is not None:
        return float(tau), "argument", None
    if tau_table is not None and tau_table["macro_f1"].notna().any():
        best = tau_table.loc[tau_table["macro_f1"].idxmax()]
        return float(best["tau"]), "validation_macro_f1", float(best["macro_f1"])
    return float(stage_tau), "reports_stage", None


def sweep_reports(
    artifacts_root: str | Path,
    sae_names: Sequence[str],
    out_path: str | Path | None = None,
    tau: float | None = None,
    tau_grid: Sequence[float] | None = None,
    seed: int = 0,
    resume: bool = True,
    progress: bool = False,
) -> Path:
    """SAE-Rad reports for every test study from each SAE in ``sae_names``, in one JSONL file.

    Parameters
    ----------
    artifacts_root
        ``artifacts/<profile>`` with the data, encode and sae stages' artifacts.
    sae_names
        Folders under ``<artifacts_root>/sae/`` (e.g. ``["x4", "x8", "x16"]``); the
        output follows this order.
    out_path
        Default ``<artifacts_root>/metrics/sae_sweep/generated.jsonl``;
        ``sweep_summary.csv`` is written next to it.
    tau
        Threshold of Eq. 10 for every SAE; None chooses it per SAE (:func:`choose_tau`).
    tau_grid
        Candidates of the validation tau study (default: the reports stage's grid).
    seed
        Accepted for the chapters' common signature; nothing here draws random
        numbers (every test study is reported, describer and composer are
        deterministic), so it changes no output.
    resume
        Skip an SAE whose ``sweep.json`` matches its current inputs and reuse
        cached activations; False recomputes everything.
    progress
        A tqdm bar over the SAEs.

    Returns
    -------
    Path
        ``out_path``. Same inputs give byte-identical files.

    Raises
    ------
    ValueError
        A name that is not an SAE folder (the message lists the available ones).
    """
    from saerad.features.activations import activation_index, tokens_digest

    root = Path(artifacts_root)
    names = list(dict.fromkeys(sae_names))
    available = available_saes(root)
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        raise ValueError(f"unknown SAE folder(s) {unknown} under {root / 'sae'}; available: {available}"
                         if names else f"no SAE named; available under {root / 'sae'}: {available}")
    sweep_dir = root / "metrics" / "sae_sweep"
    out_path = Path(out_path) if out_path is not None else sweep_dir / "generated.jsonl"
    tokens, _ = activation_index(root)
    shared = {"tokens": tokens_digest(tokens), "studies": _file_digest(root / "data" / "studies.csv"),
              "ground_truth": _file_digest(root / "data" / "ground_truth.csv"),
              "settings": sweep_settings(root, tau, tau_grid)}
    del tokens
    done = [_sweep_one(root, name, sweep_dir / name, shared, resume)
            for name in tqdm(names, desc="SAE sweep", unit="sae", disable=not progress)]
    lines = []
    for record in done:
        text = (sweep_dir / record["sae"] / "generated.jsonl").read_text(encoding="utf-8")
        lines += [json.dumps({**json.loads(line), "sae": record["sae"], "tau": record["tau"]}, sort_keys=True) + "\n"
                  for line in text.splitlines() if line.strip()]
    _write_if_changed(out_path, "".join(lines))
    summary = pd.DataFrame([record["summary"] for record in done], columns=list(SUMMARY_COLUMNS))
    _write_if_changed(out_path.parent / "sweep_summary.csv", summary.to_csv(index=False))
    return out_path


def _sweep_one(root: Path, name: str, sae_dir: Path, shared: dict, resume: bool) -> dict:
    """Activations, descriptions, tau and reports of one SAE, or its finished record when inputs are unchanged."""
    from saerad.features import stage
    from saerad.features.activations import encode_dataset_to_sparse, sae_digest
    from saerad.features.descriptions import read_descriptions
    from saerad.reports.generate import generate_reports, read_generated, validation_tau_study
    from saerad.sae import load_sae

    settings = shared["settings"]
    sae = load_sae(root / "sae" / name, device=settings["device"])
    inputs = {**shared, "sae": sae_digest(sae)}
    record_path, generated_path = sae_dir / "sweep.json", sae_dir / "generated.jsonl"
    if resume and record_path.exists() and generated_path.exists():
        finished = read_json(record_path)
        if finished.get("inputs") == inputs and finished.get("generated_sha256") == _file_digest(generated_path):
            return finished
    record_path.unlink(missing_ok=True)  # a record must never vouch for files being replaced

    # Features chapter: activations, top training studies, offline descriptions.
    encoding = encode_dataset_to_sparse(sae, root, sae_dir, chunk_size=settings["chunk_size"], k=settings["top_k"],
                                        device=settings["device"], progress=False, reuse=resume)
    activations, index, stats = encoding.activations, encoding.index, encoding.stats
    live = stats.loc[~stats["dead"].astype(bool), "feature"].astype(int).tolist()
    findings = stage.study_findings(root)
    top_reports, _ = stage.training_top_reports(activations, index, findings, live, settings["top_k"])
    describer = stage.offline_describer(index, findings, settings["min_support"], settings["min_lift"],
                                        settings["max_statements"])
    client = stage.make_llm_client("describer", "offline", "", describer, root / "llm_cache", settings["profile"])
    stage.describe_live_features(top_reports, live, client, sae_dir / "descriptions.jsonl")
    descriptions = read_descriptions(sae_dir / "descriptions.jsonl")

    # Reports chapter: tau on the validation split, then one report per test study.
    per_feature = settings["statements_per_feature"] or None  # 0 means every statement
    compose = {"max_sentences": settings["max_sentences"], "aggregate": settings["aggregate"],
               "statements_per_feature": per_feature}
    tau_table = None
    if settings["tau"] is None:
        tau_table = validation_tau_study(root, activations, index, descriptions, settings["tau_grid"], **compose)
        if tau_table is not None:
            write_table(sae_dir / "tau_study.csv", tau_table)
    tau, chosen_by, validation_f1 = choose_tau(settings["tau"], tau_table, settings["stage_tau"])
    # No resume of a partial file here: composing is cheap, and a partial left by other weights must not count.
    generate_reports(root, descriptions, tau, activations=(activations, index), out_path=generated_path,
                     baseline=False, resume=False, **compose)

    generated = read_generated(generated_path)
    n_sentences = generated["sentences"].map(len)
    summary = {
        "sae": name, "architecture": sae.config.architecture, "expansion_factor": int(sae.config.expansion_factor),
        "d_sae": int(sae.config.d_sae), "images": int(activations.shape[0]),
        "l0": float(activations.nnz / max(activations.shape[0], 1)), "dead_features": int(len(stats) - len(live)),
        "live_features": len(live), "described_features": sum(d.ok for d in descriptions.values()),
        "flagged_features": sum(not d.ok for d in descriptions.values()), "tau": tau, "tau_chosen_by": chosen_by,
        "validation_macro_f1": validation_f1, "test_studies": int(generated["study_id"].nunique()),
        "empty_reports": int((n_sentences == 0).sum()),
        "mean_sentences": float(n_sentences.mean()) if len(generated) else None,
        "sentences_without_source": int(sum(not s["feature_ids"] for row in generated["sentences"] for s in row)),
    }
    finished = {"sae": name, "inputs": inputs, "tau": tau, "tau_chosen_by": chosen_by, "summary": summary,
                "generated_sha256": _file_digest(generated_path)}
    write_json(record_path, finished)
    return finished


def _file_digest(path: Path) -> str | None:
    """sha256 of a file's bytes (read in blocks), None when it does not exist."""
    if not path.exists():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` atomically unless the file already holds exactly these bytes (its mtime then stays)."""
    if path.exists() and path.read_bytes() == text.encode("utf-8"):
        return
    write_text(path, text)
