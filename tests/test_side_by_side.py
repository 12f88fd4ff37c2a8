"""The reports chapter's side-by-side table and the inline thumbnails it shares with the reader-study page."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from saerad.reports.side_by_side import MARK_COLOURS, marked_sentences, side_by_side_table
from saerad.synthcxr import FINDINGS
from saerad.thumbnails import encode_thumbnail, thumbnail_img_tag


@pytest.fixture
def radiograph(tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(np.tile(np.arange(200, dtype=np.uint8), (100, 1)), mode="L").save(path)
    return path


def test_thumbnail_tag_inlines_a_jpeg_of_the_requested_size(radiograph):
    tag = thumbnail_img_tag(radiograph, 50)
    payload = base64.b64decode(tag.split("base64,")[1].split('"')[0])
    with Image.open(io.BytesIO(payload)) as image:
        assert image.format == "JPEG" and image.size == (50, 25)
    assert 'width="50" height="25"' in tag
    assert payload == encode_thumbnail(radiograph, 50)[0]


def _generated():
    sentences = [{"text": "There is a left pleural effusion.", "feature_ids": [7, 9]},
                 {"text": "No pneumothorax.", "feature_ids": [3]},
                 {"text": "The lungs are well expanded.", "feature_ids": [4]}]
    return pd.DataFrame([
        {"study_id": 1, "system": "sae_rad", "config": "a", "reference": "Effusion <left>.", "sentences": sentences},
        {"study_id": 1, "system": "sae_rad", "config": "b", "reference": "Effusion <left>.", "sentences": []},
        {"study_id": 1, "system": "nearest_neighbour", "config": "nn", "reference": "Effusion <left>.",
         "sentences": [{"text": "Cardiomegaly.", "feature_ids": []}]},
    ])


def test_sentences_are_coloured_against_the_planted_findings_with_sources_and_misses():
    planted = ["pleural_effusion", "edema"]
    text = marked_sentences(_generated()["sentences"][0], planted, with_sources=True)
    assert f'<span style="background:{MARK_COLOURS["shared"]}">There is a left pleural effusion.</span> <sup>7, 9</sup>' in text
    assert f'<span style="background:{MARK_COLOURS["shared"]}">No pneumothorax.</span>' in text
    assert f'<span style="background:{MARK_COLOURS["none"]}">The lungs are well expanded.</span>' in text
    assert text.endswith("<i>missed: edema</i>")
    unmarked = marked_sentences(_generated()["sentences"][2], None, with_sources=False)
    assert unmarked == f'<span style="background:{MARK_COLOURS["none"]}">Cardiomegaly.</span>'


def test_table_has_a_row_per_study_with_the_first_sae_configuration(radiograph):
    truth = pd.DataFrame([{name: int(name == "pleural_effusion") for name in FINDINGS}], index=pd.Index([1], name="study_id"))
    table = side_by_side_table(_generated(), [1], {1: radiograph}, truth, thumbnail_size=40)
    assert table.count("<tr>") == 2  # header and one study
    assert "planted: pleural effusion" in table
    assert "Effusion &lt;left&gt;." in table  # the reference is escaped
    assert "<sup>7, 9</sup>" in table  # configuration "a", the first line of the study
    assert f'background:{MARK_COLOURS["extra"]}">Cardiomegaly.' in table
    without_truth = side_by_side_table(_generated(), [1], {1: radiograph})
    assert "planted" not in without_truth and "missed" not in without_truth


def test_a_study_without_both_systems_is_named(radiograph):
    only_sae = _generated().query("system == 'sae_rad'")
    with pytest.raises(ValueError, match=r"study 1 has no line from \['nearest_neighbour'\]"):
        side_by_side_table(only_sae, [1], {1: radiograph})
