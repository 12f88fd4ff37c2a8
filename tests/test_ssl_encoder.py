"""The self-supervised encoder trainer (issue 21): pixels only, every recipe trains, resumes exactly, loads as the book loads encoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from saerad.encode import ssl_encoder
from saerad.encode.encoder import ClassTokenEncoder

TINY = ["--patients", "3", "--image-size", "64", "--batch-size", "4", "--monitor-patients", "0", "--warmup", "1",
        "--log-every", "1", "--threads", "1"]


def _train(tmp_path, recipe, *extra):
    out = tmp_path / recipe
    ssl_encoder.main(["--recipe", recipe, "--out", str(out), *TINY, *extra])
    return out


def test_training_world_is_pixels_only():
    images = ssl_encoder.render_world(2, 64, seed=11)
    assert isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 3
    dataset = ssl_encoder.PixelDataset(images)
    assert set(vars(dataset)) == {"images"}
    for i in range(len(dataset)):
        item = dataset[i]
        assert type(item) is torch.Tensor and item.shape == (1, 64, 64) and item.dtype == torch.float32
        assert 0.0 <= float(item.min()) and float(item.max()) <= 1.0
    with pytest.raises(ValueError):
        ssl_encoder.PixelDataset(images.astype(np.float32))


def test_trainer_iterates_only_the_pixel_dataset(tmp_path, monkeypatch):
    served = []

    class Spy(ssl_encoder.PixelDataset):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            served.append(item)
            return item

    monkeypatch.setattr(ssl_encoder, "PixelDataset", Spy)
    _train(tmp_path, "simclr", "--steps", "2")
    assert len(served) == 2 * 4
    assert all(type(item) is torch.Tensor and item.shape == (1, 64, 64) for item in served)


@pytest.mark.parametrize("recipe", sorted(ssl_encoder.RECIPES))
def test_each_recipe_trains_and_changes_the_weights(tmp_path, recipe):
    out = _train(tmp_path, recipe, "--steps", "2")
    trained = load_file(out / "model.safetensors")
    initial = ssl_encoder.make_encoder(256, seed=0).state_dict()
    changed = [name for name, tensor in trained.items()
               if name in initial and tensor.is_floating_point() and not torch.equal(tensor, initial[name])]
    assert len(changed) > 10
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "training.json", "README.md"):
        assert (out / name).exists()
    record = (out / "training.json").read_text()
    assert '"labels_used_in_training": "none (pixels only)"' in record
    assert np.isfinite([row["loss"] for row in __import__("json").loads(record)["loss_curve"]]).all()


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    straight = _train(tmp_path / "a", "mae-vicreg", "--steps", "4")
    resumed = tmp_path / "b" / "mae-vicreg"
    ssl_encoder.main(["--recipe", "mae-vicreg", "--out", str(resumed), *TINY, "--steps", "4", "--interrupt-after", "2"])
    assert (resumed / "checkpoint.pt").exists() and not (resumed / "model.safetensors").exists()
    ssl_encoder.main(["--recipe", "mae-vicreg", "--out", str(resumed), *TINY, "--steps", "4", "--resume"])
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_saved_folder_loads_through_class_token_encoder(tmp_path):
    out = _train(tmp_path, "vicreg", "--steps", "1")
    encoder = ClassTokenEncoder(out)
    images = ssl_encoder.render_world(1, 64, seed=5)
    tokens = encoder.encode_images([Image.fromarray(image, mode="L") for image in images])
    assert tokens.shape == (len(images), 256) and np.isfinite(tokens).all()
    processor = encoder.processor.to_dict()
    direct = ssl_encoder.encode_array(encoder.model, images, processor["image_mean"][0], processor["image_std"][0])
    np.testing.assert_allclose(tokens, direct, rtol=1e-3, atol=1e-3)


def test_augmentation_never_mirrors():
    image = torch.zeros(64, 1, 64, 64)
    image[..., :24] = 1.0  # bright on the image's left only
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        out = ssl_encoder.augment(image, generator)
        left, right = out[..., :32].mean(dim=(1, 2, 3)), out[..., 32:].mean(dim=(1, 2, 3))
        assert bool((left > right + 0.3).all())
    mask = ssl_encoder.patch_mask(2, 64, 16, 0.5, generator)
    assert mask.shape == (2, 1, 64, 64) and float(mask.mean()) == pytest.approx(0.5)


def test_matching_cells_pairs_the_same_image_points():
    features = torch.randn(3, 8, 4, 4)
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3)
    a, b = ssl_encoder.matching_cells(features, features, identity, identity)
    assert a.shape == (48, 8) and torch.allclose(a, b, atol=1e-5)
    # View 2 is view 1 moved by one cell to the right: cell (i, j) of view 1 is cell (i, j - 1) of view 2.
    shifted = identity.clone()
    shifted[:, 0, 2] = 0.5
    second = torch.roll(features, shifts=-1, dims=3)
    a, b = ssl_encoder.matching_cells(features, second, identity, shifted)
    assert len(a) == 36 and torch.allclose(a, b, atol=1e-5)
