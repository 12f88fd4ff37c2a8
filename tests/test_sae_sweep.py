"""The SAE sweep of Table 2 (saerad.reports.sae_sweep) on a tiny hand-made world: one line per test study and
SAE, sourced sentences, per-SAE resume, recomputation of a changed SAE only, errors, byte-identical output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import trained_like_sae

import saerad.features.activations as activations_module
from saerad.io import write_json, write_npy
from saerad.reports.generate import RECORD_KEYS
from saerad.reports.sae_sweep import available_saes, sweep_reports
from saerad.sae import load_sae, save_sae
from saerad.synthcxr import FINDINGS

D_IN = 8
SAES = {"x2": (2, 0), "x4": (4, 1), "x2_dense": (2, 2)}  # name -> (expansion factor, seed)
TAU_GRID = [0.1, 0.5, 1.0]


def make_world(root, n_train=36, n_validate=12, n_test=12, seed=0):
    """Studies that plant effusion (every 3rd) and cardiomegaly (every 4th), tokens that show them, three SAEs
    whose first two features read the two findings' directions, and the stage records the sweep reads."""
    rng = np.random.default_rng(seed)
    studies, truth, index, tokens = [], [], [], []
    n = n_train + n_validate + n_test
    for k in range(n):
        study, effusion, heart = 5000 + k, k % 3 == 0, k % 4 == 0
        split = "train" if k < n_train else "validate" if k < n_train + n_validate else "test"
        findings = ("Left pleural effusion." if effusion else "No pleural effusion.") + (
            " Moderate cardiomegaly." if heart else " Normal heart size.") + " The lungs are clear."
        studies.append({"study_id": study, "subject_id": k, "split": split, "findings": findings,
                        "indication": "Dyspnoea."})
        token = rng.normal(0, 0.3, D_IN) + 3.0 * np.r_[float(effusion), float(heart), np.zeros(D_IN - 2)]
        # The last test study's image could not be read: its line must say so.
        for image in range(2 if k == 1 else 1):  # one training study with two images
            dicom = f"d{k}-{image}"
            truth.append({"dicom_id": dicom, "study_id": study, **{f: 0 for f in FINDINGS},
                          "pleural_effusion": int(effusion), "cardiomegaly": int(heart)})
            index.append({"row": len(index), "dicom_id": dicom, "subject_id": k, "study_id": study, "split": split,
                          "encoded": k != n - 1})
            tokens.append(token + rng.normal(0, 0.05, D_IN) if k != n - 1 else np.full(D_IN, np.nan))
    (root / "data").mkdir(parents=True)
    pd.DataFrame(studies).to_csv(root / "data" / "studies.csv", index=False)
    pd.DataFrame(truth).to_csv(root / "data" / "ground_truth.csv", index=False)
    (root / "encode").mkdir()
    write_npy(root / "encode" / "class_tokens.npy", np.array(tokens, dtype=np.float32))
    pd.DataFrame(index).to_csv(root / "encode" / "tokens_index.csv", index=False)
    write_json(root / "encode" / "scale.json", {"scale": 1.0, "dim": D_IN})
    for name, (expansion, sae_seed) in SAES.items():
        sae = trained_like_sae("sae_rad", D_IN, expansion, seed=sae_seed, noise_seed=sae_seed, noise=0.05)
        with torch.no_grad():
            sae.b_gate.fill_(-0.8)
            for feature in (0, 1):  # feature 0 reads effusion, feature 1 cardiomegaly
                sae.W_enc[:, feature] = torch.nn.functional.one_hot(torch.tensor(feature), D_IN).float()
                sae.b_gate[feature] = -1.5
        save_sae(sae, root / "sae" / name)
    (root / "sae" / "not_an_sae").mkdir()  # a folder without cfg.json is not offered
    write_json(root / "features" / "stage.json", {"parameters": {"top_k": 4, "min_support": 2, "chunk_size": 16}})
    write_json(root / "reports" / "stage.json", {"parameters": {"tau_grid": TAU_GRID}})
    return pd.DataFrame(studies)


