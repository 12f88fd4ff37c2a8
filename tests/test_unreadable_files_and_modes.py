"""A truncated image in the example grid, and the permissions of atomically written weights."""

from __future__ import annotations

import io
import os
import stat

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from saerad.io import atomic_path  # noqa: E402
from saerad.plots import image_grid  # noqa: E402


def _jpeg(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (size, size), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG")
    return buffer.getvalue()


def test_truncated_image_gets_a_named_placeholder_instead_of_stopping_the_grid(tmp_path):
    good, truncated = tmp_path / "good.jpg", tmp_path / "s50414267-truncated.jpg"
    good.write_bytes(_jpeg())
    truncated.write_bytes(_jpeg()[: len(_jpeg()) // 2])  # the header is intact, as a header-only check sees it
    with Image.open(truncated):  # opens fine: only decoding fails
        pass
    with pytest.warns(UserWarning, match=r"s50414267-truncated\.jpg: cannot be shown \(OSError: image file is trunc"):
        figure = image_grid([good, truncated], ["PA · fine", "AP · cut off"], columns=2)
    first, second = figure.axes[:2]
    assert len(first.images) == 1 and len(second.images) == 0
    assert [text.get_text() for text in second.texts] == ["unreadable:\ns50414267-truncated.jpg"]
    assert "cut off" in second.get_title()
    plt.close(figure)


def test_weights_written_through_a_temporary_file_get_the_usual_mode(tmp_path):
    from saerad.sae import make_config
    from saerad.sae.models import build_sae
    from saerad.sae.saelens_format import WEIGHTS_FILENAME, save_sae

    umask = os.umask(0o022)
    os.umask(umask)
    expected = 0o666 & ~umask
    save_sae(build_sae(make_config("sae_rad", d_in=4, expansion_factor=2, seed=0)), tmp_path / "sae")
    assert stat.S_IMODE((tmp_path / "sae" / WEIGHTS_FILENAME).stat().st_mode) == expected  # safetensors made 0600
    assert stat.S_IMODE((tmp_path / "sae" / "cfg.json").stat().st_mode) == expected
    # Any writer that makes its own private file is corrected after it is done.
    with atomic_path(tmp_path / "private.bin") as temporary:
        temporary.unlink()
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(descriptor)
    assert stat.S_IMODE((tmp_path / "private.bin").stat().st_mode) == expected
