"""The reader study's review page: building it (determinism, blinding, input errors), the export
contract, and one end-to-end run of the page in headless Chromium (keep / edit / delete, reload,
download, validate)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from saerad.book_check import find_chromium
from saerad.reader_study import build_review_page, unblinding_table, validate_export
from saerad.reader_study.page import encode_thumbnail, spread_order

SYSTEMS = ("sae_rad", "nearest_neighbour")
SYSTEM_WORDS = ("sae_rad", "sae-rad", "nearest", "neighbour", "no_aux")
CHROMIUM = find_chromium()


def _sentences(study: int, system: str, n: int = 3) -> list[dict]:
    return [{"text": f"Finding {k + 1} of study {study} by reader {'A' if system == 'sae_rad' else 'B'}.",
             "feature_ids": [k] if system == "sae_rad" else []} for k in range(n)]


def _write_fixture(root: Path) -> dict:
    """Five studies, two systems; study 105 has no SAE-Rad report, study 102 a lateral image first."""
    rows, images, rng = [], [], np.random.default_rng(0)
    for study in range(101, 106):
        for system, config in (("sae_rad", "no_aux"), ("nearest_neighbour", "-")):
            empty = study == 105 and system == "sae_rad"
            rows.append({"study_id": study, "system": system, "config": config,
                         "report": "" if empty else "x", "reference": "ref",
                         "sentences": [] if empty else _sentences(study, system),
                         "reason": "no usable feature" if empty else None})
        views = ["LATERAL", "PA"] if study == 102 else ["AP"]
        for number, view in enumerate(views):
            relative = f"files/s{study}/{number}.png"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            if study == 104:  # a 16-bit image, as some exports of DICOMs are
                pixels = rng.integers(0, 4096, (30, 40)).astype(np.uint16)
                Image.fromarray(pixels).save(root / relative)
            else:
                Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8), mode="L").save(root / relative)
            images.append({"dicom_id": f"d{study}-{number}", "study_id": study, "view_position": view,
                           "image_path": relative})
    indication = pd.DataFrame({"study_id": [101, 102, 103, 104, 105],
                               "indication": ["Cough.", np.nan, "Fever.", "Dyspnoea.", "Trauma."]})
    return {"generated": pd.DataFrame(rows), "images": pd.DataFrame(images), "image_root": root,
            "indication": indication}


@pytest.fixture
def fixture_inputs(tmp_path):
    return _write_fixture(tmp_path / "dataset")


def test_build_is_deterministic_blinded_and_unblindable(fixture_inputs, tmp_path):
    first = build_review_page(**fixture_inputs, out_dir=tmp_path / "a", n_cases=3, seed=7)
    second = build_review_page(**fixture_inputs, out_dir=tmp_path / "b", n_cases=3, seed=7)
    for name in ("review.html", "cases.json", "unblinding.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    other = build_review_page(**fixture_inputs, out_dir=tmp_path / "c", n_cases=3, seed=8)
    assert other.page_id != first.page_id

    page_html = first.html_path.read_text(encoding="utf-8")
    for word in SYSTEM_WORDS:
        assert word not in page_html.lower(), word
    assert "<script src" not in page_html and "http://" not in page_html and "https://" not in page_html
    assert first.page_id in page_html

    cases = json.loads(first.cases_path.read_text())
    unblinding = unblinding_table(first.unblinding_path)
    assert cases["page_id"] == unblinding.attrs["page_id"] == first.page_id
    assert unblinding.attrs["seed"] == 7
    case_ids = [case["case_id"] for case in cases["cases"]]
    assert case_ids == [f"case-0{k}" for k in range(1, 7)] == list(unblinding["case_id"])
    assert sorted(zip(unblinding["study_id"], unblinding["system"])) == sorted(
        (study, system) for study in set(unblinding["study_id"]) for system in SYSTEMS)
    assert 105 not in set(unblinding["study_id"])  # one system wrote nothing for it
    assert (unblinding["study_id"].to_numpy()[1:] != unblinding["study_id"].to_numpy()[:-1]).all()
    assert set(unblinding["config"]) == {"no_aux", "-"}

    # Each report shows its own sentences; the image is the study's first frontal one.
    for case, row in zip(cases["cases"], unblinding.itertuples()):
        assert case["sentences"] == [s["text"] for s in _sentences(row.study_id, row.system)]
        frontal = "1.png" if row.study_id == 102 else "0.png"
        payload, width, height = encode_thumbnail(fixture_inputs["image_root"] / f"files/s{row.study_id}/{frontal}")
        assert cases["images"][case["image"]]["sha256"] == hashlib.sha256(payload).hexdigest()
        assert (width, height) == (40, 30)
        assert case["indication"] == {101: "Cough.", 102: None, 103: "Fever.", 104: "Dyspnoea."}[row.study_id]


def test_spread_order_avoids_adjacent_repeats_when_possible():
    groups = [study for study in "abcd" for _ in range(3)]
    for seed in range(50):
        order = spread_order(groups, np.random.default_rng(seed))
        assert sorted(order) == list(range(12))
        assert all(groups[x] != groups[y] for x, y in zip(order, order[1:]))
    assert sorted(spread_order(["a", "a", "a"], np.random.default_rng(0))) == [0, 1, 2]
    lopsided = ["a"] * 4 + ["b"]
    assert sorted(spread_order(lopsided, np.random.default_rng(0))) == list(range(5))


@pytest.mark.parametrize("change, error, pattern", [
    (lambda x: x.update(generated=x["generated"].drop(columns="sentences")), ValueError,
     r"generated: missing columns \['sentences'\]"),
    (lambda x: x.update(images=x["images"].drop(columns="image_path")), ValueError,
     r"images: missing columns \['image_path'\]"),
    (lambda x: x.update(n_cases=5), ValueError, r"n_cases=5, but only 4 studies"),
    (lambda x: x.update(systems=("sae_rad", "chexagent")), ValueError, r"systems: 'chexagent' has no report"),
    (lambda x: x.update(systems="sae_rad"), ValueError, r"systems: give a sequence"),
    (lambda x: x["generated"].at[0, "sentences"].__setitem__(1, {"text": None}), ValueError,
     r"generated\.sentences\[1\]\.text \(row 0, study 101, 'sae_rad'\)"),
    (lambda x: x.update(generated=pd.concat([x["generated"], x["generated"].iloc[[0]].assign(config="indication")])),
     ValueError, r"system 'sae_rad' has reports from configs .*configs="),
    (lambda x: (x["image_root"] / "files/s101/0.png").unlink(), FileNotFoundError, r"images\.image_path of study 101"),
])
def test_bad_input_names_the_field(fixture_inputs, tmp_path, change, error, pattern):
    arguments = {**fixture_inputs, "n_cases": 4}
    change(arguments)
    with pytest.raises(error, match=pattern):
        build_review_page(**arguments, out_dir=tmp_path / "page")
    assert not (tmp_path / "page" / "review.html").exists()


def test_configs_choose_between_configs(fixture_inputs, tmp_path):
    generated = fixture_inputs["generated"]
    extra = generated[generated["system"] == "sae_rad"].assign(config="indication")
    arguments = {**fixture_inputs, "generated": pd.concat([generated, extra], ignore_index=True)}
    page = build_review_page(**arguments, out_dir=tmp_path, n_cases=2, configs={"sae_rad": "indication"})
    assert set(page.unblinding.loc[page.unblinding["system"] == "sae_rad", "config"]) == {"indication"}


def _export(**sentence) -> dict:
    row = {"index": 0, "text": "No effusion.", "action": "keep", "error_categories": [], "clinical_significance": None}
    row.update(sentence)
    return {"schema": "saerad-reader-study-export/1", "study_seed": 0, "page_id": "abc", "reader": {"id": "R1"},
            "started_at": None, "exported_at": "2025-01-01T10:00:00.000Z",
            "cases": [{"case_id": "case-01", "complete": row["action"] is not None, "comment": "", "sentences": [row]}]}


def test_validate_export_names_the_failing_field(tmp_path):
    assert validate_export(_export())["reader"]["id"] == "R1"
    validate_export(_export(action="edit", edited_text="Small effusion.", error_categories=["omission", "other"],
                            clinical_significance="minor"))
    validate_export(_export(action="delete", error_categories=["other"], clinical_significance="none"))
    validate_export(_export(action=None))
    bad = {
        "cases/0/sentences/0/error_categories": _export(action="delete", clinical_significance="minor"),
        "cases/0/sentences/0/clinical_significance": _export(action="keep", clinical_significance="none"),
        "cases/0/sentences/0/edited_text": _export(action="edit", edited_text="", error_categories=["other"],
                                                   clinical_significance="none"),
        "cases/0/sentences/0/action": {**_export(action=None), "cases": [{**_export(action=None)["cases"][0],
                                                                          "complete": True}]},
        "cases/0/complete": {**_export(), "cases": [{**_export()["cases"][0], "complete": False}]},
        "exported_at": {**_export(), "exported_at": "yesterday"},
        "reader/id": {**_export(), "reader": {"id": ""}},
    }
    for field, export in bad.items():
        with pytest.raises(ValueError, match=f"export: .*{re.escape(field)}"):
            validate_export(export)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(bad["reader/id"]))
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: .*reader/id"):
        validate_export(path)


@pytest.mark.skipif(CHROMIUM is None, reason="no system chromium on PATH (`make browser` installs it)")
def test_page_in_headless_chromium(fixture_inputs, tmp_path):
    """Keep, edit and delete on the page, reload, download; the download passes validate_export.

    The page is opened as file://: Chromium gives file:// pages one localStorage, which
    survives a reload in the same browser context (the page keys it by page id).
    """
    sync_api = pytest.importorskip("playwright.sync_api")
    built = build_review_page(**fixture_inputs, out_dir=tmp_path / "page", n_cases=2, seed=3)
    url = built.html_path.resolve().as_uri()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(accept_downloads=True)
            page = context.new_page()
            requested, errors = [], []
            page.on("request", lambda request: requested.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            page.fill("#reader-id", "R 1")
            page.fill("#reader-role", "test reader")
            keep = page.get_by_role("button", name="Keep sentence 1")
            keep.focus()
            page.keyboard.press("Enter")  # buttons work from the keyboard
            page.get_by_role("button", name="Edit sentence 2").click()
            page.fill("#edit-1", "Finding rewritten by the reader.")
            page.check('#s-1 input[value="other"]')
            page.check('#s-1 input[value="omission"]')
            page.check('#s-1 input[value="minor"]')
            page.get_by_role("button", name="Delete sentence 3").click()
            page.check('#s-2 input[value="misclassification"]')
            page.check('#s-2 input[value="significant"]')
            page.fill("#comment", "Image is small.")
            page.get_by_role("button", name="Next report").click()
            assert page.text_content("#case-title") == "case-02"
            page.get_by_role("button", name="Edit sentence 1").click()  # unfinished: exported as not reviewed
            assert "Still needed" in page.text_content("#s-0 .status")

            page.reload()
            assert page.text_content("#case-title") == "case-02"
            assert page.input_value("#reader-id") == "R 1"
            page.click('#case-list li[data-index="0"] button')
            assert page.get_attribute("#s-0 button[data-action=keep]", "aria-pressed") == "true"
            assert page.get_attribute("#s-1 button[data-action=edit]", "aria-pressed") == "true"
            assert page.get_attribute("#s-2 button[data-action=delete]", "aria-pressed") == "true"
            assert page.input_value("#edit-1") == "Finding rewritten by the reader."
            assert page.is_checked('#s-1 input[value="omission"]') and page.is_checked('#s-1 input[value="minor"]')
            assert page.is_checked('#s-2 input[value="significant"]')
            assert page.input_value("#comment") == "Image is small."
            assert page.get_attribute('#case-list li[data-index="0"] .dot', "title") == "complete"

            with page.expect_download() as download_info:
                page.click("#download")
            download = download_info.value
            assert download.suggested_filename == f"reader-study-R_1-{built.page_id[:8]}.json"
            export = validate_export(download.path())
            assert "1 unfinished sentence" in page.text_content("#notice")
            assert page.text_content("#progress-text").startswith("1/4 reports complete")

            page.once("dialog", lambda dialog: dialog.accept())
            page.click("#clear")
            page.reload()
            assert page.get_attribute("#s-0 button[data-action=keep]", "aria-pressed") == "false"
            assert page.input_value("#reader-id") == "R 1"

            # In a sandboxed frame (as a book might embed it) localStorage throws: the page works and says so.
            (built.html_path.parent / "embed.html").write_text(
                '<iframe id="review" sandbox="allow-scripts allow-downloads" src="review.html"></iframe>')
            page.goto((built.html_path.parent / "embed.html").resolve().as_uri())
            frame = page.frame_locator("#review")
            frame.get_by_role("button", name="Keep sentence 1").click()
            assert frame.locator("#s-0 button[data-action=keep]").get_attribute("aria-pressed") == "true"
            assert "does not let the page keep your progress" in frame.locator("#notice").text_content()
        finally:
            browser.close()

    assert not errors
    assert all(address.startswith(("file:", "data:", "blob:")) for address in requested), requested
    assert export["page_id"] == built.page_id and export["study_seed"] == 3
    assert export["reader"] == {"id": "R 1", "role": "test reader"} and export["started_at"]
    first, *rest = export["cases"]
    assert first["case_id"] == "case-01" and first["complete"] and first["comment"] == "Image is small."
    assert [s["action"] for s in first["sentences"]] == ["keep", "edit", "delete"]
    assert first["sentences"][1]["edited_text"] == "Finding rewritten by the reader."
    assert first["sentences"][1]["error_categories"] == ["omission", "other"]
    assert [s["clinical_significance"] for s in first["sentences"]] == [None, "minor", "significant"]
    assert first["sentences"][2]["error_categories"] == ["misclassification"]
    assert len(rest) == 3 and not any(case["complete"] for case in rest)
    assert all(s["action"] is None for case in rest for s in case["sentences"])
