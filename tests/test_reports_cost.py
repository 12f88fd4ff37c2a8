"""FLOP counting and the offline cost table of saerad.reports.cost, on tiny models written to tmp_path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from saerad.reports import cost
from saerad.reports.cost import count_flops, encoder_flops_per_image, offline_report_cost, paper_scale_flops, sae_flops_per_token
from saerad.sae import build_sae, make_config


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    from transformers import BitImageProcessor, ResNetConfig, ResNetModel

    folder = tmp_path_factory.mktemp("tiny-resnet")
    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ResNetModel(config).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_count_flops_of_a_matrix_product():
    a, b = torch.ones(3, 5), torch.ones(5, 7)
    assert count_flops(torch.matmul, a, b) == 2 * 3 * 5 * 7


def test_sae_flops_are_one_encoder_product_per_token():
    sae = build_sae(make_config("sae_rad", d_in=8, expansion_factor=4))
    assert sae_flops_per_token(sae) == 2 * 8 * 32


def test_encoder_flops_scale_with_the_pixels_and_the_cost_table(tiny_encoder_dir, tmp_path):
    from saerad.encode.encoder import ClassTokenEncoder

    encoder = ClassTokenEncoder(tiny_encoder_dir)
    small = encoder_flops_per_image(encoder)
    encoder.processor.crop_size = {"height": 64, "width": 64}
    assert encoder_flops_per_image(encoder) == pytest.approx(4 * small, rel=0.02)  # convolutions: ∝ pixels
    encoder.processor.crop_size = {"height": 32, "width": 32}

    sae = build_sae(make_config("sae_rad", d_in=encoder.dim, expansion_factor=2))
    paths = []
    for k in range(2):
        path = tmp_path / f"image{k}.png"
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (40, 40), dtype=np.uint8)).save(path)
        paths.append(path)
    descriptions = {f: {"feature": f, "status": "ok", "description": "x", "statements": [
        {"text": f"Statement {f}.", "findings": [["edema", True]]}]} for f in range(sae.config.d_sae)}
    table = offline_report_cost(encoder, sae, paths, 1.0, descriptions, tau=0.0, include_paper_scale=False)
    total = table[table.component.str.startswith("total")].iloc[0]
    assert total.flops_per_report == small + 2 * encoder.dim * sae.config.d_sae
    assert total.paper_tflops_per_report == 0.1 and total.seconds_per_report > 0
    assert (table.seconds_per_report > 0).all()


def test_paper_scale_flops_on_the_meta_device():
    flops = paper_scale_flops()
    assert flops["sae"] == 2 * 768 * 49_152
    # ViT-B/14 at 518 x 518 (1,369 patches + CLS): about 0.3 TFLOP per image.
    assert 0.25e12 < flops["encoder"] < 0.35e12


@pytest.mark.parametrize("preset, products", [("sae_rad", 8), ("gated", 8), ("conerly", 5)])
def test_training_step_flops_count_every_matrix_product_of_eq9(preset, products):
    # SAE-Rad: forward encoder, decoder, auxiliary decoder (3); backward the encoder weight's gradient (the
    # tokens need none) and both operands of each decoder product (5). Gated: its auxiliary term goes through
    # a frozen decoder copy (one product fewer), but centring makes the encoder's input depend on b_dec, whose
    # gradient then needs the encoder product's input gradient (one more). Conerly: no auxiliary term (5).
    config = make_config(preset, d_in=16, expansion_factor=4)
    batch = 8
    assert cost.sae_training_flops_per_step(config, batch) == products * 2 * batch * 16 * 64


def test_table4_rows_and_the_papers_column_is_its_own():
    sae = build_sae(make_config("sae_rad", d_in=16, expansion_factor=4))
    report_cost = pd.DataFrame([
        {"scale": "demo", "component": "total (end to end)", "tflops_per_report": 2e-4, "seconds_per_report": 0.006},
        {"scale": "paper", "component": "total", "tflops_per_report": 0.3, "seconds_per_report": None}])
    table = cost.compute_table(sae, 100, 10, 8, 1.5, report_cost).set_index("quantity")
    assert table.loc["active training parameters", "demo_measured"] == sum(p.numel() for p in sae.parameters())
    # The paper's x64 shape has 75.6M parameters; the paper rounds to 76M.
    assert table.loc["active training parameters", "paper_shape_counted"] == pytest.approx(76e6, rel=0.01)
    assert table.loc["training TFLOP", "demo_measured"] == pytest.approx(8 * 2 * 8 * 16 * 64 * 10 / 1e12)
    assert table.loc["training TFLOP", "paper_estimate"] == 60_000
    assert table.loc["inference TFLOP per report", "paper_shape_counted"] == 0.3
    assert table.loc["training seconds", "demo_measured"] == 1.5
