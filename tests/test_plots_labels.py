"""Label placement and image rows of the features chapter's figures."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from PIL import Image  # noqa: E402

from saerad.plots import image_rows, place_labels  # noqa: E402


def _boxes(figure, annotations):
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    # The text's own box; an annotation's extent also covers its leader line, which may pass near other labels.
    return [Text.get_window_extent(annotation, renderer) for annotation in annotations]


def test_labels_of_crowded_points_do_not_overlap_each_other_or_the_points():
    x = np.array([14.0, 14.3, 14.6, 13.8, 30, 31, 60, 8, 8.4, 8.8])
    y = np.array([0.50, 0.52, 0.50, 0.55, 0.7, 0.72, 0.9, 0.3, 0.32, 0.30])
    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.scatter(x, y)
    axis.set_xscale("log")
    axis.set_ylim(0, 1.05)
    annotations = place_labels(axis, x, y, [f"dictionary_{i}" for i in range(len(x))])
    boxes = _boxes(figure, annotations)
    assert len(boxes) == len(x)
    assert not any(boxes[i].overlaps(boxes[j]) for i in range(len(boxes)) for j in range(i + 1, len(boxes)))
    points = axis.transData.transform(np.column_stack([x, y]))
    assert not any(box.contains(px, py) for box in boxes for px, py in points)
    frame = axis.get_window_extent(figure.canvas.get_renderer())
    assert all(frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1 for box in boxes)
    plt.close(figure)


def test_place_labels_rejects_mismatched_lengths():
    figure, axis = plt.subplots()
    with pytest.raises(ValueError, match="2 x, 2 y and 1 labels"):
        place_labels(axis, [1, 2], [1, 2], ["one"])
    plt.close(figure)


def test_image_rows_draws_one_row_per_subject_and_checks_its_captions(tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(np.full((16, 16), 128, dtype=np.uint8)).save(path)
    figure = image_rows([[path, path], [path]], ["feature 1\n(pacemaker)", "feature 2"], [["a = 1", "a = 2"], ["a = 3"]],
                        columns=3, size=1.0)
    assert figure.get_size_inches()[0] == pytest.approx(1.1 + 3 * 1.0)
    shown = [axis for axis in figure.axes if axis.images]
    assert [axis.get_xlabel() for axis in shown] == ["a = 1", "a = 2", "a = 3"]
    plt.close(figure)
    with pytest.raises(ValueError, match="row 1 has 1 images and 2 captions"):
        image_rows([[path], [path]], ["a", "b"], [["x"], ["y", "z"]])