def snapshot(folder):
    return {path: path.stat().st_mtime_ns for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture
def encode_calls(monkeypatch):
    calls = []
    real = activations_module.iter_activation_chunks

    def counted(sae, *args, **kwargs):
        calls.append(sae.config.d_sae)
        return real(sae, *args, **kwargs)

    monkeypatch.setattr(activations_module, "iter_activation_chunks", counted)
    return calls


def test_sweep_reports_writes_one_sourced_line_per_test_study_and_resumes_per_sae(tmp_path, encode_calls):
    root = tmp_path / "artifacts"
    studies = make_world(root)
    test_ids = sorted(studies.loc[studies["split"] == "test", "study_id"])
    names = list(SAES)
    assert available_saes(root) == sorted(names)

    out = sweep_reports(root, names)
    assert out == root / "metrics" / "sae_sweep" / "generated.jsonl" and len(encode_calls) == 3
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(names) * len(test_ids)
    assert [r["sae"] for r in records] == [name for name in names for _ in test_ids]  # the caller's order
    for name in names:
        mine = [r for r in records if r["sae"] == name]
        assert [r["study_id"] for r in mine] == test_ids
        assert all(set(r) == set(RECORD_KEYS) | {"sae", "tau"} for r in mine)
        assert {(r["system"], r["config"]) for r in mine} == {("sae_rad", "no_aux")}
        assert len({r["tau"] for r in mine}) == 1 and mine[0]["tau"] in TAU_GRID
        assert all(s["feature_ids"] for r in mine for s in r["sentences"])  # every sentence has a source
        assert any("pleural effusion" in r["report"].lower() for r in mine)
        assert mine[-1]["reason"] == "no encoded frontal image" and mine[-1]["report"] == ""
    summary = pd.read_csv(out.parent / "sweep_summary.csv")
    assert summary["sae"].tolist() == names and summary["expansion_factor"].tolist() == [2, 4, 2]
    assert (summary["tau_chosen_by"] == "validation_macro_f1").all() and summary["tau"].isin(TAU_GRID).all()
    assert (summary["test_studies"] == len(test_ids)).all() and (summary["sentences_without_source"] == 0).all()
    assert (summary["live_features"] + summary["dead_features"] == summary["d_sae"]).all()
    assert (summary["described_features"] >= 2).all() and (summary["mean_sentences"] > 0).all()
    first = out.read_bytes()

    # Same inputs: nothing is recomputed and nothing is rewritten.
    before = snapshot(root / "metrics")
    assert sweep_reports(root, names) == out
    assert len(encode_calls) == 3 and snapshot(root / "metrics") == before

    # Recomputing everything from scratch gives the same bytes.
    sweep_reports(root, names, resume=False, out_path=tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == first and len(encode_calls) == 6
    assert (tmp_path / "sweep_summary.csv").read_bytes() == (out.parent / "sweep_summary.csv").read_bytes()

    # New weights for one SAE: only that SAE is recomputed.
    sae = load_sae(root / "sae" / "x4")
    with torch.no_grad():
        sae.W_dec.mul_(1.5)
    save_sae(sae, root / "sae" / "x4")
    before = snapshot(root / "metrics")
    sweep_reports(root, names)
    assert encode_calls[6:] == [4 * D_IN]
    changed = {path.relative_to(root / "metrics").parts[1] for path, mtime in snapshot(root / "metrics").items()
               if before.get(path) != mtime and len(path.relative_to(root / "metrics").parts) > 2}
    assert changed == {"x4"}
    after = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r for r in after if r["sae"] != "x4"] == [r for r in records if r["sae"] != "x4"]
    assert len([r for r in after if r["sae"] == "x4"]) == len(test_ids)


def test_sweep_reports_names_unknown_folders_and_honours_a_given_tau(tmp_path, encode_calls):
    root = tmp_path / "artifacts"
    make_world(root)
    with pytest.raises(ValueError, match=r"nope.*available: \['x2', 'x2_dense', 'x4'\]"):
        sweep_reports(root, ["x2", "nope"])
    with pytest.raises(ValueError, match="not_an_sae"):
        sweep_reports(root, ["not_an_sae"])
    assert encode_calls == []  # checked before any work
    out = sweep_reports(root, ["x2"], tau=0.3, out_path=tmp_path / "fixed.jsonl")
    assert {json.loads(line)["tau"] for line in out.read_text().splitlines()} == {0.3}
    summary = pd.read_csv(tmp_path / "sweep_summary.csv")
    assert summary["tau_chosen_by"].tolist() == ["argument"]
    assert not (root / "metrics" / "sae_sweep" / "x2" / "tau_study.csv").exists()


def test_a_missing_table5_says_when_the_sae_stage_switched_it_off(tmp_path):
    import json

    import pytest

    from saerad.reports.sae_sweep import table5_sweep_names

    with pytest.raises(FileNotFoundError, match="run the sae stage first"):
        table5_sweep_names(tmp_path)
    (tmp_path / "sae").mkdir()
    (tmp_path / "sae" / "stage.json").write_text(json.dumps({"status": "ok", "parameters": {"run_table5": False}}))
    with pytest.raises(FileNotFoundError, match="run_table5=false.*score_sae_sweep=false"):
        table5_sweep_names(tmp_path)
