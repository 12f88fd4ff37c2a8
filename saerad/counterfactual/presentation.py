"""Figures, table views and key-result sentences of the counterfactual chapter.

Figures are sized for the book's text column.
Every figure is at most :data:`saerad.plots.TEXT_WIDTH_INCHES` wide with text of at least 9 pt, so it is
shown at its natural size; a figure that has nothing to show says so in words instead of being empty.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from saerad.book.tables import format_percent, format_pvalue
from saerad.counterfactual import axioms
from saerad.plots import TEXT_WIDTH_INCHES, array_grid

#: Detection rates of the judge, in the order the bar chart shows them: baselines, then the intervention.
DETECTION_BARS = (
    (axioms.DETECTED_IN_REAL_WITHOUT, "real images, without"),
    (axioms.DETECTED_IN_RECONSTRUCTIONS_WITHOUT, "reconstructions, without"),
    (axioms.DETECTED_AFTER_ADD, "after add"),
    (axioms.DETECTED_IN_REAL_WITH, "real images, with"),
    (axioms.DETECTED_IN_RECONSTRUCTIONS_WITH, "reconstructions, with"),
    (axioms.DETECTED_AFTER_REMOVE, "after remove"),
)
_BAR_COLOURS = ("#bbbbbb", "#888888", "#d55e00", "#bbbbbb", "#888888", "#0072b2")


def placeholder_figure(text: str) -> plt.Figure:
    """A small figure that says why there is nothing to show (the page keeps its numbered figure)."""
    figure, axis = plt.subplots(figsize=(TEXT_WIDTH_INCHES - 0.5, 0.8))
    axis.axis("off")
    axis.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, wrap=True)
    return figure


def loss_figure(history: pd.DataFrame) -> plt.Figure:
    """The decoder's Eq. 12 loss per logged training batch and on the validation images (log scale)."""
    figure, axis = plt.subplots(figsize=(7, 3))
    logged = history.dropna(subset=["loss"])
    axis.plot(logged["step"], logged["loss"], label="training batches", alpha=0.7)
    validated = history.dropna(subset=["validation_loss"])
    if len(validated):
        axis.plot(validated["step"], validated["validation_loss"], "o-", label="validation images")
    axis.set_yscale("log")
    axis.set_xlabel("optimiser step")
    axis.set_ylabel("loss (Eq. 12)")
    axis.legend()
    figure.tight_layout()
    return figure


def reconstruction_figure(run, count: int = 8) -> plt.Figure:
    """Real test images (top row) and the decoder's images of their tokens (bottom row)."""
    originals = list(run.images_without["original"][:count])
    reconstructions = list(run.images_without["reconstruction"][:count])
    if not originals:
        return placeholder_figure("no test image to reconstruct")
    size = min(0.8, (TEXT_WIDTH_INCHES - 1.3) / len(originals))
    return array_grid([originals, reconstructions], ["real", "recon-\nstruction"], size=size,
                      horizontal_labels=True)


def figure4(panels: Sequence[dict]) -> plt.Figure:
    """Figure 4's layout: one row per feature; real, reconstruction, add, remove, |remove − reconstruction|.

    The difference map is scaled to its own maximum (given in the row label) and carries the planted mask's
    outline when there is one.
    """
    if not panels:
        return placeholder_figure("no test image with any of the findings")
    rows, labels, maps, contours = [], [], [], []
    for panel in panels:
        difference = panel["difference"]
        rows.append(list(panel["images"]) + [difference / max(float(difference.max()), 1e-6)])
        labels.append(f"{panel['finding'].replace('_', ' ')}\nfeature {panel['feature']}\n"
                      f"max change {difference.max():.2f}")
        maps.append(["gray"] * 4 + ["magma"])
        contours.append([None] * 4 + [panel["mask"]])
    return array_grid(rows, labels, ["real", "recon-\nstruction", "add\n(h_i = β)", "remove\n(h_i = 0)",
                                     "|remove −\nrecon.|"], size=1.05, cmaps=maps, contours=contours,
                      horizontal_labels=True)


