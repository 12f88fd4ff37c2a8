"""The reports chapter's side-by-side table: the reference, SAE-Rad's and the nearest neighbour's report of a study.

On SynthCXR each generated sentence is coloured against the image's planted findings by
:func:`saerad.metrics.planted.sentence_marks`: green only when every finding it states agrees with the
image *including its side and, where the sentence gives one, its size class* ("New 20 mm nodule in the
left mid lung" is red for an image with a 15 mm nodule in the right lung). The same rule gives the
chapter's side-and-size F1 (:func:`saerad.metrics.planted.finding_f1_by_side_and_size`). A red sentence
says why in its tooltip, and the planted findings no sentence states correctly are listed under the
report. SAE-Rad's sentences carry their source features as superscripts. The radiograph is inlined
(:mod:`saerad.thumbnails`), so the HTML stands alone in the executed notebook and the built book.
"""

from __future__ import annotations

import html
import os
from typing import Mapping, Sequence

import pandas as pd

from saerad.metrics.planted import BOTH, sentence_marks
from saerad.thumbnails import thumbnail_img_tag

#: Background of a sentence that agrees with the image, states something it does not have, or names no finding.
MARK_COLOURS = {"shared": "#d8f0d8", "extra": "#f6d5d5", "none": "transparent"}


def planted_text(planted: Mapping[str, Mapping]) -> str:
    """The planted findings of one study as a reader reads them: ``lung nodule (right, 10-19 mm)``."""
    if not planted:
        return "none"
    parts = []
    for name, attributes in planted.items():
        details = []
        sides = attributes.get("sides")
        if sides is not None:
            details.append("both sides" if sides == BOTH else next(iter(sides)))
        if attributes.get("size") is not None:
            details.append(str(attributes["size"]))
        parts.append(name.replace("_", " ") + (f" ({', '.join(details)})" if details else ""))
    return ", ".join(parts)


def marked_sentences(sentences: Sequence[Mapping], planted: Mapping[str, Mapping] | None, with_sources: bool) -> str:
    """HTML of one report's ``{"text", "feature_ids"}`` sentences, coloured against ``planted``.

    ``planted`` is one study's entry of :func:`saerad.metrics.planted.planted_findings`; None leaves the
    sentences uncoloured (MIMIC-CXR has no planted truth).
    """
    if planted is None:
        marks, missed = [(sentence["text"], "none", []) for sentence in sentences], []
    else:
        marks, missed = sentence_marks(sentences, planted)
    parts = []
    for sentence, (text, mark, reasons) in zip(sentences, marks):
        sources = f' <sup>{", ".join(str(f) for f in sentence["feature_ids"])}</sup>' if with_sources else ""
        title = f' title="{html.escape("; ".join(reasons))}"' if reasons else ""
        parts.append(f'<span style="background:{MARK_COLOURS[mark]}"{title}>{html.escape(text)}</span>{sources}')
    missing = f'<br><i>missed: {", ".join(m.replace("_", " ") for m in missed)}</i>' if missed else ""
    return " ".join(parts) + missing


def side_by_side_table(generated: pd.DataFrame, study_ids: Sequence[int], image_paths: Mapping[int, str | os.PathLike],
                       planted: Mapping[int, Mapping[str, Mapping]] | None = None, thumbnail_size: int = 160) -> str:
    """An HTML table with a row per study: image, reference, SAE-Rad (with source features), nearest neighbour.

    Parameters
    ----------
    generated
        :func:`saerad.reports.generate.read_generated`; the first ``sae_rad``
        line of a study is shown (its first configuration).
    study_ids
        The studies to show, in order.
    image_paths
        Study id -> path of the radiograph to show.
    planted
        :func:`saerad.metrics.planted.planted_findings` (study -> finding -> side and size) to colour
        sentences and list missed findings; None leaves them unmarked (MIMIC-CXR).
    """
    rows = []
    for study_id in study_ids:
        lines = generated[generated["study_id"] == study_id]
        by_system = {system: group.iloc[0] for system, group in lines.groupby("system", sort=False)}
        missing = [system for system in ("sae_rad", "nearest_neighbour") if system not in by_system]
        if missing:
            raise ValueError(f"generated reports: study {study_id} has no line from {missing}")
        if planted is not None and int(study_id) not in planted:
            raise ValueError(f"planted findings: study {study_id} has no ground truth")
        study = None if planted is None else planted[int(study_id)]
        rows.append(
            f"<tr><td>{thumbnail_img_tag(image_paths[study_id], thumbnail_size)}<br>study {study_id}"
            + ("" if study is None else f"<br><small>planted: {html.escape(planted_text(study))}</small>") + "</td>"
            f"<td>{html.escape(by_system['sae_rad']['reference'])}</td>"
            f"<td>{marked_sentences(by_system['sae_rad']['sentences'], study, True)}</td>"
            f"<td>{marked_sentences(by_system['nearest_neighbour']['sentences'], study, False)}</td></tr>")
    return ('<div class="saerad-table"><table class="saerad side-by-side" style="font-size:0.8em; vertical-align:top">'
            "<thead><tr><th>image</th><th>reference</th><th>SAE-Rad (source features)</th><th>nearest neighbour</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")
