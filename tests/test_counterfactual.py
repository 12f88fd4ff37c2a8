"""The diffusion decoder, its training, SAE interventions and the counterfactual measures (tiny sizes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import saerad.counterfactual.train as train_module
from conftest import SimulatedCrash, crash_after_checkpoints
from saerad.checkpoints import write_checkpoint
from saerad.counterfactual import axioms
from saerad.counterfactual.decoder import (
    ConditionalDDPM, DecoderConfig, noise_prediction_loss, noise_schedule, sample_images, starting_noise,
)
from saerad.counterfactual.experiment import beta_for, chosen_features, pick_rows
from saerad.counterfactual.interventions import (
    add_then_remove, code_value, counterfactual_tokens, decode_conditions, do,
)
from saerad.counterfactual.train import DecoderTrainConfig, load_decoder, train_decoder
from saerad.sae import make_config
from saerad.sae.models import build_sae
from saerad.checkpoints import CheckpointMismatch, TrainingDiverged


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


TINY = DecoderConfig(token_dim=6, image_size=8, channels=(4, 8, 8), norm_groups=4, condition_dim=16, seed=3)
SHORT = DecoderTrainConfig(epochs=3, batch_size=4, lr=1e-3, lr_warmup_steps=2, checkpoint_every=4, log_every=3, seed=5)


def _data(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.normal(size=(n, TINY.token_dim)).astype(np.float32)
    pixels = rng.uniform(size=(n, TINY.image_size, TINY.image_size)).astype(np.float32)
    return tokens, pixels


# -- the decoder ---------------------------------------------------------------------------------------------------


def test_condition_is_projected_to_1024_values_and_broadcast_to_the_image_grid():
    config = DecoderConfig(token_dim=5, image_size=64, channels=(8, 8, 8), norm_groups=4)
    model = ConditionalDDPM(config)
    assert model.project.out_features == 1024
    tokens = torch.randn(2, 5)
    grid = model.condition_map(tokens)
    assert grid.shape == (2, 1, 64, 64)
    projected = model.project(tokens).view(2, 32, 32)
    # each of the 32 x 32 projected values covers one 2 x 2 block of the 64 x 64 image
    assert torch.equal(grid[:, 0, ::2, ::2], projected) and torch.equal(grid[:, 0, 1::2, 1::2], projected)
    noisy = torch.randn(2, 1, 64, 64)
    assert model(noisy, torch.tensor([0, 999]), tokens).shape == (2, 1, 64, 64)
    # at 32 x 32 the grid is the image
    small = ConditionalDDPM(DecoderConfig(token_dim=5, image_size=32, channels=(8, 8, 8), norm_groups=4))
    assert torch.equal(small.condition_map(tokens)[:, 0], small.project(tokens).view(2, 32, 32))


def test_unet_has_three_levels_of_two_residual_units_with_attention_below_the_top():
    unet = ConditionalDDPM(TINY).unet
    assert [type(block).__name__ for block in unet.down_blocks] == ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]
    assert [type(block).__name__ for block in unet.up_blocks] == ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
    assert all(len(block.resnets) == 2 for block in unet.down_blocks)
    assert unet.mid_block is None
    assert unet.conv_in.in_channels == 2 and unet.conv_out.out_channels == 1


def test_bad_decoder_config_names_the_field():
    with pytest.raises(ValueError, match="condition_dim must be a perfect square"):
        DecoderConfig(token_dim=4, condition_dim=1000)
    with pytest.raises(ValueError, match="norm_groups=8 must divide"):
        DecoderConfig(token_dim=4, channels=(12, 16, 16))
    with pytest.raises(ValueError, match="tokens must have shape \\[n, 6\\]"):
        ConditionalDDPM(TINY).condition_map(torch.zeros(2, 7))


def test_noise_prediction_loss_is_eq_12():
    model = ConditionalDDPM(TINY)
    schedule = noise_schedule(TINY)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 8, 8, generator=generator) * 2 - 1
    tokens = torch.randn(3, 6, generator=generator)
    timesteps = torch.tensor([0, 500, 999])
    noise = torch.randn(3, 1, 8, 8, generator=generator)
    # Ho et al.: betas linear from 1e-4 to 0.02 over 1000 steps, alpha_bar_t the running product of 1 - beta.
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, dim=0).float()[timesteps].view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    expected = ((model(noisy, timesteps, tokens) - noise) ** 2).mean()
    assert noise_prediction_loss(model, schedule, x0, tokens, timesteps, noise).item() == pytest.approx(expected.item(), rel=1e-5)


def test_shared_noise_makes_identical_conditions_give_identical_images():
    model = ConditionalDDPM(TINY).eval()
    tokens = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    other = tokens.clone()
    other[2] += 3.0
    noise = starting_noise(5, 8, seed=7)
    images = decode_conditions(model, {"a": tokens, "b": tokens.clone(), "c": other}, noise, steps=3, batch_size=2)
    assert np.array_equal(images["a"], images["b"])
    assert images["a"].shape == (5, 8, 8) and images["a"].min() >= 0 and images["a"].max() <= 1
    # only row 2's token differs, so only row 2's image does
    changed = np.abs(images["a"] - images["c"]).reshape(5, -1).max(axis=1) > 0
    assert changed.tolist() == [False, False, True, False, False]
    # another noise gives another image; the same seed the same one
    assert not np.array_equal(images["a"], sample_images(model, tokens, starting_noise(5, 8, seed=8), steps=3))
    assert np.array_equal(images["a"], sample_images(model, tokens, starting_noise(5, 8, seed=7), steps=3, batch_size=2))


# -- training --------------------------------------------------------------------------------------------------------


def test_resume_after_crash_is_bit_identical(tmp_path, monkeypatch):
    tokens, pixels = _data()
    reference = train_decoder(tokens, pixels, TINY, SHORT, tmp_path / "uninterrupted", progress=False)
    assert reference.steps == 9  # 3 epochs of 12 // 4 batches

    written = crash_after_checkpoints(monkeypatch, train_module, 1)
    with pytest.raises(SimulatedCrash):
        train_decoder(tokens, pixels, TINY, SHORT, tmp_path / "resumed", progress=False)
    assert written == [4]
    monkeypatch.setattr(train_module, "_write_checkpoint", write_checkpoint)
    resumed = train_decoder(tokens, pixels, TINY, SHORT, tmp_path / "resumed", progress=False)

    reference_state, resumed_state = reference.model.state_dict(), resumed.model.state_dict()
    assert reference_state.keys() == resumed_state.keys()
    for key in reference_state:
        assert torch.equal(reference_state[key], resumed_state[key]), key
    pd.testing.assert_frame_equal(reference.history, resumed.history)
    loaded = load_decoder(tmp_path / "resumed")
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, reference_state[key]), key


def test_validation_loss_is_recorded_and_another_runs_checkpoint_is_rejected(tmp_path):
    tokens, pixels = _data()
    result = train_decoder(tokens, pixels, TINY, SHORT, tmp_path, validation=_data(4, seed=1), progress=False)
    assert result.history["validation_loss"].notna().sum() == 3  # checkpoints after steps 4, 8 and the last
    other = DecoderTrainConfig(**{**SHORT.to_dict(), "lr": 5e-4})
    with pytest.raises(CheckpointMismatch, match=r"train_config\.lr: checkpoint 0\.001 vs requested 0\.0005"):
        train_decoder(tokens, pixels, TINY, other, tmp_path, progress=False)
    with pytest.raises(CheckpointMismatch, match="data"):
        train_decoder(*_data(seed=2), TINY, SHORT, tmp_path, progress=False)


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real_loss = train_module.noise_prediction_loss
    calls = []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 7 else loss  # step 6

    monkeypatch.setattr(train_module, "noise_prediction_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="step 6: loss is nan") as caught:
        train_decoder(*_data(), TINY, SHORT, tmp_path, progress=False)
    assert caught.value.step == 6 and "last good checkpoint stays at" in str(caught.value)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert not (tmp_path / "decoder.safetensors").exists()


def test_bad_training_input_names_the_field():
    tokens, pixels = _data()
    with pytest.raises(ValueError, match=r"training pixels must have shape \[12, 8, 8\]"):
        train_decoder(tokens, pixels[:, :4, :4], TINY, SHORT, "unused", progress=False)
    with pytest.raises(ValueError, match=r"pixels must be grey values in \[0, 1\]"):
        train_decoder(tokens, pixels * 255, TINY, SHORT, "unused", progress=False)
    with pytest.raises(ValueError, match="DecoderTrainConfig.batch_size must be positive"):
        DecoderTrainConfig(epochs=1, batch_size=0)


# -- interventions --------------------------------------------------------------------------------------------------


def _gated_sae():
    sae = build_sae(make_config("sae_rad", d_in=6, expansion_factor=4, seed=0))
    with torch.no_grad():  # a trained-looking SAE: open gates, free decoder norms
        sae.b_gate.fill_(0.3)
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 24).unsqueeze(1))
    return sae


def test_null_intervention_returns_the_token_exactly():
    sae = _gated_sae()
    z = torch.randn(8, 6, generator=torch.Generator().manual_seed(0)) * 3
    h = sae.encode(z)
    feature = int(h.abs().sum(dim=0).argmax())
    assert torch.equal(counterfactual_tokens(sae, z, feature, h[:, feature]), z)
    # any other value changes the token along the feature's decoder row, and only there
    changed = counterfactual_tokens(sae, z, feature, h[:, feature] + 2.0)
    assert torch.allclose(changed - z, 2.0 * sae.W_dec[feature].detach().expand(8, 6), atol=1e-5)
    # Eq. 14 plus delta, written as in the appendix
    appendix = sae.decode(do(h, feature, 1.5)) - (sae.decode(h) - z)
    assert torch.allclose(counterfactual_tokens(sae, z, feature, 1.5), appendix, atol=1e-5)


def test_do_sets_one_code_and_copies():
    h = torch.arange(12.0).view(3, 4)
    out = do(h, 2, 9.0)
    assert out[:, 2].tolist() == [9.0, 9.0, 9.0] and torch.equal(out[:, [0, 1, 3]], h[:, [0, 1, 3]])
    assert h[0, 2] == 2.0  # not in place
    assert do(h, 1, torch.tensor([1.0, 2.0, 3.0]))[:, 1].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="feature index"):
        do(h, 4, 1.0)


def test_add_then_remove_returns_the_token_when_the_sae_reads_back_what_was_written():
    # An SAE with orthonormal decoder rows and encoder = decoder transposed reads codes back exactly.
    sae = build_sae(make_config("conerly", d_in=6, expansion_factor=1, seed=0))
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        sae.W_dec.copy_(basis.T)
        sae.W_enc.copy_(basis)
    z = torch.rand(5, 6, generator=torch.Generator().manual_seed(2)) @ basis.T  # positive codes
    cycle = add_then_remove(sae, z, feature=3, beta=4.0)
    assert torch.allclose(cycle.readback, torch.full((5,), 4.0), atol=1e-5)
    assert torch.allclose(cycle.returned, z, atol=1e-5)
    assert not torch.allclose(cycle.added, z, atol=1e-2)


def test_cycle_residual_is_what_the_sae_fails_to_read_back():
    sae = _gated_sae()
    z = torch.randn(6, 6, generator=torch.Generator().manual_seed(3)) * 3
    cycle = add_then_remove(sae, z, feature=5, beta=7.0)
    expected = (7.0 - cycle.readback).unsqueeze(1) * sae.W_dec[5].detach()
    assert torch.allclose(cycle.returned - z, expected, atol=1e-4)


def test_code_value_converts_the_reported_activation():
    sae = _gated_sae()
    norm = float(sae.W_dec[10].detach().norm())
    assert code_value(sae, 10, 3.0 * norm) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="feature must be an index"):
        code_value(sae, 24, 1.0)
    with pytest.raises(ValueError, match=r"tokens must have shape \[n, 6\]"):
        counterfactual_tokens(sae, torch.zeros(2, 5), 0, 1.0)


# -- measures -----------------------------------------------------------------------------------------------------


def test_iou_on_hand_made_masks():
    truth = np.zeros((4, 4, 4), dtype=bool)
    predicted = np.zeros_like(truth)
    truth[0, :2, :2] = True; predicted[0, :2, :2] = True            # identical: 1
    truth[1, :2, :2] = True; predicted[1, :2, :] = True             # 4 of 8: 0.5
    truth[2, 0, 0] = True                                           # nothing predicted: 0
    predicted[3, 1, 1] = True                                       # no true mask: undefined
    iou = axioms.intersection_over_union(predicted, truth)
    assert iou[:3].tolist() == [1.0, 0.5, 0.0] and np.isnan(iou[3])
    assert axioms.segment(np.array([[0.05, 0.2]]), 0.1).tolist() == [[False, True]]
    with pytest.raises(ValueError, match="masks differ in shape"):
        axioms.intersection_over_union(predicted, truth[:, :2])


def test_rows_report_counts():
    row = axioms.rate_row(7, "pacemaker", "m", np.array([True, False, True]), "")
    assert (row["n"], row["N"], row["value"]) == (2, 3, pytest.approx(2 / 3))
    row = axioms.mean_row(7, "pacemaker", "m", np.array([0.5, np.nan, 1.0]), "")
    assert (row["n"], row["N"], row["value"]) == (2, 3, 0.75)
    assert list(axioms.axioms_table([row]).columns) == list(axioms.AXIOM_COLUMNS)
    tiny = axioms.paired_change_row(179, "cardiomegaly", "add", np.zeros(32, bool), np.ones(32, bool), expected=True)
    assert axioms.axioms_table([tiny])["value"].iloc[0] == pytest.approx(0.5 ** 32, rel=1e-5)  # not rounded to 0
    assert axioms.image_distance(np.zeros((2, 3, 3)), np.full((2, 3, 3), 0.25)).tolist() == [0.25, 0.25]


def test_paired_change_tells_an_effective_intervention_from_one_that_does_nothing():
    before = np.zeros(32, dtype=bool)
    added = before.copy(); added[:12] = True  # 12 images newly detected, none lost
    row = axioms.paired_change_row(514, "pacemaker", "add", before, added, expected=True)
    assert (row["n"], row["N"]) == (12, 12)
    assert row["value"] == pytest.approx(0.5 ** 12)
    assert row["note"].startswith("changed what the judge sees")
    # as many decisions flip the wrong way as the right way: no evidence of an effect
    mixed = before.copy(); mixed[:3] = True
    start = np.zeros(32, dtype=bool); start[3:6] = True
    row = axioms.paired_change_row(514, "pacemaker", "add", start, mixed, expected=True)
    assert (row["n"], row["N"]) == (3, 6) and row["value"] > 0.5
    assert row["note"].startswith("did nothing the judge could tell from chance")
    # nothing changed at all
    row = axioms.paired_change_row(514, "pacemaker", "remove", start, start, expected=False)
    assert (row["n"], row["N"], row["value"]) == (0, 0, 1.0)
    assert "did nothing" in row["note"]
    # removal counts images that stop being detected
    row = axioms.paired_change_row(179, "cardiomegaly", "remove", np.ones(8, bool), np.zeros(8, bool), expected=False)
    assert (row["n"], row["N"]) == (8, 8) and row["note"].startswith("changed")
    with pytest.raises(ValueError, match="same images"):
        axioms.paired_change_row(1, "x", "m", np.zeros(3, bool), np.zeros(4, bool), expected=True)


def test_classifier_detects_a_bright_patch():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 0.5, size=(60, 8, 8)).astype(np.float32)
    labels = np.arange(60) % 2
    pixels[labels == 1, 2:4, 2:4] += 0.5
    classifier = axioms.FindingClassifier.fit("patch", pixels[:40], labels[:40])
    assert classifier.auroc(pixels[40:], labels[40:]) > 0.95
    assert classifier.detects(pixels[40:]).tolist() == (labels[40:] == 1).tolist()
    with pytest.raises(ValueError, match="need both classes"):
        axioms.FindingClassifier.fit("patch", pixels[:5], np.zeros(5))


def test_features_come_from_the_alignment_table(tmp_path):
    path = tmp_path / "finding_alignment.csv"
    pd.DataFrame({"finding": ["cardiomegaly", "pacemaker"], "best_feature": [17, 4], "auroc": [0.9, 1.0]}).to_csv(path, index=False)
    chosen = chosen_features(path, ["pacemaker", "cardiomegaly"])
    assert chosen.to_dict("list") == {"finding": ["pacemaker", "cardiomegaly"], "feature": [4, 17], "auroc": [1.0, 0.9]}
    with pytest.raises(ValueError, match=r"findings \['edema'\] are not in"):
        chosen_features(path, ["edema"])
    with pytest.raises(FileNotFoundError, match="run the features stage first"):
        chosen_features(tmp_path / "absent.csv", ["pacemaker"])


def test_beta_on_the_code_scale_and_image_picks():
    sae = _gated_sae()
    stats = pd.DataFrame({"feature": np.arange(24), "q99": np.full(24, 6.0)})
    beta, how = beta_for(sae, stats, 10, None, "q99")
    assert beta == pytest.approx(6.0 / float(sae.W_dec[10].detach().norm())) and "q99" in how
    assert beta_for(sae, stats, 10, 15.0, "q99")[0] == 15.0
    with pytest.raises(ValueError, match="beta_quantile='q42'"):
        beta_for(sae, stats, 10, None, "q42")
    labels = np.array([0, 1, 0, 0, 1, 0, 1, 0])
    without, with_ = pick_rows(labels, 2, seed=0)
    assert len(without) == 2 and len(with_) == 2 and not labels[without].any() and labels[with_].all()
    assert [r.tolist() for r in pick_rows(labels, 2, seed=0)] == [without.tolist(), with_.tolist()]
    assert len(pick_rows(labels, 10, seed=0)[1]) == 3


def test_without_planted_truth_features_are_found_by_the_chapters_search(tmp_path):
    from scipy import sparse

    from saerad.counterfactual.experiment import features_by_search

    root = tmp_path / "artifacts"
    (root / "features").mkdir(parents=True)
    (root / "data").mkdir()
    # Feature 3 fires on the pacemaker studies, feature 8 on the cardiomegaly ones, feature 9 on all.
    reports = ["Left-sided pacemaker.", "Left-sided pacemaker.", "Severe cardiomegaly.", "Severe cardiomegaly."]
    pd.DataFrame({"study_id": [1, 2, 3, 4], "split": "train", "findings": reports}).to_csv(
        root / "data" / "studies.csv", index=False)
    pd.DataFrame({"row": range(4), "token_row": range(4), "dicom_id": list("abcd"), "subject_id": [1, 2, 3, 4],
                  "study_id": [1, 2, 3, 4], "split": "train"}).to_csv(root / "features" / "activations_index.csv",
                                                                       index=False)
    dense = np.zeros((4, 10))
    dense[[0, 1], 3], dense[[2, 3], 8], dense[:, 9] = 2.0, 1.5, 0.5
    sparse.save_npz(root / "features" / "activations.npz", sparse.csr_matrix(dense))
    pd.DataFrame({"feature": [3, 8, 9], "status": ["ok", "ok", "flagged"],
                  "description": ["a pacemaker", "cardiomegaly", ""]}).to_csv(root / "features" / "feature_index.csv",
                                                                            index=False)
    chosen = features_by_search(root, ["pacemaker", "cardiomegaly"])
    assert chosen["feature"].tolist() == [3, 8] and (chosen["score"] > 0).all()
    with pytest.raises(ValueError, match="no feature's training reports mention 'pneumothorax'"):
        features_by_search(root, ["pneumothorax"])
    with pytest.raises(FileNotFoundError, match="run the features stage first"):
        features_by_search(tmp_path / "nowhere", ["pacemaker"])


# -- a finding with no held-out image (pacemaker in a small world) -------------------------------------------------


@pytest.mark.parametrize("missing", ["with", "without"])
def test_a_finding_without_test_images_reads_n_a_with_the_reason(missing):
    from saerad.counterfactual import summary
    from saerad.counterfactual.experiment import measure_feature, noise_bank, run_feature
    from saerad.counterfactual.images import ImageSet

    NO_IMAGE_WITH, NO_IMAGE_WITHOUT = "no held-out image with the finding", "no held-out image without the finding"

    tokens, pixels = _data(8, seed=4)
    images = ImageSet(tokens, pixels, pd.DataFrame({"image_path": [f"image{k}.jpg" for k in range(8)]}))
    labels = np.zeros(8, bool) if missing == "with" else np.ones(8, bool)
    rows_without, rows_with = pick_rows(labels, 4, seed=0)
    run = run_feature(ConditionalDDPM(TINY).eval(), _gated_sae(), images, "pacemaker", 5, 3.0, rows_without,
                      rows_with, noise_bank(8, TINY.image_size, 0), steps=2)
    judges = {name: axioms.FindingClassifier.fit(name, pixels, np.arange(8) % 2) for name in ("pacemaker", "edema")}
    masks = np.zeros((len(rows_with), TINY.image_size, TINY.image_size), bool)
    table = axioms.axioms_table(measure_feature(run, judges, masks, threshold=0.1))

    reason = NO_IMAGE_WITH if missing == "with" else NO_IMAGE_WITHOUT
    absent = [axioms.DETECTED_AFTER_REMOVE, axioms.REMOVE_TEST, axioms.SEGMENTATION_IOU] if missing == "with" else \
        [axioms.DETECTED_AFTER_ADD, axioms.ADD_TEST, axioms.CYCLE_DISTANCE, axioms.EFFECT_SIZE]
    present = [axioms.DETECTED_AFTER_ADD, axioms.CYCLE_DISTANCE] if missing == "with" else \
        [axioms.DETECTED_AFTER_REMOVE, axioms.SEGMENTATION_IOU]
    by_measure = table.set_index("measure")
    for measure in absent:
        assert by_measure.loc[measure, "note"] == f"n/a: {reason}" and np.isnan(by_measure.loc[measure, "value"])
    for measure in present:
        assert not by_measure.loc[measure, "note"].startswith("n/a")
    assert by_measure.loc[axioms.NULL_DISTANCE, "N"] == 4  # pooled measures use the group there is

    paragraph = summary.feature_paragraph(table, "pacemaker", 5)
    if missing == "with":
        assert f"removing it: n/a ({NO_IMAGE_WITH})" in paragraph and "Adding it made the judge see" in paragraph
    else:
        assert paragraph.count(f"Adding it: n/a ({NO_IMAGE_WITHOUT})") == 2
        assert f"the add-then-remove cycle: n/a ({NO_IMAGE_WITHOUT})" in paragraph
    assert "0 of 0" not in paragraph and "nan" not in paragraph