def intervention_figure(runs: dict, masks: dict, kind: str, count: int = 6) -> plt.Figure:
    """Several test images per feature: the reconstruction, the counterfactual, and their difference.

    ``kind="add"``: images without the finding, the feature set to β; ``kind="remove"``: images with the
    finding, the feature set to 0, with the planted mask outlined on the difference. Differences share one
    grey scale, 0 to 0.5, so a feature whose intervention changes little shows as a dark row.
    """
    if kind not in ("add", "remove"):
        raise ValueError(f"kind must be 'add' or 'remove', got {kind!r}")
    rows, labels, maps, contours = [], [], [], []
    for finding, run in runs.items():
        images = run.images_without if kind == "add" else run.images_with
        shown = min(count, len(images.get(kind, [])))
        if shown == 0:
            continue

        def pad(values):
            values = list(values)[:shown]
            return values + [None] * (count - len(values))

        difference = np.clip(2 * axioms.difference_map(images[kind][:shown], images["reconstruction"][:shown]), 0, 1)
        name = finding.replace("_", " ")
        rows += [pad(images["reconstruction"]), pad(images[kind]), pad(difference)]
        labels += [f"{name}:\nreconstruction", f"{name}:\n{kind}", f"|{kind} −\nreconstruction|"]
        maps += [["gray"] * count, ["gray"] * count, ["magma"] * count]
        mask_row = pad(masks[finding]) if kind == "remove" and finding in masks else [None] * count
        contours += [[None] * count, [None] * count, mask_row]
    if not rows:
        return placeholder_figure(f"no test image to {kind} a feature {'to' if kind == 'add' else 'from'}")
    return array_grid(rows, labels, size=0.9, cmaps=maps, contours=contours, horizontal_labels=True)


def detection_figure(table: pd.DataFrame, findings: Sequence[str]) -> plt.Figure:
    """How often the judge sees each finding: in real images, reconstructions, and after the intervention.

    One panel per finding, stacked; each rate is labelled with its ``n/N``.
    """
    from saerad.counterfactual.summary import measure_row

    panels = []
    for finding in findings:
        bars = [(label, measure_row(table, finding, measure)) for measure, label in DETECTION_BARS]
        bars = [(label, row) for label, row in bars if row is not None]
        if bars:
            panels.append((finding, bars))
    if not panels:
        return placeholder_figure("no judge: nothing to show")
    figure, axes = plt.subplots(len(panels), 1, figsize=(7, 2.5 * len(panels)), squeeze=False)
    for axis, (finding, bars) in zip(axes[:, 0], panels):
        labels = [label for label, _ in bars]
        rates = [float(row["value"]) for _, row in bars]
        colours = [_BAR_COLOURS[[name for _, name in DETECTION_BARS].index(label)] for label in labels]
        axis.barh(labels, rates, color=colours)
        for position, (_, row) in enumerate(bars):
            axis.annotate(f"{row['n']}/{row['N']}", (float(row["value"]), position), xytext=(4, 0),
                          textcoords="offset points", va="center", fontsize=9)
        axis.set_xlim(0, 1.15)
        axis.invert_yaxis()
        axis.set_title(f"the judge sees {finding.replace('_', ' ')}", loc="left")
        axis.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    axes[-1, 0].set_xlabel("share of images")
    figure.tight_layout()
    return figure


def _is_rate(measure: str) -> bool:
    return (measure.startswith(("detected", "effectiveness: detected", "off-target", "segmentation IoU >="))
            or measure.startswith("reversibility (token)"))


def axioms_view(table: pd.DataFrame, finding: str) -> pd.DataFrame:
    """One finding's rows of ``axioms.csv`` for the page: measure, value in its unit, and ``n of N``.

    Rates and shares as percentages, p-values as ``< 0.001``, grey-level distances with four decimals, IoU
    with two; a row without a value shows its reason.
    """
    rows = table[table["finding"] == finding]
    values, counts = [], []
    for row in rows.itertuples(index=False):
        measure, value = str(row.measure), row.value
        if str(row.note).startswith("n/a") or pd.isna(value):
            values.append(str(row.note) if str(row.note).startswith("n/a") else "n/a")
        elif measure in (axioms.ADD_TEST, axioms.REMOVE_TEST):
            values.append(f"p {format_pvalue(value)}" if format_pvalue(value).startswith("<")
                          else f"p = {format_pvalue(value)}")
        elif _is_rate(measure):
            values.append(format_percent(value))
        elif measure.startswith("segmentation IoU"):
            values.append(f"{value:.2f}")
        else:
            values.append(f"{value:.4f}")
        counts.append(f"{int(row.n)} of {int(row.N)}" if int(row.N) else "—")
    return pd.DataFrame({"measure": rows["measure"].to_numpy(), "value": values, "images (n of N)": counts})


