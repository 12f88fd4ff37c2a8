"""Catalogue of everything SynthCXR can plant in a study.

This module is the single source of truth for the names other code keys on:
the canonical finding and device names (``FINDINGS``), their attributes, the
nuisance factors, the 14 CheXpert observations and the mapping from a stated
report fact to CheXpert observations.  It also holds the population dynamics
(onset / persistence probabilities) so that prevalences can be tuned in one
place.

Side conventions
----------------
``left`` / ``right`` always mean the *patient's* side.  Radiographs are
displayed with the patient's right on the viewer's left, so in a frontal image
a right-sided finding lies in the left half of the pixel array (small column
indices).
"""

from __future__ import annotations

from dataclasses import dataclass

# Pathology findings first, then devices; devices are findings too as far as
# the ground-truth tables are concerned (one 0/1 column each).
PATHOLOGY_FINDINGS: tuple[str, ...] = (
    "cardiomegaly",
    "enlarged_cardiomediastinum",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "edema",
    "atelectasis",
    "lung_nodule",
    "lung_mass",
    "rib_fracture",
    "pleural_thickening",
)
DEVICES: tuple[str, ...] = (
    "pacemaker",
    "central_line",
    "endotracheal_tube",
    "nasogastric_tube",
    "sternotomy_wires",
)
FINDINGS: tuple[str, ...] = PATHOLOGY_FINDINGS + DEVICES

# Report facts may also mention a few nuisance items a radiologist comments on
# (a nipple piercing, scoliosis); they have no CheXpert observation.
FACT_SUBJECTS: tuple[str, ...] = FINDINGS + ("piercing", "scoliosis")

# Attribute name -> allowed values (tuples) or a type name for numeric values.
# Every present finding in a state carries exactly these attribute keys.
FINDING_ATTRIBUTES: dict[str, dict[str, object]] = {
    "cardiomegaly": {"severity": ("mild", "moderate", "severe")},
    "enlarged_cardiomediastinum": {"severity": ("mild", "moderate")},
    "pleural_effusion": {
        "laterality": ("left", "right", "bilateral"),
        "size": ("small", "moderate", "large"),
    },
    "pneumothorax": {"laterality": ("left", "right"), "size": ("small", "large")},
    "consolidation": {
        "laterality": ("left", "right"),
        "zone": ("upper", "middle", "lower"),
        "extent": ("small", "large"),
    },
    "edema": {"severity": ("mild", "moderate", "severe")},
    "atelectasis": {"laterality": ("left", "right", "bibasilar")},
    "lung_nodule": {
        "laterality": ("left", "right"),
        "zone": ("upper", "middle", "lower"),
        "size_mm": "int",
    },
    "lung_mass": {
        "laterality": ("left", "right"),
        "zone": ("upper", "middle", "lower"),
        "size_mm": "int",
    },
    "rib_fracture": {"laterality": ("left", "right"), "rib": "int"},
    "pleural_thickening": {
        "laterality": ("left", "right", "bilateral"),
        "location": ("apical", "lateral"),
    },
    "pacemaker": {"generator_side": ("left", "right"), "leads": "int"},
    "central_line": {
        "side": ("left", "right"),
        "approach": ("jugular", "subclavian"),
        "tip": ("svc", "right_atrium", "too_high"),
    },
    "endotracheal_tube": {
        "tip": ("appropriate", "low", "high"),
        "tip_cm_above_carina": "float",
    },
    "nasogastric_tube": {"tip": ("stomach", "oesophagus")},
    "sternotomy_wires": {"count": "int"},
}

# Severity-like attribute used to judge "improved/worsened" between studies;
# the tuple order is from least to most severe.
SEVERITY_ATTRIBUTE: dict[str, str] = {
    "cardiomegaly": "severity",
    "enlarged_cardiomediastinum": "severity",
    "pleural_effusion": "size",
    "pneumothorax": "size",
    "consolidation": "extent",
    "edema": "severity",
}

# Findings that have a pixel mask in frontal images (all of them: even the
# heart and mediastinum have an extent worth localising).
LOCALISABLE: tuple[str, ...] = FINDINGS

