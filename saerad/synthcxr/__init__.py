"""SynthCXR: a deterministic synthetic chest-radiograph world with known ground truth.

The world is written to disk in the exact MIMIC-CXR-JPG 2.0.0 layout (plus the
unzipped MIMIC-CXR report files), so the MIMIC loaders of this project can be
exercised end to end without credentialed data, and every finding, device and
nuisance factor of every image is known.

Examples
--------
>>> from saerad.synthcxr import SynthCXRConfig, generate_world
>>> summary = generate_world(SynthCXRConfig(n_patients=20), "/tmp/synthcxr")  # doctest: +SKIP
"""

from .catalogue import (
    CHEXPERT_OBSERVATIONS,
    DEVICES,
    FINDING_ATTRIBUTES,
    FINDING_TO_CHEXPERT,
    FINDINGS,
    NUISANCE_COLUMNS,
    PATHOLOGY_FINDINGS,
    chexpert_labels_from_facts,
)
from .render import render_frontal, render_lateral
from .writer import ImageRecord, StudyRecord, SynthCXRConfig, generate_world, sample_studies

__all__ = [
    "CHEXPERT_OBSERVATIONS",
    "DEVICES",
    "FINDING_ATTRIBUTES",
    "FINDING_TO_CHEXPERT",
    "FINDINGS",
    "ImageRecord",
    "NUISANCE_COLUMNS",
    "PATHOLOGY_FINDINGS",
    "StudyRecord",
    "SynthCXRConfig",
    "chexpert_labels_from_facts",
    "generate_world",
    "render_frontal",
    "render_lateral",
    "sample_studies",
]
