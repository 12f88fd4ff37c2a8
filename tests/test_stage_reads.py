"""Each stage's declared ``reads`` covers every stage folder its chapter opens.

A stage is re-run only when a stage it reads changed (saerad.pipeline), so a read missing from
``Stage.reads`` would leave a chapter "up to date" on artifacts that changed under it. This test reads
the notebooks' code for the ways a chapter reaches another stage: a path ``artifacts_root_path / "<stage>"``,
``stage_parameters(..., "<stage>")``, the loaders below, and the exercises whose solutions it glues.
"""

import json
import re

import pytest

from saerad.book.solutions import registry
from saerad.paths import REPO_ROOT
from saerad.pipeline import STAGES, needed_stages, stage_names

#: Loaders that open another stage's folder, and the stages they open.
LOADERS = {
    "load_class_tokens": {"encode"},
    "load_image_set": {"data", "encode"},
    "load_finding_masks": {"data"},
    "load_sae": {"sae"},
    "load_activations": {"features"},
    "read_generated": {"reports"},
    "build_scorecard": set(stage_names()) - {"scorecard"},
}


def _code(notebook: str) -> str:
    cells = json.loads((REPO_ROOT / "notebooks" / notebook).read_text())["cells"]
    return "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")


def _opened(stage_name: str, code: str) -> set[str]:
    names = "|".join(stage_names())
    opened = set(re.findall(rf'/ "({names})"', code))
    opened |= set(re.findall(rf'stage_parameters\([^)]*"({names})"', code))
    for loader, stages in LOADERS.items():
        if re.search(rf"\b{loader}\(", code):
            opened |= stages
    chapter = next(stage.notebook[:2] for stage in STAGES if stage.name == stage_name)
    for exercise in set(re.findall(rf'"({chapter}\.\d+)"', code)) & set(registry()):
        opened |= set(registry()[exercise].reads)
    return opened - {stage_name}


@pytest.mark.parametrize("stage", STAGES, ids=lambda stage: stage.name)
def test_a_chapter_opens_only_stages_it_declares_it_reads(stage):
    declared = needed_stages([stage])
    opened = _opened(stage.name, _code(stage.notebook))
    assert opened <= declared, (f"{stage.notebook} opens {sorted(opened - declared)} but stage {stage.name!r} "
                                f"does not read them: add them to its Stage(reads=...) in saerad/pipeline.py")


def test_the_check_sees_a_chapter_reaching_another_stage():
    assert _opened("reader_study", 'x = artifacts_root_path / "counterfactuals" / "a.csv"') == {"counterfactuals"}
    assert _opened("sae", "tokens, _ = load_class_tokens(root, 'train')") == {"encode"}
    assert "encode" in _opened("sae", 'glue_solution("02.1", root, profile)')