def key_results(table: pd.DataFrame, features: dict[str, int]) -> dict[str, str]:
    """The chapter's key results, read from ``axioms.csv``: short texts for the box at the top of the page.

    Returns
    -------
    dict
        ``effectiveness`` (Markdown: per feature, detections after add and remove against their
        reconstruction baselines), ``null_max`` (the largest null-intervention change), ``cycle_share``
        (the largest distance after the add-then-remove cycle, as a share of the addition's own change) and
        ``iou`` (mean segmentation IoU per feature); "n/a: ..." where the table has no such measure.
    """
    from saerad.counterfactual.summary import measure_row

    def row(finding: str, measure: str):
        return measure_row(table, finding, measure)

    effectiveness, nulls, shares, ious = [], [], [], []
    for finding, feature in features.items():
        name = finding.replace("_", " ")
        add, add_base = row(finding, axioms.DETECTED_AFTER_ADD), row(finding, axioms.DETECTED_IN_RECONSTRUCTIONS_WITHOUT)
        remove, remove_base = (row(finding, axioms.DETECTED_AFTER_REMOVE),
                               row(finding, axioms.DETECTED_IN_RECONSTRUCTIONS_WITH))
        parts = []
        if add is not None and add_base is not None:
            parts.append(f"seen after *add* in {add['n']} of {add['N']} images without it "
                         f"({add_base['n']} in their reconstructions)")
        if remove is not None and remove_base is not None:
            parts.append(f"after *remove* in {remove['n']} of {remove['N']} images with it "
                         f"({remove_base['n']} in their reconstructions)")
        if parts:
            effectiveness.append(f"{name} (feature {feature}) " + ", ".join(parts))
        null = row(finding, axioms.NULL_DISTANCE)
        if null is not None:
            nulls.append(float(null["value"]))
        cycle, effect = row(finding, axioms.CYCLE_DISTANCE), row(finding, axioms.EFFECT_SIZE)
        if cycle is not None and effect is not None and float(effect["value"]) > 0:
            shares.append(float(cycle["value"]) / float(effect["value"]))
        iou = row(finding, axioms.SEGMENTATION_IOU)
        if iou is not None and iou["n"] > 0:
            ious.append(f"{name} {float(iou['value']):.2f} ({iou['n']} images)")
    return {
        "effectiveness": "; ".join(effectiveness) if effectiveness else "n/a: no judge or no feature to test",
        "null_max": ("n/a" if not nulls else "0 (exactly)" if max(nulls) == 0 else f"{max(nulls):.4f} grey levels"),
        "cycle_share": f"at most {format_percent(max(shares))}" if shares else "n/a",
        "iou": ", ".join(ious) if ious else "n/a: no planted masks or no image with the finding",
    }


def judges_view(judges: pd.DataFrame) -> pd.DataFrame:
    """The judges table (``classifiers.csv``) for the page: finding, positives, AUROC on real and drawn images.

    How many reconstructions each AUROC is over stays in the CSV; the page says it in its prose.
    """
    view = pd.DataFrame({"finding": judges["finding"].str.replace("_", " ")})

    def count(column: str) -> pd.Series:
        return judges[column] if column in judges.columns else pd.Series([np.nan] * len(judges))

    view["with it (train / test)"] = [
        f"{int(a):,} / {int(b):,}" if pd.notna(a) and pd.notna(b) else "—"
        for a, b in zip(count("train_positive"), count("test_positive"))]
    view["AUROC, real"] = count("auroc_real_test").to_numpy()
    view["AUROC, reconstructions"] = count("auroc_reconstructions").to_numpy()
    return view
