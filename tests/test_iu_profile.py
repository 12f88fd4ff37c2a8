"""The iu profile: the real Open-i reports, stand-in PNGs under Open-i file names, a tiny DINOv2.

The radiographs are not installable, so the test writes small grey PNGs named as the Open-i download
names them for the images of a few dozen reports; the other images are "image file missing", counted
as such. The reports are the real ones, read from the installed ``torchxrayvision``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from saerad.openi.loader import load_openi
from saerad.openi.reports import packaged_reports_available
from saerad.params import load_profile, resolve_parameters
from saerad.pipeline import REPO_ROOT, STAGES, plan, run

needs_package = pytest.mark.skipif(not packaged_reports_available(),
                                   reason="torchxrayvision (which ships the Open-i reports) is not installed")


def test_iu_profile_validates_against_the_notebooks():
    from saerad.params import notebook_parameters

    schemas = {s.name: notebook_parameters(REPO_ROOT / "notebooks" / s.notebook) for s in STAGES}
    resolved = resolve_parameters("iu", load_profile(REPO_ROOT / "params" / "iu.yaml"), schemas, [], "artifacts/iu")
    assert set(resolved) == {s.name for s in STAGES}
    planned = plan("iu")
    assert planned.parameters["data"]["source"] == "openi"
    assert planned.parameters["features"]["describer_backend"] == "offline"
    assert planned.parameters["encode"]["local_files_only"] is True


def write_stand_in_pngs(root, n_reports: int, seed: int = 0) -> set[str]:
    """Grey PNGs for every image of ``n_reports`` seeded reports; returns the ids of the frontal ones kept."""
    everything = load_openi(None)  # which images are frontal, without files
    rng = np.random.default_rng(seed)
    studies = rng.choice(sorted(everything.studies["study_id"]), size=n_reports, replace=False)
    listed = everything.views[everything.views["study_id"].isin(studies)]
    for number, image_id in enumerate(sorted(listed["dicom_id"])):
        folder = root / f"part{number % 3}"  # the download unpacks flat; any nesting must work too
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(number).integers(0, 255, size=(40, 36), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{image_id}.png")
    return set(everything.images.loc[everything.images["study_id"].isin(studies), "dicom_id"])


@needs_package
@pytest.mark.slow
def test_iu_profile_runs_through_the_sae_on_real_reports_and_stand_in_pngs(tmp_path):
    from conftest import save_tiny_dinov2

    images = tmp_path / "openi-png"
    kept = write_stand_in_pngs(images, n_reports=40)
    encoder_dir = save_tiny_dinov2(tmp_path / "rad-dino-like", image_size=32)
    outcome = run(
        "iu",
        assignments=[f"dataset_root={images}", f"encoder_model={encoder_dir}", "device=cpu", "dtype=float32",
                     "num_workers=0", "workers=2", "encode.projection_points=30", "sae.steps=60",
                     "sae.comparison_steps=30", "sae.checkpoint_every=20", "sae.batch_size=16",
                     "sae.expansion_factor=2", "sae.table5_expansion_factors=[1, 2, 4]"],
        artifacts_base=tmp_path / "artifacts", chapters_dir=tmp_path / "chapters", timeout=600,
        only=["data", "encode", "sae"],
    )
    assert outcome == {"data": "ran", "encode": "ran", "sae": "ran"}
    data = tmp_path / "artifacts/iu/data"
    written = pd.read_csv(data / "images.csv", dtype={"dicom_id": str})
    assert set(written["dicom_id"]) == kept
    drops = pd.read_csv(data / "drop_table.csv").set_index("reason")
    assert drops.loc["report lists no image", "studies"] == 104
    assert drops.loc["image file missing", "images"] > 3000  # every frontal image of the other reports
    studies = pd.read_csv(data / "studies.csv")
    assert set(studies["study_id"]) == set(written["study_id"])
    assert (data / "reports" / studies["report_path"].iloc[0]).is_file()
    tokens = np.load(tmp_path / "artifacts/iu/encode/class_tokens.npy")
    assert tokens.shape == (len(written), 32)
    assert (tmp_path / "artifacts/iu/sae/sae_rad_main/sae_weights.safetensors").is_file()