NUISANCE_COLUMNS: tuple[str, ...] = (
    "age",
    "sex",
    "setting",
    "habitus",
    "patient_orientation",
    "rotation_deg",
    "exposure_brightness",
    "exposure_contrast",
    "exposure_gamma",
    "inverted",
    "piercing",
    "scoliosis",
)

HABITUS = ("thin", "average", "large")
SCOLIOSIS = ("none", "dextro", "levo")
SETTINGS = ("icu", "inpatient", "outpatient")

# The 14 observations, in the column order of mimic-cxr-2.0.0-chexpert.csv.gz;
# one definition shared with the MIMIC loader.
from saerad.mimic.loader import CHEXPERT_OBSERVATIONS  # noqa: E402

# Observations that count as "pathology" for the No Finding rule; like the
# CheXpert labeler, support devices do not prevent "No Finding".
CHEXPERT_PATHOLOGIES: tuple[str, ...] = tuple(
    o for o in CHEXPERT_OBSERVATIONS if o not in ("No Finding", "Support Devices")
)

FINDING_TO_CHEXPERT: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("Cardiomegaly",),
    "enlarged_cardiomediastinum": ("Enlarged Cardiomediastinum",),
    "pleural_effusion": ("Pleural Effusion",),
    "pneumothorax": ("Pneumothorax",),
    "consolidation": ("Consolidation", "Lung Opacity"),
    "edema": ("Edema", "Lung Opacity"),
    "atelectasis": ("Atelectasis", "Lung Opacity"),
    "lung_nodule": ("Lung Lesion",),
    "lung_mass": ("Lung Lesion",),
    "rib_fracture": ("Fracture",),
    "pleural_thickening": ("Pleural Other",),
    "pacemaker": ("Support Devices",),
    "central_line": ("Support Devices",),
    "endotracheal_tube": ("Support Devices",),
    "nasogastric_tube": ("Support Devices",),
    "sternotomy_wires": ("Support Devices",),
    "piercing": (),
    "scoliosis": (),
}

# A consolidation fact can be worded as "pneumonia" or a plain "opacity";
# the wording, kept in the fact's ``term`` attribute, changes the labels.
TERM_TO_CHEXPERT: dict[str, tuple[str, ...]] = {
    "pneumonia": ("Pneumonia", "Lung Opacity"),
    "opacity": ("Lung Opacity",),
}


def chexpert_observations_for_fact(fact: dict) -> tuple[str, ...]:
    """CheXpert observations touched by one stated report fact.

    Parameters
    ----------
    fact : dict
        A sentence fact with keys ``finding``, ``present`` and ``attributes``.

    Returns
    -------
    tuple of str
        Observation names.  A negated fact only touches the primary
        observation: like the CheXpert labeler, "no focal consolidation"
        negates Consolidation but says nothing about Lung Opacity.
    """
    term = (fact.get("attributes") or {}).get("term")
    observations = TERM_TO_CHEXPERT.get(term) or FINDING_TO_CHEXPERT.get(fact["finding"], ())
    if not fact["present"]:
        return observations[:1]
    return observations


def chexpert_labels_from_facts(facts) -> dict[str, float]:
    """Aggregate sentence facts into one CheXpert label row.

    Parameters
    ----------
    facts : iterable of dict
        Every fact stated anywhere in the report.

    Returns
    -------
    dict
        Observation -> 1.0 (positive), -1.0 (uncertain), 0.0 (negated) or NaN
        (not mentioned).  Positive beats uncertain beats negated, as in the
        CheXpert labeler's aggregation.  "No Finding" is 1.0 when no pathology
        is positive or uncertain, else NaN.
    """
    rank = {1.0: 3, -1.0: 2, 0.0: 1}
    labels: dict[str, float] = {o: float("nan") for o in CHEXPERT_OBSERVATIONS}
    for fact in facts:
        if not fact["present"]:
            value = 0.0
        elif fact.get("certainty") == "uncertain":
            value = -1.0
        else:
            value = 1.0
        for obs in chexpert_observations_for_fact(fact):
            current = labels[obs]
            if current != current or rank[value] > rank[current]:  # NaN check
                labels[obs] = value
    if not any(labels[o] in (1.0, -1.0) for o in CHEXPERT_PATHOLOGIES):
        labels["No Finding"] = 1.0
    return labels


