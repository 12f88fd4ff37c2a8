"""The encoder loads a tiny DINOv2 checkpoint made here through the path that loads Rad-DINO."""

import numpy as np
import pytest
import torch
from PIL import Image

from saerad.encode.encoder import ClassTokenEncoder, EncoderError, encode_files, norm_scale


def _images(folder, count, size=40):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


def test_class_token_is_the_pooler_output(tiny_encoder_dir, tmp_path):
    encoder = ClassTokenEncoder(tiny_encoder_dir)
    assert encoder.dim == 32
    images = [Image.open(p) for p in _images(tmp_path / "img", 3)]
    tokens = encoder.encode_images(images)
    assert tokens.shape == (3, 32) and tokens.dtype == np.float32
    pixels = encoder.preprocess(images)
    assert pixels.shape == (3, 3, 32, 32)
    with torch.no_grad():
        output = encoder.model(pixel_values=pixels)
        # Dinov2Model layer-norms the sequence; the pooler output is its CLS position.
        expected = output.last_hidden_state[:, 0]
    np.testing.assert_allclose(tokens, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_encode_files_in_chunks_matches_one_batch_and_records_unreadable(tiny_encoder_dir, tmp_path):
    encoder = ClassTokenEncoder(tiny_encoder_dir)
    paths = _images(tmp_path / "img", 7)
    paths[3].write_bytes(b"not a jpeg")
    result = encode_files(encoder, paths, tmp_path / "out", batch_size=2, chunk_size=3, progress=False)
    tokens = np.load(result.tokens_path)
    assert tokens.shape == (7, 32)
    assert [row for row, _ in result.failed] == [3] and np.isnan(tokens[3]).all()
    good = [p for i, p in enumerate(paths) if i != 3]
    direct = encoder.encode_images([Image.open(p) for p in good])
    np.testing.assert_allclose(tokens[[0, 1, 2, 4, 5, 6]], direct, rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "out/chunks").glob("tokens_*.npy")) == [
        "tokens_000000.npy", "tokens_000001.npy", "tokens_000002.npy"]


def test_resume_reuses_finished_chunks(tiny_encoder_dir, tmp_path, monkeypatch):
    encoder = ClassTokenEncoder(tiny_encoder_dir)
    paths = _images(tmp_path / "img", 6)
    first = encode_files(encoder, paths, tmp_path / "out", chunk_size=2, progress=False)
    before = np.load(first.tokens_path)
    # Simulate a run killed after the first chunk: later chunks are gone.
    for name in ("tokens_000001.npy", "failed_000001.json", "tokens_000002.npy", "failed_000002.json"):
        (tmp_path / "out/chunks" / name).unlink()
    calls = []
    original = encoder.encode_pixels
    monkeypatch.setattr(encoder, "encode_pixels", lambda pixels: calls.append(len(pixels)) or original(pixels))
    second = encode_files(encoder, paths, tmp_path / "out", chunk_size=2, progress=False)
    assert sum(calls) == 4, "only the two missing chunks should be encoded again"
    np.testing.assert_array_equal(np.load(second.tokens_path), before)


def test_changed_image_list_discards_old_chunks(tiny_encoder_dir, tmp_path):
    encoder = ClassTokenEncoder(tiny_encoder_dir)
    paths = _images(tmp_path / "img", 4)
    encode_files(encoder, paths, tmp_path / "out", chunk_size=2, progress=False)
    result = encode_files(encoder, paths[::-1], tmp_path / "out", chunk_size=2, progress=False)
    np.testing.assert_allclose(np.load(result.tokens_path)[0], encoder.encode_images([Image.open(paths[3])])[0],
                               rtol=1e-4, atol=1e-5)


def test_missing_local_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderError, match="does not exist"):
        ClassTokenEncoder(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="cannot load encoder"):
        ClassTokenEncoder(tmp_path / "empty")


def test_hub_id_is_not_fetched_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError, match="cannot load encoder 'microsoft/rad-dino'"):
        ClassTokenEncoder("microsoft/rad-dino", local_files_only=True)


def test_norm_scale_gives_sqrt_dim_mean_norm():
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(200, 16)).astype(np.float32) * 7.0
    tokens[5] = np.nan
    scale = norm_scale(tokens)
    finite = tokens[np.isfinite(tokens).all(axis=1)]
    assert np.linalg.norm(finite * scale, axis=1).mean() == pytest.approx(4.0, rel=1e-5)


def test_same_inputs_give_byte_identical_tokens(tiny_encoder_dir, tmp_path):
    encoder = ClassTokenEncoder(tiny_encoder_dir)
    paths = _images(tmp_path / "img", 5)
    first = np.load(encode_files(encoder, paths, tmp_path / "a", chunk_size=2, progress=False).tokens_path)
    again = ClassTokenEncoder(tiny_encoder_dir)
    second = np.load(encode_files(again, paths, tmp_path / "b", chunk_size=2, progress=False).tokens_path)
    assert first.tobytes() == second.tobytes()


def test_load_class_tokens_selects_a_split_scales_and_skips_unreadable(tmp_path):
    import pandas as pd

    from saerad.encode.tokens import load_class_tokens, save_index_and_scale

    stage = tmp_path / "encode"
    stage.mkdir()
    tokens = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
    tokens[2] = np.nan
    images = pd.DataFrame({"dicom_id": list("abcd"), "subject_id": 1, "study_id": [1, 1, 2, 3],
                           "split": ["train", "test", "train", "train"]})
    np.save(stage / "class_tokens.npy", tokens)
    record = save_index_and_scale(stage, images, tokens, "tiny")
    selected, index = load_class_tokens(tmp_path, "train")
    assert index["dicom_id"].tolist() == ["a", "d"]
    np.testing.assert_allclose(selected, tokens[[0, 3]] * record["scale"], rtol=1e-6)
    assert np.linalg.norm(selected, axis=1).mean() == pytest.approx(np.sqrt(3), rel=1e-5)
