"""Solutions of the counterfactual chapter's exercises (``notebooks/06_counterfactual.ipynb``).

Each solution rebuilds the chapter's experiment from its artifacts (the same SAE, features, β, test images
and starting noise, through :mod:`saerad.counterfactual.chapter`) and redraws only the images the changed
parameter affects:

06.1 trains a decoder for two epochs and judges its reconstructions and counterfactuals next to the
chapter's decoder on the same images; 06.2 redraws the added and cycled images with β = 1; 06.3 redraws the
removals and thresholds their difference maps at three levels.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from saerad.book.solutions import solution
from saerad.book.tables import format_percent, format_pvalue


@dataclass
class _Experiment:
    settings: dict
    sae: Any
    train_set: Any
    validation_set: Any
    test_set: Any
    choices: pd.DataFrame
    test_labels: pd.DataFrame | None
    train_labels: pd.DataFrame | None
    bank: torch.Tensor

    def features(self):
        """``(finding, feature, β, rows without, rows with)`` for every finding with a feature, as the chapter picks them."""
        from saerad.counterfactual import chapter, experiment

        for row in self.choices.itertuples(index=False):
            if row.feature < 0:
                continue
            present = chapter.present_in(self.sae, self.test_set, self.test_labels, row.finding, row.feature)
            without, with_ = experiment.pick_rows(present, self.settings["images_per_group"], self.settings["seed"])
            yield row.finding, int(row.feature), float(row.beta_code), without, with_


def _experiment(artifacts_root: Path) -> _Experiment:
    from saerad.counterfactual import chapter, experiment
    from saerad.counterfactual.images import load_image_set
    from saerad.features.alignment import ground_truth_labels
    from saerad.params import stage_parameters
    from saerad.sae import load_sae

    settings = stage_parameters(artifacts_root, "counterfactuals")
    size = settings["image_size"]
    sae = load_sae(artifacts_root / "sae" / settings["sae_name"], device="cpu").eval()
    train_set = load_image_set(artifacts_root, "train", size)
    validation_set = load_image_set(artifacts_root, "validate", size)
    test_set = load_image_set(artifacts_root, "test", size)
    choices, truth = chapter.feature_choices(artifacts_root, sae, settings["findings"], settings["beta"],
                                             settings["beta_quantile"])
    if not truth:
        raise ValueError("the counterfactual exercises judge images against SynthCXR's planted findings; "
                         "this data stage has no ground truth (MIMIC-CXR)")
    findings = settings["findings"]
    return _Experiment(settings, sae, train_set, validation_set, test_set, choices,
                       ground_truth_labels(artifacts_root / "data", test_set.index, findings),
                       ground_truth_labels(artifacts_root / "data", train_set.index, findings),
                       experiment.noise_bank(len(test_set), size, settings["seed"]))


def _chapter_decoder(artifacts_root: Path):
    from saerad.counterfactual.train import load_decoder

    return load_decoder(artifacts_root / "counterfactuals" / "decoder")


def _judges(run: _Experiment):
    from saerad.counterfactual import chapter

    judges, _ = chapter.fit_judges(run.train_set, run.train_labels, list(run.choices["finding"]),
                                   run.settings["classifier_regularisation"])
    return judges


def _draw(model, run: _Experiment, rows: np.ndarray, tokens: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    from saerad.counterfactual.interventions import decode_conditions

    return decode_conditions(model, tokens, run.bank[rows], run.settings["sampling_steps"],
                             run.settings["sample_batch_size"])


def _add_and_remove_images(model, run: _Experiment, feature: int, beta: float, without: np.ndarray,
                           with_: np.ndarray) -> tuple[dict, dict]:
    from saerad.counterfactual.interventions import counterfactual_tokens

    with torch.no_grad():
        z = torch.from_numpy(run.test_set.tokens[without])
        images_without = _draw(model, run, without, {"reconstruction": z,
                                                     "add": counterfactual_tokens(run.sae, z, feature, beta)})
        z = torch.from_numpy(run.test_set.tokens[with_])
        images_with = _draw(model, run, with_, {"reconstruction": z,
                                                "remove": counterfactual_tokens(run.sae, z, feature, 0.0)})
    return images_without, images_with


def _rate(hits: np.ndarray) -> str:
    return f"{int(hits.sum())} of {len(hits)}" if len(hits) else "n/a"


@solution("06.1", keys=("epochs", "steps", "chapter_steps", "validation_loss", "chapter_validation_loss", "table",
                        "auroc_direction", "auroc_lower_count", "findings", "images_per_group"),
          reads=("counterfactuals",), counterfactuals__epochs=2)
def fewer_epochs(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Train the decoder for ``counterfactuals.epochs`` epochs; judge it next to the chapter's decoder."""
    from saerad.counterfactual.decoder import DecoderConfig
    from saerad.counterfactual.train import DecoderTrainConfig, train_decoder

    run = _experiment(artifacts_root)
    s = run.settings
    chapter_model = _chapter_decoder(artifacts_root)
    chapter_history = pd.read_csv(artifacts_root / "counterfactuals" / "decoder" / "history.csv")
    decoder_config = DecoderConfig(token_dim=run.train_set.tokens.shape[1], image_size=s["image_size"],
                                   channels=tuple(s["channels"]), norm_groups=s["norm_groups"], seed=s["seed"])
    train_config = DecoderTrainConfig(epochs=parameters["counterfactuals.epochs"], batch_size=s["batch_size"],
                                      lr=s["lr"], lr_warmup_steps=s["lr_warmup_steps"],
                                      lr_decay_fraction=s["lr_decay_fraction"], checkpoint_every=s["checkpoint_every"],
                                      seed=s["seed"], device="cpu")
    validation = (run.validation_set.tokens, run.validation_set.pixels) if len(run.validation_set) else None
    with tempfile.TemporaryDirectory(prefix="saerad-06.1-") as scratch:
        short = train_decoder(run.train_set.tokens, run.train_set.pixels, decoder_config, train_config,
                              Path(scratch) / "decoder", validation=validation, progress=False)
    judges = _judges(run)
    rows, lower, compared = [], 0, 0
    for finding, feature, beta, without, with_ in run.features():
        judge = judges.get(finding)
        if judge is None:
            continue
        measured = {}
        for label, model in (("chapter", chapter_model), ("short", short.model.eval())):
            images_without, images_with = _add_and_remove_images(model, run, feature, beta, without, with_)
            pictures = np.concatenate([images_without["reconstruction"], images_with["reconstruction"]])
            truth = np.r_[np.zeros(len(without)), np.ones(len(with_))]
            measured[label] = {
                "judge AUROC on reconstructions": f"{judge.auroc(pictures, truth):.3f}",
                "seen in reconstructions without it": _rate(judge.detects(images_without["reconstruction"])),
                "seen after add": _rate(judge.detects(images_without["add"])),
                "seen in reconstructions with it": _rate(judge.detects(images_with["reconstruction"])),
                "seen after remove": _rate(judge.detects(images_with["remove"])),
            }
        for measure in measured["chapter"]:
            rows.append({"finding": finding.replace("_", " "), "measure": measure,
                         f"{s['epochs']} epochs (chapter)": measured["chapter"][measure],
                         f"{parameters['counterfactuals.epochs']} epochs": measured["short"][measure]})
        before = float(measured["chapter"]["judge AUROC on reconstructions"])
        after = float(measured["short"]["judge AUROC on reconstructions"])
        if np.isfinite(before) and np.isfinite(after):
            compared += 1
            lower += after < before
    direction = ("lower" if compared and lower > compared / 2 else
                 "not lower" if compared else "not measurable")
    return {
        "epochs": int(parameters["counterfactuals.epochs"]),
        "steps": int(short.steps),
        "chapter_steps": int(chapter_history["step"].max()),
        "validation_loss": _last_validation(short.history),
        "chapter_validation_loss": _last_validation(chapter_history),
        "table": rows,
        "auroc_direction": direction,
        "auroc_lower_count": int(lower),
        "findings": int(compared),
        "images_per_group": int(s["images_per_group"]),
    }


