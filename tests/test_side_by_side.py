"""The reports chapter's side-by-side table and the inline thumbnails it shares with the reader-study page."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from saerad.reports.side_by_side import MARK_COLOURS, marked_sentences, planted_text, side_by_side_table
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


PLANTED = {"pleural_effusion": {"sides": frozenset({"left"}), "size": "small"}, "edema": {"sides": None, "size": "mild"}}


def test_sentences_are_coloured_against_the_planted_findings_with_sources_and_misses():
    text = marked_sentences(_generated()["sentences"][0], PLANTED, with_sources=True)
    assert f'<span style="background:{MARK_COLOURS["shared"]}">There is a left pleural effusion.</span> <sup>7, 9</sup>' in text
    assert f'<span style="background:{MARK_COLOURS["shared"]}">No pneumothorax.</span>' in text
    assert f'<span style="background:{MARK_COLOURS["none"]}">The lungs are well expanded.</span>' in text
    assert text.endswith("<i>missed: edema</i>")
    unmarked = marked_sentences(_generated()["sentences"][2], None, with_sources=False)
    assert unmarked == f'<span style="background:{MARK_COLOURS["none"]}">Cardiomegaly.</span>'


def test_a_nodule_named_on_the_wrong_side_and_size_is_red_and_the_planted_one_missed():
    """A planted right 15 mm nodule: "New 20 mm nodule in the LEFT mid lung." is not agreement."""
    planted = {"lung_nodule": {"sides": frozenset({"right"}), "size": "10-19 mm"}}
    sentences = [{"text": "New 20 mm nodule in the LEFT mid lung.", "feature_ids": [5]}]
    text = marked_sentences(sentences, planted, with_sources=True)
    assert (f'<span style="background:{MARK_COLOURS["extra"]}" title="lung nodule: says left, planted right">'
            "New 20 mm nodule in the LEFT mid lung.</span>") in text
    assert text.endswith("<i>missed: lung nodule</i>")
    right = marked_sentences([{"text": "There is a 15 mm nodule in the right mid lung.", "feature_ids": [5]}],
                             planted, with_sources=False)
    assert right.startswith(f'<span style="background:{MARK_COLOURS["shared"]}">') and "missed" not in right


def test_planted_text_names_side_and_size():
    assert planted_text(PLANTED) == "pleural effusion (left, small), edema (mild)"
    assert planted_text({}) == "none"


def test_table_has_a_row_per_study_with_the_first_sae_configuration(radiograph):
    planted = {1: {"pleural_effusion": {"sides": frozenset({"left"}), "size": None}}}
    table = side_by_side_table(_generated(), [1], {1: radiograph}, planted, thumbnail_size=40)
    assert table.count("<tr>") == 2  # header and one study
    assert "planted: pleural effusion (left)" in table
    assert "Effusion &lt;left&gt;." in table  # the reference is escaped
    assert "<sup>7, 9</sup>" in table  # configuration "a", the first line of the study
    assert f'background:{MARK_COLOURS["extra"]}" title="cardiomegaly not planted">Cardiomegaly.' in table
    assert table.startswith('<div class="saerad-table">')
    without_truth = side_by_side_table(_generated(), [1], {1: radiograph})
    assert "planted" not in without_truth and "missed" not in without_truth
    with pytest.raises(ValueError, match="study 1 has no ground truth"):
        side_by_side_table(_generated(), [1], {1: radiograph}, {2: {}})


def test_a_study_without_both_systems_is_named(radiograph):
    only_sae = _generated().query("system == 'sae_rad'")
    with pytest.raises(ValueError, match=r"study 1 has no line from \['nearest_neighbour'\]"):
        side_by_side_table(only_sae, [1], {1: radiograph})
