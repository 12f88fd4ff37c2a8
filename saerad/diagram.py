"""The pipeline at a glance: an SVG drawn from :data:`saerad.pipeline.STAGES`.

The book's front page shows this figure. It is generated, not drawn by hand,
so that a stage added to the pipeline cannot be missing from it: every stage
needs an entry in :data:`STAGE_SUMMARY`, and a test compares the committed
``book/images/pipeline.svg`` with a fresh drawing.

    python -m saerad.diagram book/images/pipeline.svg
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from html import escape
from pathlib import Path

from saerad.io import write_text
from saerad.pipeline import STAGES, Stage


@dataclass(frozen=True)
class StageSummary:
    """What a stage brings in from outside (demo | paper) and the artifacts it writes."""

    outside: str
    writes: tuple[str, ...]


#: One entry per pipeline stage. ``outside`` names what the demo and the paper profile plug in.
STAGE_SUMMARY: dict[str, StageSummary] = {
    "data": StageSummary("SynthCXR generator | MIMIC-CXR-JPG 2.0.0",
                         ("images.csv", "studies.csv", "priors.csv", "ground_truth.csv", "drop_table.csv")),
    "encode": StageSummary("demo ResNet | Rad-DINO (ViT-B/14)",
                           ("class_tokens.npy", "scale.json", "probe_auroc.csv")),
    "sae": StageSummary("SAE-Rad trainer (same code in both profiles)",
                        ("sae_rad_main/ (SAELens format)", "table3.csv", "table5.csv", "ablation.csv")),
    "features": StageSummary("offline describer | Claude",
                             ("activations.npz", "descriptions.jsonl", "explanation_scores.csv",
                              "finding_alignment.csv")),
    "reports": StageSummary("offline composer | Claude",
                            ("generated.jsonl", "tau_study.csv", "cost_per_report.csv")),
    "metrics": StageSummary("rule labeler, offline judge | CheXbert, RadGraph, Llama-3-70B",
                            ("table1.csv", "table2.csv", "appendix_g_sentences.csv")),
    "counterfactuals": StageSummary("class-token-conditioned DDPM (diffusers)",
                                    ("decoder checkpoint", "axioms.csv")),
    "reader_study": StageSummary("simulated readers | radiologists' exports",
                                 ("review_page/review.html", "summary.csv")),
    "real_reports": StageSummary("Open-i reports (torchxrayvision) | the same",
                                 ("real_reports_labeler.csv", "describer_naming.csv")),
    "scorecard": StageSummary("the paper's claims against every stage's artifacts", ("scorecard.csv",)),
}

_WIDTH = 1020
_ROW = 74
_BOX_X, _BOX_W, _BOX_H = 20, 360, 54
_ART_X = 400
_FONT = "font-family:DejaVu Sans,Helvetica,Arial,sans-serif"


def _chapter_number(stage: Stage) -> str:
    return stage.notebook.split("_", 1)[0]


def pipeline_svg(stages: tuple[Stage, ...] = STAGES) -> str:
    """The diagram as SVG text: one box per stage in run order, what it writes beside it.

    Raises
    ------
    KeyError
        When a stage has no entry in :data:`STAGE_SUMMARY` (add one).
    """
    missing = [stage.name for stage in stages if stage.name not in STAGE_SUMMARY]
    if missing:
        raise KeyError(f"saerad.diagram.STAGE_SUMMARY has no entry for stage(s) {missing}: add what they write")
    height = 40 + _ROW * len(stages)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" role="img" aria-label="The SAE-Rad pipeline: stages and artifacts">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
        f'<text x="{_BOX_X}" y="22" style="{_FONT};font-size:13px;fill:#555">stage (chapter) and what plugs in: '
        f'demo | paper</text>',
        f'<text x="{_ART_X}" y="22" style="{_FONT};font-size:13px;fill:#555">writes, under artifacts/&lt;profile&gt;/'
        f'&lt;stage&gt;/</text>',
    ]
    for position, stage in enumerate(stages):
        summary = STAGE_SUMMARY[stage.name]
        top = 34 + position * _ROW
        parts.append(f'<rect x="{_BOX_X}" y="{top}" width="{_BOX_W}" height="{_BOX_H}" rx="8" '
                     'fill="#eef3fa" stroke="#4a6fa5" stroke-width="1.5"/>')
        parts.append(f'<text x="{_BOX_X + 12}" y="{top + 22}" style="{_FONT};font-size:14px;font-weight:bold;'
                     f'fill:#1d3557">{escape(_chapter_number(stage))} · {escape(stage.name)}</text>')
        parts.append(f'<text x="{_BOX_X + 12}" y="{top + 42}" style="{_FONT};font-size:11px;fill:#333">'
                     f'{escape(summary.outside)}</text>')
        parts.append(f'<line x1="{_BOX_X + _BOX_W}" y1="{top + _BOX_H / 2}" x2="{_ART_X - 8}" '
                     f'y2="{top + _BOX_H / 2}" stroke="#bbb" stroke-dasharray="3,3"/>')
        parts.append(f'<text x="{_ART_X}" y="{top + _BOX_H / 2 + 4}" style="{_FONT};font-size:12px;'
                     f'fill:#333">{escape(", ".join(summary.writes))}</text>')
        if position:
            parts.append(f'<line x1="{_BOX_X + 40}" y1="{top - _ROW + _BOX_H}" x2="{_BOX_X + 40}" y2="{top - 1}" '
                         'stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="where to write the SVG, e.g. book/images/pipeline.svg")
    arguments = parser.parse_args(argv)
    write_text(arguments.output, pipeline_svg())
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