def _last_validation(history: pd.DataFrame) -> str:
    validated = history.dropna(subset=["validation_loss"])
    return f"{validated['validation_loss'].iloc[-1]:.4f}" if len(validated) else "n/a (no validation images)"


@solution("06.2", keys=("table", "chapter_betas", "effect_chapter", "effect_changed", "token_direction"),
          reads=("counterfactuals",), counterfactuals__beta=1.0)
def weak_beta(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Redraw the added and the cycled images with β = ``counterfactuals.beta``; compare with ``axioms.csv``."""
    from saerad.counterfactual import axioms
    from saerad.counterfactual.interventions import add_then_remove
    from saerad.counterfactual.summary import measure_row

    run = _experiment(artifacts_root)
    chapter_table = pd.read_csv(artifacts_root / "counterfactuals" / "axioms.csv")
    model = _chapter_decoder(artifacts_root)
    judges = _judges(run)
    beta = float(parameters["counterfactuals.beta"])
    token_measure = "reversibility (token): ||z_cycle - z|| / ||z_add - z||"
    rows, betas, effects_chapter, effects_changed, tokens_chapter, tokens_changed = [], [], [], [], [], []
    for finding, feature, chapter_beta, without, _ in run.features():
        if len(without) == 0:
            continue
        betas.append(f"{finding.replace('_', ' ')} {chapter_beta:.3g}")
        with torch.no_grad():
            z = torch.from_numpy(run.test_set.tokens[without])
            cycle = add_then_remove(run.sae, z, feature, beta)
            images = _draw(model, run, without, {"reconstruction": z, "add": cycle.added, "cycle": cycle.returned})
            token_share = ((cycle.returned - z).norm(dim=1) / (cycle.added - z).norm(dim=1).clamp_min(1e-12)).numpy()
        effect = axioms.image_distance(images["add"], images["reconstruction"])
        changed = {
            axioms.DETECTED_AFTER_ADD: None, axioms.ADD_TEST: None,
            axioms.EFFECT_SIZE: f"{effect.mean():.4f}",
            axioms.CYCLE_DISTANCE: f"{axioms.image_distance(images['cycle'], images['reconstruction']).mean():.4f}",
            token_measure: format_percent(float(np.mean(token_share))),
        }
        judge = judges.get(finding)
        if judge is not None:
            before, after = judge.detects(images["reconstruction"]), judge.detects(images["add"])
            changed[axioms.DETECTED_AFTER_ADD] = _rate(after)
            test = axioms.paired_change_row(feature, finding, axioms.ADD_TEST, before, after, True)
            changed[axioms.ADD_TEST] = f"p {_p(test['value'])}"
        effects_changed.append(float(effect.mean()))
        tokens_changed.append(float(np.mean(token_share)))
        for measure, value in changed.items():
            if value is None:
                continue
            original = measure_row(chapter_table, finding, measure)
            rows.append({"finding": finding.replace("_", " "), "measure": measure,
                         "chapter's β": _chapter_value(original, measure), f"β = {beta:g}": value})
            if measure == axioms.EFFECT_SIZE and original is not None:
                effects_chapter.append(float(original["value"]))
            if measure == token_measure and original is not None:
                tokens_chapter.append(float(original["value"]))
    return {
        "table": rows,
        "chapter_betas": ", ".join(betas) or "n/a",
        "effect_chapter": f"{np.mean(effects_chapter):.4f}" if effects_chapter else "n/a",
        "effect_changed": f"{np.mean(effects_changed):.4f}" if effects_changed else "n/a",
        "token_direction": ("n/a" if not tokens_chapter or not tokens_changed else
                            "larger" if np.mean(tokens_changed) > np.mean(tokens_chapter) else "smaller"),
    }


def _p(value: float) -> str:
    text = format_pvalue(value)
    return text if text.startswith("<") else f"= {text}"


def _chapter_value(row: pd.Series | None, measure: str) -> str:
    from saerad.counterfactual import axioms

    if row is None:
        return "n/a"
    if measure == axioms.DETECTED_AFTER_ADD:
        return f"{int(row['n'])} of {int(row['N'])}"
    if measure == axioms.ADD_TEST:
        return f"p {_p(float(row['value']))}"
    if measure.startswith("reversibility (token)"):
        return format_percent(float(row["value"]))
    return f"{float(row['value']):.4f}"


@solution("06.3", keys=("table", "best", "together"), reads=("counterfactuals",),
          counterfactuals__segmentation_threshold=[0.05, 0.2])
def segmentation_thresholds(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Redraw the removals and score their thresholded difference maps at the chapter's and the given thresholds."""
    from saerad.counterfactual import axioms
    from saerad.counterfactual.images import load_finding_masks
    from saerad.counterfactual.interventions import counterfactual_tokens

    run = _experiment(artifacts_root)
    model = _chapter_decoder(artifacts_root)
    thresholds = sorted({float(run.settings["segmentation_threshold"]),
                         *map(float, parameters["counterfactuals.segmentation_threshold"])})
    rows, best, directions = [], [], []
    for finding, feature, _, _, with_ in run.features():
        if len(with_) == 0:
            continue
        with torch.no_grad():
            z = torch.from_numpy(run.test_set.tokens[with_])
            images = _draw(model, run, with_, {"reconstruction": z,
                                               "remove": counterfactual_tokens(run.sae, z, feature, 0.0)})
        masks = load_finding_masks(artifacts_root, run.test_set.index["image_path"].iloc[with_], finding,
                                   run.settings["image_size"])
        difference = axioms.difference_map(images["remove"], images["reconstruction"])
        scores = {}
        for threshold in thresholds:
            iou = axioms.intersection_over_union(axioms.segment(difference, threshold), masks)
            scores[threshold] = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
        row = {"finding": finding.replace("_", " "), "images": int(np.isfinite(iou).sum())}
        for threshold in thresholds:
            chapter_mark = " (chapter)" if threshold == float(run.settings["segmentation_threshold"]) else ""
            row[f"IoU at {threshold:g}{chapter_mark}"] = f"{scores[threshold]:.2f}"
        rows.append(row)
        finite = {t: v for t, v in scores.items() if np.isfinite(v)}
        if len(finite) >= 2:
            directions.append(np.sign(finite[max(finite)] - finite[min(finite)]))
        if finite:
            best.append(f"{finding.replace('_', ' ')} at {max(finite, key=finite.get):g}")
    together = ("n/a" if len(directions) < 2 else "moved in the same direction" if len(set(directions)) == 1
                else "moved in opposite directions")
    return {"table": rows, "best": "; ".join(best) or "n/a", "together": together}