@dataclass(frozen=True)
class FindingDynamics:
    """How a finding appears and disappears along a patient's studies.

    Attributes
    ----------
    onset : float
        Base probability that the finding is present at a patient's first
        study, and that it newly appears at a later study.
    persist : float
        Probability that a present finding is still present at the next study.
    icu, inpatient, outpatient : float
        Multipliers on ``onset`` by care setting.
    """

    onset: float
    persist: float
    icu: float = 1.0
    inpatient: float = 1.0
    outpatient: float = 1.0


# Tuned by simulation (see tests) so that frontal-image prevalences land in the
# ranges the project wants: most findings 4-25 %, rare ones >= 3 %.
FINDING_DYNAMICS: dict[str, FindingDynamics] = {
    "cardiomegaly": FindingDynamics(0.065, 0.93, icu=1.4, inpatient=1.2, outpatient=0.6),
    "enlarged_cardiomediastinum": FindingDynamics(0.038, 0.85, icu=1.3, inpatient=1.1, outpatient=0.7),
    "pleural_effusion": FindingDynamics(0.085, 0.75, icu=1.8, inpatient=1.2, outpatient=0.35),
    "pneumothorax": FindingDynamics(0.019, 0.55, icu=1.8, inpatient=1.0, outpatient=0.5),
    "consolidation": FindingDynamics(0.09, 0.6, icu=1.5, inpatient=1.3, outpatient=0.6),
    "edema": FindingDynamics(0.055, 0.6, icu=2.0, inpatient=1.2, outpatient=0.3),
    "atelectasis": FindingDynamics(0.12, 0.6, icu=1.7, inpatient=1.2, outpatient=0.5),
    "lung_nodule": FindingDynamics(0.033, 0.95, icu=0.9, inpatient=1.0, outpatient=1.1),
    "lung_mass": FindingDynamics(0.015, 0.97, icu=0.8, inpatient=1.2, outpatient=1.0),
    "rib_fracture": FindingDynamics(0.014, 0.9, icu=1.5, inpatient=1.0, outpatient=0.7),
    "pleural_thickening": FindingDynamics(0.011, 0.98, icu=0.8, inpatient=1.0, outpatient=1.1),
    "pacemaker": FindingDynamics(0.03, 1.0, icu=1.2, inpatient=1.1, outpatient=0.8),
    "central_line": FindingDynamics(0.095, 0.7, icu=3.0, inpatient=0.8, outpatient=0.05),
    "endotracheal_tube": FindingDynamics(0.066, 0.65, icu=3.6, inpatient=0.2, outpatient=0.0),
    "nasogastric_tube": FindingDynamics(0.035, 0.6, icu=1.5, inpatient=0.4, outpatient=0.0),
    "sternotomy_wires": FindingDynamics(0.022, 1.0, icu=1.2, inpatient=1.0, outpatient=0.9),
}

# Latent patient traits that correlate findings the way real comorbidity does.
# trait -> (probability by setting, {finding: onset multiplier}).
PATIENT_TRAITS: dict[str, tuple[dict[str, float], dict[str, float]]] = {
    "heart_failure": (
        {"icu": 0.35, "inpatient": 0.25, "outpatient": 0.08},
        {"cardiomegaly": 3.0, "edema": 3.0, "pleural_effusion": 2.0, "pacemaker": 1.5},
    ),
    "cardiac_surgery": (
        {"icu": 0.12, "inpatient": 0.08, "outpatient": 0.05},
        {"sternotomy_wires": 9.0, "pacemaker": 3.0, "pleural_effusion": 1.3,
         "atelectasis": 1.4, "enlarged_cardiomediastinum": 1.5},
    ),
    "trauma": (
        {"icu": 0.10, "inpatient": 0.04, "outpatient": 0.03},
        {"rib_fracture": 9.0, "pneumothorax": 5.0, "pleural_effusion": 1.3},
    ),
    "malignancy": (
        {"icu": 0.05, "inpatient": 0.08, "outpatient": 0.06},
        {"lung_mass": 8.0, "lung_nodule": 3.0, "pleural_effusion": 1.5,
         "pleural_thickening": 2.0},
    ),
}

# Physical scale of the phantom: one normalised image unit (half the image
# width) in centimetres; used to phrase tube positions in cm.
CM_PER_UNIT = 18.0
