"""The reports chapter's side-by-side table: the reference, SAE-Rad's and the nearest neighbour's report of a study.

On SynthCXR each generated sentence is coloured by
:func:`saerad.reports.generate.synthcxr_sentence_marks` against the image's
planted findings, and the planted findings no sentence states are listed
under the report. SAE-Rad's sentences carry their source features as
superscripts. The radiograph is inlined (:mod:`saerad.thumbnails`), so the
HTML stands alone in the executed notebook and the built book.
"""

from __future__ import annotations

import html
import os
from typing import Mapping, Sequence

import pandas as pd

from saerad.reports.generate import synthcxr_sentence_marks
from saerad.thumbnails import thumbnail_img_tag

#: Background of a sentence that agrees with the image, states something it does not have, or names no finding.
MARK_COLOURS = {"shared": "#d8f0d8", "extra": "#f6d5d5", "none": "transparent"}


def marked_sentences(sentences: Sequence[Mapping], planted: Sequence[str] | None, with_sources: bool) -> str:
    """HTML of one report's ``{"text", "feature_ids"}`` sentences, coloured against ``planted`` (None: uncoloured)."""
    if planted is None:
        marks, missed = [(sentence["text"], "none") for sentence in sentences], []
    else:
        marks, missed = synthcxr_sentence_marks(sentences, planted)
    parts = []
    for sentence, (text, mark) in zip(sentences, marks):
        sources = f' <sup>{", ".join(str(f) for f in sentence["feature_ids"])}</sup>' if with_sources else ""
        parts.append(f'<span style="background:{MARK_COLOURS[mark]}">{html.escape(text)}</span>{sources}')
    missing = f'<br><i>missed: {", ".join(m.replace("_", " ") for m in missed)}</i>' if missed else ""
    return " ".join(parts) + missing


def side_by_side_table(generated: pd.DataFrame, study_ids: Sequence[int], image_paths: Mapping[int, str | os.PathLike],
                       truth: pd.DataFrame | None = None, thumbnail_size: int = 160) -> str:
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
    truth
        :func:`saerad.reports.generate.study_truth` (0/1 per finding, indexed
        by study) to colour sentences and list missed findings; None leaves
        them unmarked (MIMIC-CXR).
    """
    rows = []
    for study_id in study_ids:
        lines = generated[generated["study_id"] == study_id]
        by_system = {system: group.iloc[0] for system, group in lines.groupby("system", sort=False)}
        missing = [system for system in ("sae_rad", "nearest_neighbour") if system not in by_system]
        if missing:
            raise ValueError(f"generated reports: study {study_id} has no line from {missing}")
        planted = None if truth is None else [name for name, value in truth.loc[study_id].items() if value]
        planted_text = ", ".join(p.replace("_", " ") for p in planted) if planted else "none"
        rows.append(
            f"<tr><td>{thumbnail_img_tag(image_paths[study_id], thumbnail_size)}<br>study {study_id}"
            + ("" if truth is None else f"<br><small>planted: {html.escape(planted_text)}</small>") + "</td>"
            f"<td>{html.escape(by_system['sae_rad']['reference'])}</td>"
            f"<td>{marked_sentences(by_system['sae_rad']['sentences'], planted, True)}</td>"
            f"<td>{marked_sentences(by_system['nearest_neighbour']['sentences'], planted, False)}</td></tr>")
    return ('<table style="font-size:0.8em; vertical-align:top"><tr><th>image</th><th>reference</th>'
            "<th>SAE-Rad (source features)</th><th>nearest neighbour</th></tr>" + "".join(rows) + "</table>")
