"""saerad.paper_estimates: its formulas against the code they describe, and the book page against it."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch

from saerad import paper_estimates as pe
from saerad.sae import build_sae, make_config

PAGE = Path(__file__).resolve().parents[1] / "book" / "paper_scale.md"
SHAPES = [(8, 4, 16), (16, 8, 32)]  # d_in, expansion factor, batch


def dense_sae(d_in: int, expansion_factor: int):
    sae = build_sae(make_config("sae_rad", d_in=d_in, expansion_factor=expansion_factor))
    sae.gather_below = 0.0  # the dense path: every feature live, the upper bound the estimate counts
    return sae


@pytest.mark.parametrize("d_in,expansion_factor,batch", SHAPES)
def test_parameter_count_matches_the_model(d_in, expansion_factor, batch):
    sae = dense_sae(d_in, expansion_factor)
    assert sum(p.numel() for p in sae.parameters()) == pe.sae_parameter_count(d_in, d_in * expansion_factor)


@pytest.mark.parametrize("d_in,expansion_factor,batch", SHAPES)
def test_saved_activations_are_the_counted_feature_tensors(d_in, expansion_factor, batch):
    sae = dense_sae(d_in, expansion_factor)
    feature_tensor = batch * d_in * expansion_factor * 4
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        sae.forward_with_losses(torch.randn(batch, d_in), 8e-3)
    assert sum(size == feature_tensor for size in saved.values()) == pe.SAVED_FEATURE_TENSORS
    memory = pe.sae_training_memory(d_in, d_in * expansion_factor, batch)
    assert memory["saved_activations"] == pe.SAVED_FEATURE_TENSORS * feature_tensor
    assert memory["weights_grads_adam"] == 16 * pe.sae_parameter_count(d_in, d_in * expansion_factor)


def test_paper_shape_figures():
    assert pe.sae_parameter_count(768, 49_152) == 75_645_696  # what benchmarks/paper_shapes.py built
    from transformers import Dinov2Config, Dinov2Model

    from saerad.reports.cost import RAD_DINO_SHAPE

    with torch.device("meta"):
        encoder = Dinov2Model(Dinov2Config(**RAD_DINO_SHAPE))
    assert sum(p.numel() for p in encoder.parameters()) == pe.PAPER["encoder_parameters"]
    assert len(pe.REFERENCE_REPORT.split()) == 60


def test_llm_prompts_are_the_pipelines_and_costs_add_up():
    prompts = pe.llm_prompts()
    annotation = prompts["feature annotation"][0][0]
    assert annotation.user.count("Report number") == pe.PAPER["top_k"]
    assert len(prompts["report composition"][0]) == pe.PAPER["report_configs"]
    rows = {row[0]: row for row in pe.cost_rows()}
    total = rows["RadFact, one system, total"]
    assert int(total[1].replace(",", "")) == sum(
        int(rows[task][1].replace(",", "")) for task in ("RadFact phrase split", "RadFact entailment"))
    assert rows["feature annotation"][1] == "49,152"


def test_formatting():
    assert [pe.duration(s) for s in (0.0031, 45, 4_345, 12_370, 540_742, 6.16e6)] == [
        "0.0031 s", "45 s", "72 min", "3.4 h", "150 h", "71 days"]
    assert pe.usd(491.3) == "$491" and pe.usd(8.25) == "$8.25" and pe.usd(None) == "n/a"


def test_the_page_shows_the_tables_this_module_computes():
    lines = PAGE.read_text(encoding="utf-8").splitlines()
    for name, table in pe.markdown_tables().items():
        expected = table.splitlines()
        assert expected[0] in lines, f"book/paper_scale.md has no {name} table (header {expected[0]!r})"
        start = lines.index(expected[0])
        shown = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
        assert shown == expected, (f"book/paper_scale.md: the {name} table differs from saerad.paper_estimates; "
                                   "regenerate it with `python -m saerad.paper_estimates`")


def test_the_pages_pipeline_settings_exist():
    from saerad.params import load_profile, notebook_parameters, parse_overrides, resolve_parameters
    from saerad.pipeline import REPO_ROOT, STAGES

    commands = re.findall(r"python -m saerad\.pipeline(?:[^\n]*\\\n)*[^\n]*", PAGE.read_text(encoding="utf-8"))
    assert len(commands) >= 3
    schemas = {stage.name: notebook_parameters(REPO_ROOT / "notebooks" / stage.notebook) for stage in STAGES}
    profile = load_profile(REPO_ROOT / "params" / "paper.yaml")
    for command in commands:
        overrides = parse_overrides(re.findall(r"--set\s+(\S+)", command))
        resolved = resolve_parameters("paper", profile, schemas, overrides, "artifacts/paper")  # raises if unknown
        if "features.describer_backend=openai" in command:  # the all-local run: nothing needs acknowledging
            assert all(resolved[stage]["llm_base_url"].startswith("http://127.0.0.1")
                       for stage in ("features", "reports", "metrics"))
