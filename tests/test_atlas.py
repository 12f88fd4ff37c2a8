"""The feature atlas: its data layer (example bands, histogram, nearest features, citations, search
index), a deterministic build from a tiny artifacts tree (tiny ResNet encoder and SAE built here),
input errors, and the pages in headless Chromium (search ranking equals Python's, images, histogram,
heat maps, keyboard, no network, no console error)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import save_tiny_dinov2
from saerad.book_check import find_chromium
from saerad.features.atlas_data import (
    QUANTILE_BANDS,
    activation_histogram,
    band_examples,
    citation_counts,
    load_atlas_tables,
    nearest_features,
)
from saerad.features.atlas_page import build_atlas, write_citations
from saerad.features.atlas_search import browser_index, evidence_search, score_query
from saerad.features.search import FeatureSearch

CHROMIUM = find_chromium()
WIDTH = 16  # the tiny encoder's token width
SIZE = 64  # image side: the tiny ResNet's last map is 2 x 2
DESCRIBED = {  # feature slot -> description (slots are filled with live feature ids below)
    0: "left-sided pacemaker with leads in the right ventricle",
    1: "small left pleural effusion",
    2: "right pleural effusion with basilar atelectasis",
    3: "the heart size is normal and no pacemaker is seen on the lateral view of the chest",
}


# ---------------------------------------------------------------- data layer


def test_band_examples_draw_by_rank_within_bands_and_skip_excluded_rows():
    rows = np.arange(100, 200)
    values = np.linspace(0.01, 1.0, 100)[::-1].copy()  # row 100 strongest
    chosen = band_examples(rows, values, per_band=3, rng=np.random.default_rng(0), exclude=[190, 191])
    assert [c["band"] for c in chosen] == [label for label, _, _ in QUANTILE_BANDS for _ in range(3)]
    ranks = {int(r): k for k, r in enumerate(rows[np.argsort(values)])}  # 0 = weakest
    for item in chosen:
        low, high = next((lo, hi) for label, lo, hi in QUANTILE_BANDS if label == item["band"])
        assert low * 100 <= ranks[item["row"]] < high * 100
        assert item["activation"] == values[item["row"] - 100]
    assert len({c["row"] for c in chosen}) == 12 and not {190, 191} & {c["row"] for c in chosen}
    for label, _, _ in QUANTILE_BANDS:  # strongest first within a band
        band = [c["activation"] for c in chosen if c["band"] == label]
        assert band == sorted(band, reverse=True)
    again = band_examples(rows, values, 3, np.random.default_rng(0), exclude=[190, 191])
    assert again == chosen
    # Storage order does not matter: the same draw from shuffled input.
    shuffle = np.random.default_rng(5).permutation(100)
    assert band_examples(rows[shuffle], values[shuffle], 3, np.random.default_rng(0), exclude=[190, 191]) == chosen
    # A band with fewer candidates gives what it has; ties cannot empty a band.
    few = band_examples(np.arange(3), np.ones(3), 5, np.random.default_rng(0))
    assert sorted(c["row"] for c in few) == [0, 1, 2]


def test_activation_histogram_counts_non_zero_values_and_silent_images():
    histogram = activation_histogram(np.array([0.0, 0.5, 1.0, 1.0, 2.0]), n_images=10, bins=4)
    assert histogram["edges"] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert histogram["counts"] == [0, 1, 2, 1] and histogram["zeros"] == 6
    assert activation_histogram(np.array([]), 7) == {"edges": [], "counts": [], "zeros": 7}


def test_nearest_features_by_decoder_cosine_among_live_features():
    decoder = np.array([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [-1, 0, 0], [0.95, 0.05, 0], [0, 0, 0]])
    nearest = nearest_features(decoder, [0, 1, 2, 3, 5], k=2)
    assert set(nearest) == {0, 1, 2, 3, 5}  # feature 4 is not live: never a neighbour
    assert [f for f, _ in nearest[0]] == [1, 2]
    assert nearest[0][0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-4)
    assert [f for f, _ in nearest[3]] == [2, 5]  # ties (cosine 0) broken by feature id
    blocked = nearest_features(decoder, [0, 1, 2, 3, 5], k=2, block=2)
    assert blocked == nearest


def test_citation_counts_count_reports_once_per_feature_and_pick_the_main_config(tmp_path):
    path = tmp_path / "generated.jsonl"
    rows = [
        {"system": "sae_rad", "config": "no_aux", "study_id": 1,
         "sentences": [{"text": "a", "feature_ids": [5, 7]}, {"text": "b", "feature_ids": [5]}]},
        {"system": "sae_rad", "config": "no_aux", "study_id": 2, "sentences": [{"text": "c", "feature_ids": [7]}]},
        {"system": "sae_rad", "config": "indication", "study_id": 1, "sentences": [{"text": "d", "feature_ids": [9]}]},
        {"system": "nearest_neighbour", "config": "-", "study_id": 1, "sentences": [{"text": "e", "feature_ids": []}]},
        {"system": "nearest_neighbour", "config": "-", "study_id": 2, "sentences": [{"text": "f", "feature_ids": []}]},
        {"system": "nearest_neighbour", "config": "-", "study_id": 3, "sentences": [{"text": "g", "feature_ids": []}]},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    counts = citation_counts(path)
    assert counts == {"config": "no_aux", "reports": {"no_aux": 2, "indication": 1},
                      "counts": {"no_aux": {"5": 1, "7": 2}, "indication": {"9": 1}}}
    path.write_text(json.dumps({"system": "sae_rad", "config": "x", "study_id": 1,
                                "sentences": [{"text": "a"}]}) + "\n")
    with pytest.raises(ValueError, match=r"generated.jsonl:1: every sentence needs a list 'feature_ids'"):
        citation_counts(path)
    with pytest.raises(FileNotFoundError, match="reports stage"):
        citation_counts(tmp_path / "absent.jsonl")


def test_python_scorer_of_the_browser_index_ranks_as_feature_search():
    evidence = {3: ["Left pleural effusion."] * 2, 8: ["Right pleural effusion.", "No pacemaker."],
                12: ["Left-sided pacemaker."], 20: ["Pacemaker leads unchanged; small left effusion."],
                31: ["Normal heart size."]}
    search = FeatureSearch(evidence, n_reports=2)
    index = browser_index(search)
    assert index["token_pattern"] == r"\b\w\w+\b" and index["ngram_max"] == 2 and index["sublinear_tf"]
    for query in ("pacemaker", "left effusion", "Effusion, effusion on the LEFT", "the", "heart", "NG tube"):
        expected = search.features_for(query, top=10)
        ranked = score_query(index, query)
        assert [f for f, _ in ranked] == expected["feature"].tolist(), query
        np.testing.assert_allclose([s for _, s in ranked], expected["score"].to_numpy(dtype=float), atol=1e-6)


# ---------------------------------------------------------------- a tiny artifacts tree


def _save_tiny_resnet(directory: Path) -> Path:
    from transformers import BitImageProcessor, ResNetConfig, ResNetModel

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 8, 8, WIDTH], depths=[1, 1, 1, 1],
                          layer_type="basic", downsample_in_first_stage=False)
    ResNetModel(config).eval().save_pretrained(directory)
    BitImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE},
                      image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]).save_pretrained(directory)
    return directory


def write_artifacts(root: Path, n_images: int = 24) -> dict:
    """Artifacts of a tiny run whose activations really are the tiny SAE's on the tiny encoder's tokens."""
    from saerad.encode.encoder import ClassTokenEncoder
    from saerad.features.activations import sparse_feature_activations
    from saerad.sae import build_sae, make_config, save_sae

    rng = np.random.default_rng(0)
    dataset = root / "dataset"
    images, studies, index = [], [], []
    for k in range(n_images):
        study, dicom = 50000000 + k, f"d{k:03d}"
        relative = f"files/s{study}/{dicom}.png"
        (dataset / relative).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (SIZE, SIZE)).astype(np.uint8)
        pixels[: SIZE // 2 * (k % 2 + 1)] //= 3  # some structure, so images differ in more than noise
        Image.fromarray(pixels, mode="L").save(dataset / relative)
        split = "train" if k < 16 else ("validate" if k < 18 else "test")
        images.append({"dicom_id": dicom, "subject_id": 1000 + k, "study_id": study, "split": split,
                       "view_position": "PA" if k % 3 else "AP", "image_path": relative})
        studies.append({"study_id": study, "split": split, "findings": f"Report {k}: <b>text</b> with a pacemaker."})
        index.append({"row": k, "token_row": k, "dicom_id": dicom, "subject_id": 1000 + k, "study_id": study,
                      "split": split})
    for name, table in (("images.csv", images), ("studies.csv", studies)):
        (root / "data").mkdir(parents=True, exist_ok=True)
        pd.DataFrame(table).to_csv(root / "data" / name, index=False)
    (root / "data" / "dataset.json").write_text(json.dumps({"root": str(dataset)}))

    encoder_dir = _save_tiny_resnet(root / "encoder")
    scale = 0.9
    (root / "encode").mkdir()
    (root / "encode" / "scale.json").write_text(json.dumps({"encoder": str(encoder_dir), "scale": scale}))
    encoder = ClassTokenEncoder(encoder_dir)
    pictures = [Image.open(dataset / row["image_path"]).convert("RGB") for row in images]
    tokens = encoder.encode_images(pictures) * scale
    sae = build_sae(make_config("sae_rad", WIDTH, 4, seed=0))
    with torch.no_grad():  # biases that let about half the features fire on these tokens
        sae.b_gate.copy_(torch.linspace(-0.3, 0.3, sae.config.d_sae))
        sae.b_mag.copy_(torch.linspace(-0.2, 0.4, sae.config.d_sae))
    save_sae(sae, root / "sae" / "tiny")
    activations = sparse_feature_activations(sae, tokens.astype(np.float32))

    features = root / "features"
    features.mkdir()
    from scipy import sparse
    sparse.save_npz(features / "activations.npz", activations)
    pd.DataFrame(index).to_csv(features / "activations_index.csv", index=False)
    dense = activations.toarray()
    fires = (dense > 0).sum(axis=0)
    live = [int(f) for f in np.flatnonzero(fires)]
    assert len(live) >= 10, "the tiny SAE should have a few live features"
    slots = {slot: live[[2, 5, 7, 9][slot]] for slot in DESCRIBED}
    stats = pd.DataFrame({"feature": range(dense.shape[1]), "density": fires / n_images, "fire_count": fires,
                          "max": dense.max(axis=0),
                          "mean_nonzero": [dense[dense[:, f] > 0, f].mean() if fires[f] else 0 for f in range(64)],
                          "q50": 0.1, "q90": 0.2, "q99": 0.3, "dead": fires == 0})
    stats.to_csv(features / "feature_stats.csv", index=False)
    described = {slots[slot]: text for slot, text in DESCRIBED.items()}
    descriptions, feature_rows, top_rows = [], [], []
    for feature in live:
        ok = feature in described
        descriptions.append({"feature": feature, "status": "ok" if ok else "flagged",
                             "description": described.get(feature, ""), "statements": [],
                             "flag_reason": None if ok else "no line beginning '*This feature represents'"})
        feature_rows.append({"feature": feature, "density": fires[feature] / n_images, "fire_count": fires[feature],
                             "max": dense[:, feature].max(), "status": "ok" if ok else "flagged",
                             "description": described.get(feature, ""),
                             "flag_reason": "" if ok else "no line beginning '*This feature represents'",
                             "explanation_auroc": 0.75 if ok else np.nan,
                             "aligned_finding": "pacemaker" if feature == slots[0] else "pleural_effusion",
                             "finding_auroc": 0.9, "purity": 0.5})
        train = [k for k in np.argsort(-dense[:16, feature], kind="stable") if dense[k, feature] > 0][:3]
        top_rows += [{"feature": feature, "rank": r + 1, "study_id": images[k]["study_id"],
                      "dicom_id": images[k]["dicom_id"], "row": k, "activation": dense[k, feature]}
                     for r, k in enumerate(train)]
    # Reports: the pacemaker feature's three strongest training studies mention a pacemaker, the rest do not,
    # so the evidence search can find it.
    pacemaker_rows = [k for k in np.argsort(-dense[:16, slots[0]], kind="stable") if dense[k, slots[0]] > 0][:3]
    for k, study in enumerate(studies):
        study["findings"] = (f"Report {k}: <b>left-sided pacemaker</b> in place." if k in pacemaker_rows
                             else f"Report {k}: the heart size is normal.")
    pd.DataFrame(studies).to_csv(root / "data" / "studies.csv", index=False)
    (features / "descriptions.jsonl").write_text("".join(json.dumps(d) + "\n" for d in descriptions))
    pd.DataFrame(feature_rows).to_csv(features / "feature_index.csv", index=False)
    pd.DataFrame(top_rows).to_csv(features / "top_activations.csv", index=False)
    pd.DataFrame([{"feature": f, "n_activating": 2, "n_silent": 2, "problem": "", "auroc": 0.75, "precision": 0.5,
                   "recall": 1.0} for f in described]).to_csv(features / "explanation_scores.csv", index=False)
    pd.DataFrame([{"feature": slots[0], "study_id": images[k]["study_id"], "activating": act, "score": score}
                  for k, act, score in ((16, True, 0.9), (17, True, 0.2), (18, False, 0.7), (19, False, 0.1))]
                 ).to_csv(features / "explanation_scored_studies.csv", index=False)
    pd.DataFrame([{"finding": "pacemaker", "best_feature": slots[0], "auroc": 0.97, "prevalence": 0.1,
                   "runner_up_feature": slots[3], "runner_up_auroc": 0.6}]).to_csv(
        features / "finding_alignment.csv", index=False)
    return {"root": root, "slots": slots, "live": live, "activations": dense, "sae_dir": root / "sae" / "tiny",
            "encoder_dir": encoder_dir, "search": tiny_search(root)}


def tiny_search(root: Path) -> FeatureSearch:
    """The run's evidence search, over each feature's three strongest training reports (the run is tiny)."""
    return evidence_search(root, load_atlas_tables(root), n_reports=3)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)
    return write_artifacts(tmp_path_factory.mktemp("atlas_run"))


@pytest.fixture(scope="module")
def built(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas_out") / "atlas"
    summary = build_atlas(tiny_run["root"], out, tiny_run["sae_dir"], examples_per_band=2, top_examples=3,
                          search=tiny_run["search"])
    return summary


def _page_data(path: Path) -> dict:
    return json.loads(re.search(r"window\.ATLAS_FEATURE = (.*?);</script>", path.read_text()).group(1))


def test_build_writes_one_page_per_live_feature_with_shared_thumbnails(tiny_run, built):
    out = built.out_dir
    assert built.has_heatmaps and built.n_features == len(tiny_run["live"])
    assert sorted(int(p.stem) for p in (out / "features").glob("*.html")) == tiny_run["live"]
    thumbs = sorted((out / "thumbs").glob("*.jpg"))
    assert len(thumbs) == built.n_images <= 24
    assert built.bytes_on_disk == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    pages = [_page_data(out / "features" / f"{f}.html") for f in tiny_run["live"]]
    used = {e["image"] for page in pages for e in page["examples"]}
    assert used == set(range(built.n_images))  # every thumbnail is used, each stored once
    dense = tiny_run["activations"]
    images = json.loads((out / "data" / "images.js").read_text().split(" = ", 1)[1].rstrip(";\n"))
    for page in pages:
        feature = page["feature"]
        assert sum(page["histogram"]["counts"]) == (dense[:, feature] > 0).sum()
        rows = [int(images[e["image"]][3][1:]) for e in page["examples"]]
        assert len(rows) == len(set(rows))  # no image twice on a page
        for example, row in zip(page["examples"], rows):
            assert example["activation"] == pytest.approx(dense[row, feature], rel=1e-3)
            assert len(example["map"]) == 4 and max(abs(v) for v in example["map"]) <= 99
            # Where the feature fires, the mean of the cells is its activation (the decomposition is exact).
            assert example["map_mean"] == pytest.approx(example["activation"], rel=2e-3, abs=1e-4)
        if page["examples"]:  # one colour scale per page: its largest |cell| is the scale's end
            assert max(abs(v) for e in page["examples"] for v in e["map"]) == 99
    first = _page_data(out / "features" / f"{tiny_run['slots'][0]}.html")
    assert [s["right"] for s in first["scored"]] == [True, False, False, True]
    assert first["alignment"]["best_for"] == [{"finding": "pacemaker", "auroc": 0.97}]
    assert "window.ATLAS_CITATIONS = null;" in (out / "citations.js").read_text()
    html_text = (out / "features" / f"{tiny_run['slots'][0]}.html").read_text()
    assert "http://" not in html_text and "https://" not in html_text and "fetch(" not in (
        out / "assets" / "atlas.js").read_text()


def test_build_is_byte_identical_and_replaces_the_folder(tiny_run, built, tmp_path):
    again = build_atlas(tiny_run["root"], tmp_path / "atlas", tiny_run["sae_dir"], examples_per_band=2,
                        top_examples=3, search=tiny_run["search"])
    first = {p.relative_to(built.out_dir): p.read_bytes() for p in built.out_dir.rglob("*") if p.is_file()}
    second = {p.relative_to(again.out_dir): p.read_bytes() for p in again.out_dir.rglob("*") if p.is_file()}
    assert first.keys() == second.keys() and all(first[k] == second[k] for k in first)
    (again.out_dir / "stale.txt").write_text("old")
    build_atlas(tiny_run["root"], tmp_path / "atlas", tiny_run["sae_dir"], heatmaps=False)
    assert not (tmp_path / "atlas" / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["atlas"]  # no temporary folder left


def test_write_citations_fills_the_placeholder(tiny_run, built, tmp_path):
    import shutil

    atlas = shutil.copytree(built.out_dir, tmp_path / "atlas")  # the shared build stays citation-free
    reports = tiny_run["root"] / "reports"
    reports.mkdir(exist_ok=True)
    feature = tiny_run["slots"][0]
    (reports / "generated.jsonl").write_text(json.dumps(
        {"system": "sae_rad", "config": "main", "study_id": 1, "sentences": [{"text": "x", "feature_ids": [feature]}]})
        + "\n")
    try:
        counts = write_citations(tiny_run["root"], atlas)
        text = (atlas / "citations.js").read_text()
        assert counts["counts"] == {"main": {str(feature): 1}}
        assert text.startswith("window.ATLAS_CITATIONS = {") and '"config":"main"' in text
        write_citations(tiny_run["root"], tmp_path / "reports_atlas")  # a folder of its own, for publishing
        assert (tmp_path / "reports_atlas" / "citations.js").read_text() == text
    finally:
        (reports / "generated.jsonl").unlink()


def test_vit_encoder_gives_an_atlas_with_attention_heat_maps(tiny_run, tmp_path):
    from saerad.encode.encoder import ClassTokenEncoder
    from saerad.sae import load_sae

    vit = save_tiny_dinov2(tmp_path / "vit", image_size=SIZE, hidden_size=WIDTH)  # 8 x 8 patches of 8 px
    summary = build_atlas(tiny_run["root"], tmp_path / "atlas", tiny_run["sae_dir"], encoder_dir=vit)
    assert summary.has_heatmaps and "last block's attention" in summary.heatmap_note
    index = json.loads((tmp_path / "atlas" / "data" / "index.js").read_text().split(" = ", 1)[1].rstrip(";\n"))
    assert index["meta"]["grid"] == [8, 8] and "last attention layer" in index["meta"]["heatmap_caption"]
    # Each example's cells plus its remainder are the feature's pre-activation on the ViT's token
    # (times the decoder norm, the book's units): the split is exact.
    images = pd.read_csv(tiny_run["root"] / "data" / "images.csv", dtype={"dicom_id": str})
    dataset = Path(json.loads((tiny_run["root"] / "data" / "dataset.json").read_text())["root"])
    encoder = ClassTokenEncoder(vit)
    tokens = encoder.encode_images([Image.open(dataset / path).convert("RGB") for path in images["image_path"]])
    sae = load_sae(tiny_run["sae_dir"])
    with torch.no_grad():
        _, magnitude = sae.pre_activations(torch.from_numpy(tokens) * 0.9)
    expected = (magnitude * sae.W_dec.detach().norm(dim=1)).double().numpy()
    table = json.loads((tmp_path / "atlas" / "data" / "images.js").read_text().split(" = ", 1)[1].rstrip(";\n"))
    row_of_dicom = {dicom: k for k, dicom in enumerate(images["dicom_id"])}
    checked = 0
    for feature in tiny_run["live"]:
        page = _page_data(tmp_path / "atlas" / "features" / f"{feature}.html")
        for example in page["examples"]:
            assert len(example["map"]) == 64 and max(abs(v) for v in example["map"]) <= 99
            row = row_of_dicom[table[example["image"]][3]]
            total = example["map_mean"] + example["map_remainder"]
            size = abs(example["map_mean"]) + abs(example["map_remainder"])
            assert total == pytest.approx(expected[row, feature], abs=1e-3 * max(1.0, size))
            checked += 1
    assert checked > 10


def test_resnet_atlas_pages_carry_no_remainder(built):
    page = _page_data(next((built.out_dir / "features").glob("*.html")))
    assert page["examples"] and all("map_remainder" not in example for example in page["examples"])
    assert "heatmap_caption" not in (built.out_dir / "data" / "index.js").read_text()


@pytest.mark.parametrize("file, change, error, pattern", [
    ("features/feature_index.csv", lambda t: t.drop(columns="purity"), ValueError,
     r"feature_index.csv: missing columns \['purity'\]"),
    ("features/top_activations.csv", lambda t: t.drop(columns="dicom_id"), ValueError,
     r"top_activations.csv: missing columns \['dicom_id'\]"),
    ("features/explanation_scored_studies.csv", lambda t: t.assign(activating="maybe"), ValueError,
     r"explanation_scored_studies.csv: column 'activating' must be true/false"),
    ("features/feature_index.csv", lambda t: t.assign(status="odd"), ValueError, r"column 'status' must be"),
    ("data/images.csv", None, FileNotFoundError, r"images.csv is missing: run the data stage"),
    ("features/activations.npz", None, FileNotFoundError, r"activations.npz is missing: run the features stage"),
])
def test_bad_inputs_name_the_file_and_leave_the_old_atlas(tiny_run, tmp_path, file, change, error, pattern):
    import shutil

    root = tmp_path / "run"
    shutil.copytree(tiny_run["root"], root, symlinks=True)
    (root / "data" / "dataset.json").write_text(json.dumps({"root": str(tiny_run["root"] / "dataset")}))
    out = tmp_path / "atlas"
    out.mkdir()
    (out / "index.html").write_text("old atlas")
    if change is None:
        (root / file).unlink()
    else:
        change(pd.read_csv(root / file)).to_csv(root / file, index=False)
    with pytest.raises(error, match=pattern):
        build_atlas(root, out, root / "sae" / "tiny", heatmaps=False)
    assert (out / "index.html").read_text() == "old atlas"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas", "run"]


# ---------------------------------------------------------------- in the browser


@pytest.mark.skipif(CHROMIUM is None, reason="no system chromium on PATH (`make browser` installs it)")
def test_atlas_in_headless_chromium(tiny_run, built):
    sync_api = pytest.importorskip("playwright.sync_api")
    out = built.out_dir
    search = tiny_run["search"]
    pacemaker, live = tiny_run["slots"][0], tiny_run["live"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            requested, errors = [], []
            page.on("request", lambda request: requested.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.goto((out / "index.html").resolve().as_uri())
            assert page.locator("#features tbody tr").count() == len(live)
            page.keyboard.press("/")
            assert page.evaluate("document.activeElement.id") == "search"
            page.keyboard.type("pacemaker")
            first = page.locator("#features tbody tr").first
            assert first.get_attribute("data-feature") == str(pacemaker)
            assert page.locator("#features tbody tr").count() == len(search.ranking("pacemaker"))
            for query in ("pacemaker", "left pleural effusion", "Effusion, RIGHT effusion", "heart", "nothing"):
                browser_ranking = page.evaluate("q => window.atlasRankQuery(q).slice(0, 5)", query)
                python = search.features_for(query, top=5)
                assert [f for f, _ in browser_ranking] == python["feature"].tolist(), query
                np.testing.assert_allclose([s for _, s in browser_ranking], python["score"].to_numpy(dtype=float), atol=1e-6)
            # Filters apply to the search too; the empty query sorts by the chosen column.
            page.fill("#search", "pacemaker")
            page.select_option("#status", "flagged")
            statuses = tiny_run["root"] / "features" / "feature_index.csv"
            flagged = set(pd.read_csv(statuses).query("status == 'flagged'")["feature"])
            expected = [f for f in search.ranking("pacemaker") if f in flagged]
            assert [int(r) for r in page.locator("#features tbody tr").evaluate_all(
                "rows => rows.map(r => r.dataset.feature)")] == expected
            page.select_option("#status", "all")
            page.fill("#search", "")
            page.click("th button[data-key=density]")
            densities = [float(t.rstrip(" %")) for t in page.locator("#features tbody td:nth-child(3)").all_text_contents()]
            assert densities == sorted(densities, reverse=True)

            page.goto((out / "features" / f"{pacemaker}.html").resolve().as_uri())
            record = _page_data(out / "features" / f"{pacemaker}.html")
            cards = page.locator("figure.example")
            assert cards.count() == len(record["examples"]) > 0
            assert page.evaluate("[...document.querySelectorAll('figure.example img')].every(i => i.complete && i.naturalWidth > 0)")
            assert page.locator("figure.example canvas").count() == len(record["examples"])
            assert page.locator("svg.histogram rect.bar").count() == sum(c > 0 for c in record["histogram"]["counts"])
            assert "activation (non-zero only)" in page.text_content("svg.histogram")
            assert "red pushes the feature up" in page.text_content("#examples")
            assert page.locator("#explanation .right").count() == 2 and page.locator("#explanation .wrong").count() == 2
            assert "n/a: the reports chapter has not run" in page.text_content("#context")
            assert "<b>" in page.text_content("figure.example .report")  # report text is text, not markup
            with page.expect_navigation():
                page.keyboard.press("j")
            assert page.url.endswith(f"/{live[live.index(pacemaker) + 1]}.html")
            with page.expect_navigation():
                page.keyboard.press("ArrowLeft")
            assert page.url.endswith(f"/{pacemaker}.html")
            page.goto((out / "features" / f"{live[0]}.html").resolve().as_uri())  # a flagged one
            assert "Flagged:" in page.text_content("#lede")
        finally:
            browser.close()
    assert not errors, errors
    assert requested and all(address.startswith(("file:", "data:")) for address in requested), requested
