"""Patients, their longitudinal trajectories and the per-image states.

A *state* is a JSON-serialisable dict holding the full ground truth of one
study (and, with the image-level nuisance filled in, of one image)::

    {
      "subject_id": 10000032, "study_id": 50414267, "study_index": 0,
      "study_datetime": "2180-05-06T21:30:14.531",
      "age": 67, "sex": "F", "setting": "icu", "traits": ["heart_failure"],
      "clinical": {"reason": "dyspnea_chf", "fever": False},
      "indication": "___F with shortness of breath and leg swelling  // eval for CHF",
      "findings": {"pleural_effusion": {"present": True, "laterality": "right",
                                        "size": "small", "geometry": {...}},
                   "pneumothorax": {"present": False}, ...},
      "anatomy": {...per-patient body shape...},
      "nuisance": {"habitus": "average", "scoliosis": "none", ...,
                   "view_position": "AP", "rotation_deg": 1.2, ...},
    }

Image states additionally carry ``dicom_id``, ``view_position`` and ``split``
at the top level.

Randomness is drawn from per-patient streams so that patient *i* is the same
whatever ``n_patients`` is (see :func:`patient_rng`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterator

import numpy as np

from .catalogue import (
    DEVICES,
    FINDING_ATTRIBUTES,
    FINDING_DYNAMICS,
    FINDINGS,
    HABITUS,
    PATIENT_TRAITS,
    SCOLIOSIS,
    SETTINGS,
)

# Independent random streams per patient; the numbers are part of the seed
# derivation, so changing them changes every generated world.
STREAM_TRAJECTORY = 0
STREAM_IDS = 1
STREAM_REPORT = 2
STREAM_RENDER = 3


def patient_rng(seed: int, patient_index: int, stream: int, *extra: int) -> np.random.Generator:
    """Random generator for one patient and purpose.

    Parameters
    ----------
    seed : int
        World seed (``SynthCXRConfig.seed``).
    patient_index : int
        0-based patient position; the stream does not depend on how many
        patients the world has.
    stream : int
        One of the ``STREAM_*`` constants.
    *extra : int
        Further key parts (e.g. study and image index for rendering).
    """
    key = (int(patient_index), int(stream)) + tuple(int(e) for e in extra)
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


@dataclass
class ImagePlan:
    """One image of a study before rendering."""

    dicom_id: str
    view_position: str          # PA, AP, LATERAL or LL
    view_code_meaning: str      # DICOM ViewCodeSequence meaning
    patient_orientation: str    # Erect or Recumbent
    state: dict                 # study state with image-level nuisance filled in


@dataclass
class StudyPlan:
    """One study: ids, time, ground-truth state and its images."""

    subject_id: int
    study_id: int
    study_index: int
    study_datetime: datetime
    procedure: str              # PerformedProcedureStepDescription
    state: dict
    images: list[ImagePlan] = field(default_factory=list)


@dataclass
class PatientPlan:
    """A patient with a split and a time-ordered list of studies."""

    index: int
    subject_id: int
    split: str
    studies: list[StudyPlan]


DEFAULT_ANATOMY = {
    "cage_width": 0.78,
    "apex_y": -0.78,
    "dome_right": 0.42,
    "dome_left_drop": 0.04,
    "heart_width": 0.35,
    "heart_height": 0.23,
    "heart_cx": 0.11,
    "heart_angle_deg": 28.0,
    "mediastinum_width": 0.125,
    "carina_y": -0.30,
    "rib_phase": 0.0,
    "rib_spacing": 0.135,
    "body_width": 0.93,
    "soft_tissue": 0.42,
}

DEFAULT_NUISANCE = {
    "habitus": "average",
    "scoliosis": "none",
    "scoliosis_amplitude": 0.0,
    "piercing": False,
    "piercing_side": "left",
    "view_position": "PA",
    "patient_orientation": "Erect",
    "rotation_deg": 0.0,
    "exposure_brightness": 0.0,
    "exposure_contrast": 1.0,
    "exposure_gamma": 1.0,
    "inverted": False,
}


def normal_state(sex: str = "M", age: int = 60) -> dict:
    """A healthy PA study state with default anatomy; handy for previews/tests."""
    return {
        "subject_id": 10000000, "study_id": 50000000, "study_index": 0,
        "study_datetime": "2150-01-01T12:00:00.000", "age": age, "sex": sex,
        "setting": "outpatient", "traits": [],
        "clinical": {"reason": "chest_pain", "fever": False}, "indication": "___M with chest pain",
        "findings": {name: {"present": False} for name in FINDINGS},
        "anatomy": dict(DEFAULT_ANATOMY),
        "nuisance": dict(DEFAULT_NUISANCE),
    }


def _draw_anatomy(rng: np.random.Generator, habitus: str, sex: str) -> dict:
    # Habitus mostly changes how much soft tissue overlies the lungs and how
    # wide the body outline is; large patients also breathe in less deeply.
    tissue = {"thin": 0.36, "average": 0.42, "large": 0.50}[habitus]
    body = {"thin": 0.86, "average": 0.93, "large": 0.99}[habitus]
    dome_shift = {"thin": -0.03, "average": 0.0, "large": 0.05}[habitus]
    return {
        "cage_width": float(rng.uniform(0.74, 0.81) * (0.97 if sex == "F" else 1.0)),
        "apex_y": float(rng.uniform(-0.81, -0.75)),
        "dome_right": float(rng.uniform(0.38, 0.46) + dome_shift),
        "dome_left_drop": float(rng.uniform(0.02, 0.06)),
        "heart_width": float(rng.uniform(0.33, 0.37)),
        "heart_height": float(rng.uniform(0.21, 0.25)),
        "heart_cx": float(rng.uniform(0.09, 0.13)),
        "heart_angle_deg": float(rng.uniform(22, 34)),
        "mediastinum_width": float(rng.uniform(0.115, 0.135)),
        "carina_y": float(rng.uniform(-0.34, -0.27)),
        "rib_phase": float(rng.uniform(-0.02, 0.02)),
        "rib_spacing": float(rng.uniform(0.125, 0.145)),
        "body_width": body,
        "soft_tissue": float(tissue + rng.uniform(-0.02, 0.02)),
    }


def _choice(rng: np.random.Generator, values, p=None):
    return values[int(rng.choice(len(values), p=p))]


def _draw_attributes(name: str, rng: np.random.Generator) -> dict:
    """Attributes of a newly appearing finding, plus stable render geometry."""
    side = _choice(rng, ("left", "right"))
    zone = _choice(rng, ("upper", "middle", "lower"), p=(0.35, 0.35, 0.3))
    geometry = {"u": float(rng.uniform(0, 1)), "v": float(rng.uniform(0, 1)),
                "w": float(rng.uniform(0, 1))}
    if name == "cardiomegaly":
        attrs = {"severity": _choice(rng, ("mild", "moderate", "severe"), p=(0.45, 0.35, 0.2))}
    elif name == "enlarged_cardiomediastinum":
        attrs = {"severity": _choice(rng, ("mild", "moderate"), p=(0.55, 0.45))}
    elif name == "pleural_effusion":
        attrs = {"laterality": _choice(rng, ("left", "right", "bilateral"), p=(0.3, 0.35, 0.35)),
                 "size": _choice(rng, ("small", "moderate", "large"), p=(0.5, 0.35, 0.15))}
    elif name == "pneumothorax":
        attrs = {"laterality": side, "size": _choice(rng, ("small", "large"), p=(0.65, 0.35))}
    elif name == "consolidation":
        attrs = {"laterality": side, "zone": zone,
                 "extent": _choice(rng, ("small", "large"), p=(0.55, 0.45))}
    elif name == "edema":
        attrs = {"severity": _choice(rng, ("mild", "moderate", "severe"), p=(0.45, 0.38, 0.17))}
    elif name == "atelectasis":
        attrs = {"laterality": _choice(rng, ("left", "right", "bibasilar"), p=(0.35, 0.25, 0.4))}
    elif name == "lung_nodule":
        attrs = {"laterality": side, "zone": zone, "size_mm": int(rng.integers(8, 26))}
    elif name == "lung_mass":
        attrs = {"laterality": side, "zone": zone, "size_mm": int(rng.integers(35, 75))}
    elif name == "rib_fracture":
        attrs = {"laterality": side, "rib": int(rng.integers(4, 10))}
    elif name == "pleural_thickening":
        attrs = {"laterality": _choice(rng, ("left", "right", "bilateral"), p=(0.35, 0.35, 0.3)),
                 "location": _choice(rng, ("apical", "lateral"), p=(0.5, 0.5))}
    elif name == "pacemaker":
        attrs = {"generator_side": _choice(rng, ("left", "right"), p=(0.82, 0.18)),
                 "leads": int(_choice(rng, (1, 2), p=(0.35, 0.65)))}
    elif name == "central_line":
        attrs = {"side": _choice(rng, ("right", "left"), p=(0.7, 0.3)),
                 "approach": _choice(rng, ("jugular", "subclavian"), p=(0.7, 0.3)),
                 "tip": _choice(rng, ("svc", "right_atrium", "too_high"), p=(0.64, 0.22, 0.14))}
    elif name == "endotracheal_tube":
        tip = _choice(rng, ("appropriate", "low", "high"), p=(0.74, 0.14, 0.12))
        attrs = {"tip": tip, "tip_cm_above_carina": _ett_distance(tip, rng)}
    elif name == "nasogastric_tube":
        attrs = {"tip": _choice(rng, ("stomach", "oesophagus"), p=(0.84, 0.16))}
    elif name == "sternotomy_wires":
        attrs = {"count": int(rng.integers(5, 8))}
    else:  # pragma: no cover - catalogue and code are kept in step
        raise KeyError(name)
    assert set(attrs) == set(FINDING_ATTRIBUTES[name])
    return {"present": True, **attrs, "geometry": geometry}


def _ett_distance(tip: str, rng: np.random.Generator) -> float:
    low, high = {"appropriate": (3.0, 6.0), "low": (0.3, 1.5), "high": (8.0, 10.5)}[tip]
    return round(float(rng.uniform(low, high)), 1)


def _step(values: tuple, current, rng: np.random.Generator, p_move: float):
    """Move an ordinal attribute one level up or down with probability p_move."""
    i = values.index(current)
    if rng.random() < p_move:
        i = int(np.clip(i + (1 if rng.random() < 0.5 else -1), 0, len(values) - 1))
    return values[i]


def _progress(name: str, finding: dict, rng: np.random.Generator) -> dict:
    """Evolve a persisting finding's attributes between consecutive studies."""
    f = copy.deepcopy(finding)
    if name in ("cardiomegaly", "edema"):
        f["severity"] = _step(FINDING_ATTRIBUTES[name]["severity"], f["severity"], rng, 0.25 if name == "cardiomegaly" else 0.45)
    elif name == "enlarged_cardiomediastinum":
        f["severity"] = _step(("mild", "moderate"), f["severity"], rng, 0.2)
    elif name == "pleural_effusion":
        f["size"] = _step(("small", "moderate", "large"), f["size"], rng, 0.4)
        if rng.random() < 0.1:
            f["laterality"] = "bilateral" if f["laterality"] != "bilateral" else _choice(rng, ("left", "right"))
    elif name == "pneumothorax":
        f["size"] = _step(("small", "large"), f["size"], rng, 0.35)
    elif name == "consolidation":
        f["extent"] = _step(("small", "large"), f["extent"], rng, 0.35)
    elif name in ("lung_nodule", "lung_mass") and rng.random() < 0.2:
        f["size_mm"] = int(f["size_mm"] + rng.integers(1, 5))
    elif name == "endotracheal_tube":
        # Malpositioned tubes are usually corrected after the report.
        if f["tip"] != "appropriate" and rng.random() < 0.75:
            f["tip"] = "appropriate"
        elif f["tip"] == "appropriate" and rng.random() < 0.08:
            f["tip"] = _choice(rng, ("low", "high"))
        f["tip_cm_above_carina"] = _ett_distance(f["tip"], rng)
    elif name == "central_line":
        if f["tip"] == "too_high" and rng.random() < 0.7:
            f["tip"] = "svc"
    elif name == "nasogastric_tube":
        if f["tip"] == "oesophagus" and rng.random() < 0.75:
            f["tip"] = "stomach"
    return f


def _onset_probability(name: str, patient: dict, findings_now: dict, scale: dict) -> float:
    dyn = FINDING_DYNAMICS[name]
    p = dyn.onset * getattr(dyn, patient["setting"])
    for trait in patient["traits"]:
        p *= PATIENT_TRAITS[trait][1].get(name, 1.0)
    # Enteric tubes mostly accompany intubation; ETT precedes NG in FINDINGS.
    if name == "nasogastric_tube" and findings_now.get("endotracheal_tube", {}).get("present"):
        p = max(p, 0.55)
    return float(min(0.95, p * float(scale.get(name, 1.0))))


def _evolve_findings(prev: dict | None, patient: dict, rng: np.random.Generator, scale: dict) -> dict:
    findings: dict[str, dict] = {}
    for name in FINDINGS:
        was = prev[name] if prev else {"present": False}
        # Both uniforms are drawn up front so a finding's keep/onset decision
        # uses the same numbers whichever branch applies.
        u_keep, u_onset = rng.random(), rng.random()
        if was["present"] and u_keep < FINDING_DYNAMICS[name].persist:
            findings[name] = _progress(name, was, rng)
        elif not was["present"] and u_onset < _onset_probability(name, patient, findings, scale):
            findings[name] = _draw_attributes(name, rng)
        else:
            findings[name] = {"present": False}
    return findings


def _clinical_reason(findings: dict, prev: dict | None, patient: dict, rng: np.random.Generator) -> dict:
    """Why the study was ordered; the report turns it into the INDICATION."""
    def new(name):
        return findings[name]["present"] and not (prev and prev[name]["present"])

    fever = bool(rng.random() < (0.6 if findings["consolidation"]["present"] else 0.08))
    candidates = []
    if new("endotracheal_tube"):
        candidates.append("ett_placement")
    if new("central_line"):
        candidates.append("line_placement")
    if new("nasogastric_tube"):
        candidates.append("ng_placement")
    if new("pacemaker"):
        candidates.append("pacemaker_placement")
    if new("sternotomy_wires"):
        candidates.append("post_op_cardiac")
    if candidates and rng.random() < 0.85:
        return {"reason": _choice(rng, tuple(candidates)), "fever": fever}
    if fever:
        return {"reason": "fever_pneumonia", "fever": True}
    if "trauma" in patient["traits"] and rng.random() < 0.7:
        return {"reason": "trauma", "fever": False}
    if "malignancy" in patient["traits"] and rng.random() < 0.6:
        return {"reason": "malignancy_followup", "fever": False}
    if "heart_failure" in patient["traits"] and rng.random() < 0.6:
        return {"reason": "dyspnea_chf", "fever": False}
    if patient["setting"] == "icu":
        return {"reason": _choice(rng, ("icu_followup", "respiratory_failure", "hypoxia")), "fever": False}
    if prev is not None and rng.random() < 0.4:
        return {"reason": "followup", "fever": False}
    return {"reason": _choice(rng, ("chest_pain", "cough", "dyspnea", "preop", "weakness")), "fever": False}


_INDICATIONS = {
    "ett_placement": ("{who} intubated  // ETT placement", "{who} s/p intubation, assess ETT position"),
    "line_placement": ("{who} s/p line placement, assess position", "{who} with new central line  // confirm placement"),
    "ng_placement": ("{who} with NG tube placement  // NGT placement", "{who} s/p OGT placement  // position?"),
    "pacemaker_placement": ("{who} s/p pacemaker placement  // assess lead position, r/o pneumothorax",),
    "post_op_cardiac": ("{who} s/p CABG  // eval for effusion, pneumothorax", "{who} s/p AVR, chest tubes removed  // ptx?"),
    "fever_pneumonia": ("{who} with fever and cough  // eval for pneumonia", "{who} with fever, leukocytosis  // ?pna"),
    "dyspnea_chf": ("{who} with shortness of breath and leg swelling  // eval for CHF", "History: {who} with dyspnea"),
    "trauma": ("{who} s/p fall with chest wall pain  // fracture? pneumothorax?", "{who} s/p MVC  // eval for injury"),
    "malignancy_followup": ("{who} with history of lung cancer  // interval change", "{who} with lung mass  // follow-up"),
    "icu_followup": ("{who} intubated with ARDS  // interval change", "{who} with sepsis  // eval for interval change"),
    "respiratory_failure": ("{who} with respiratory failure  // eval for edema, effusion",),
    "hypoxia": ("{who} with hypoxia  // ?pneumonia, edema",),
    "followup": ("{who} with abnormal prior chest radiograph  // follow-up", "{who} follow-up  // interval change"),
    "chest_pain": ("___ with chest pain", "{who} with chest pain  // eval for acute process"),
    "cough": ("{who} with cough x 2 weeks  // eval for pneumonia",),
    "dyspnea": ("{who} with shortness of breath", "{who} with dyspnea on exertion  // eval"),
    "preop": ("Preoperative evaluation.", "{who} pre-op for elective surgery"),
    "weakness": ("{who} with weakness and fatigue  // eval for infection",),
}


def make_indication(state: dict, rng: np.random.Generator) -> str:
    """INDICATION text from the clinical reason, anonymised like MIMIC ('___')."""
    sex = state.get("sex", "M")
    who = _choice(rng, (f"___{sex}", f"___{sex}", f"___-year-old {'man' if sex == 'M' else 'woman'}",
                        f"___ year old {'male' if sex == 'M' else 'female'}"))
    reason = state.get("clinical", {}).get("reason", "chest_pain")
    return _choice(rng, _INDICATIONS.get(reason, _INDICATIONS["chest_pain"])).format(who=who)


def _draw_patient(rng: np.random.Generator) -> dict:
    setting = _choice(rng, SETTINGS, p=(0.3, 0.3, 0.4))
    sex = _choice(rng, ("M", "F"))
    age = int(np.clip(rng.normal(66 if setting == "icu" else 58, 17), 18, 96))
    habitus = _choice(rng, HABITUS, p=(0.2, 0.6, 0.2))
    scoliosis = _choice(rng, SCOLIOSIS, p=(0.86, 0.07, 0.07))
    traits = [t for t, (p_by_setting, _) in PATIENT_TRAITS.items() if rng.random() < p_by_setting[setting]]
    return {
        "setting": setting, "sex": sex, "age": age, "habitus": habitus, "traits": traits,
        "scoliosis": scoliosis,
        "scoliosis_amplitude": float(rng.uniform(0.09, 0.16)) if scoliosis != "none" else 0.0,
        "piercing": bool(rng.random() < 0.03),
        "piercing_side": _choice(rng, ("left", "right")),
        "anatomy": _draw_anatomy(rng, habitus, sex),
    }


# Distribution of study counts 1..4 by setting: ICU patients are imaged often.
_STUDY_COUNT_P = {"icu": (0.05, 0.15, 0.30, 0.50), "inpatient": (0.28, 0.35, 0.22, 0.15),
                  "outpatient": (0.60, 0.26, 0.09, 0.05)}


def _gap(setting: str, rng: np.random.Generator) -> timedelta:
    if setting == "icu":
        hours = float(rng.uniform(5, 80))
    elif setting == "inpatient":
        hours = float(rng.uniform(20, 24 * 12))
    else:
        hours = float(24 * rng.uniform(25, 1100))
    return timedelta(hours=hours, seconds=float(rng.uniform(0, 3600)))


def _view_plan(state: dict, has_lateral: bool, rng: np.random.Generator) -> tuple[str, str]:
    """Frontal view and orientation; AP is favoured for sicker, tubed patients."""
    f = state["findings"]
    p_ap = {"icu": 0.9, "inpatient": 0.5, "outpatient": 0.15}[state["setting"]]
    # Studies with a lateral are mostly departmental PA films ...
    p_ap = p_ap * 0.3 if has_lateral else p_ap + (1 - p_ap) * 0.4
    # ... but tubed and lined patients are imaged portably whatever else is done.
    if f["endotracheal_tube"]["present"]:
        p_ap = max(p_ap, 0.97)
    elif f["central_line"]["present"] or f["nasogastric_tube"]["present"]:
        p_ap = max(p_ap, 0.85)
    view = "AP" if rng.random() < p_ap else "PA"
    if view == "PA":
        return view, "Erect"
    p_supine = 0.65 if f["endotracheal_tube"]["present"] else (0.4 if state["setting"] == "icu" else 0.15)
    return view, "Recumbent" if rng.random() < p_supine else "Erect"


def _image_nuisance(view: str, orientation: str, rng: np.random.Generator) -> dict:
    rot = float(rng.normal(0, 2.5)) if rng.random() > 0.06 else float(rng.choice((-1, 1)) * rng.uniform(6, 10))
    portable = view == "AP"
    return {
        "view_position": view,
        "patient_orientation": orientation,
        "rotation_deg": round(rot, 2),
        "exposure_brightness": round(float(rng.normal(0, 0.05 if portable else 0.035)), 4),
        "exposure_contrast": round(float(np.exp(rng.normal(0, 0.12 if portable else 0.08))), 4),
        "exposure_gamma": round(float(np.exp(rng.normal(0, 0.14))), 4),
        "inverted": bool(rng.random() < 0.01),
    }


def _dicom_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=5, dtype=np.uint64))


def _procedure(views: list[str], reason: str) -> str:
    frontal = views[0]
    lateral = any(v in ("LATERAL", "LL") for v in views)
    if lateral:
        return "CHEST (PA AND LAT)" if frontal == "PA" else "CHEST (AP AND LAT)"
    if frontal == "AP":
        return "CHEST PORT. LINE PLACEMENT" if reason == "line_placement" else "CHEST (PORTABLE AP)"
    return "CHEST (PA)"


def simulate_patients(config) -> Iterator[PatientPlan]:
    """Yield every patient of the world with studies, states and image plans.

    Parameters
    ----------
    config : SynthCXRConfig

    Yields
    ------
    PatientPlan
        In patient-index order.  Identifiers are unique across the world;
        a collision is resolved by redrawing from the colliding patient's own
        id stream, so earlier patients never change.
    """
    used_subjects: set[int] = set()
    used_studies: set[int] = set()
    scale = dict(config.prevalence_scale or {})
    for index in range(config.n_patients):
        ids = patient_rng(config.seed, index, STREAM_IDS)
        rng = patient_rng(config.seed, index, STREAM_TRAJECTORY)
        subject_id = 10_000_000 + int(ids.integers(0, 10_000_000))
        while subject_id in used_subjects:
            subject_id = 10_000_000 + int(ids.integers(0, 10_000_000))
        used_subjects.add(subject_id)
        u_split = ids.random()
        split = ("test" if u_split < config.test_fraction
                 else "validate" if u_split < config.test_fraction + config.validate_fraction
                 else "train")

        patient = _draw_patient(rng)
        n_studies = 1 + int(rng.choice(4, p=_STUDY_COUNT_P[patient["setting"]]))
        while n_studies == 4 and n_studies < config.max_studies_per_patient and rng.random() < 0.4:
            n_studies += 1
        n_studies = min(n_studies, config.max_studies_per_patient)

        when = datetime(int(rng.integers(2110, 2190)), 1, 1) + timedelta(
            days=float(rng.uniform(0, 365)), seconds=float(rng.uniform(0, 86400)))
        when = when.replace(microsecond=(when.microsecond // 1000) * 1000)
        prev_findings = None
        studies = []
        for k in range(n_studies):
            if k:
                when = when + _gap(patient["setting"], rng)
                when = when.replace(microsecond=(when.microsecond // 1000) * 1000)
            study_id = 50_000_000 + int(ids.integers(0, 10_000_000))
            while study_id in used_studies:
                study_id = 50_000_000 + int(ids.integers(0, 10_000_000))
            used_studies.add(study_id)

            findings = _evolve_findings(prev_findings, patient, rng, scale)
            age = patient["age"] + (when.year - studies[0].study_datetime.year if studies else 0)
            state = {
                "subject_id": subject_id, "study_id": study_id, "study_index": k,
                "study_datetime": when.isoformat(timespec="milliseconds"),
                "age": int(age), "sex": patient["sex"], "setting": patient["setting"],
                "traits": list(patient["traits"]),
                "clinical": _clinical_reason(findings, prev_findings, patient, rng),
                "findings": findings,
                "anatomy": dict(patient["anatomy"]),
                "nuisance": {key: patient[key] for key in
                             ("habitus", "scoliosis", "scoliosis_amplitude", "piercing", "piercing_side")},
            }
            state["indication"] = make_indication(state, rng)
            has_lateral = bool(rng.random() < config.lateral_fraction)
            view, orientation = _view_plan(state, has_lateral, rng)
            n_frontal = 2 if rng.random() < 0.04 else 1
            views = [view] * n_frontal + ([_choice(rng, ("LATERAL", "LL"), p=(0.85, 0.15))] if has_lateral else [])
            images = []
            for v in views:
                frontal = v in ("PA", "AP")
                image_state = copy.deepcopy(state)
                image_state["nuisance"].update(_image_nuisance(v, orientation if frontal else "Erect", rng))
                dicom_id = _dicom_id(ids)
                image_state["dicom_id"] = dicom_id
                meaning = {"PA": "postero-anterior", "AP": "antero-posterior",
                           "LATERAL": "lateral", "LL": "left lateral"}[v]
                images.append(ImagePlan(dicom_id, v, meaning, image_state["nuisance"]["patient_orientation"], image_state))
            studies.append(StudyPlan(subject_id, study_id, k, when,
                                     _procedure(views, state["clinical"]["reason"]), state, images))
            prev_findings = findings
        yield PatientPlan(index, subject_id, split, studies)


def devices_present(state: dict) -> list[str]:
    """Names of the devices present in a state, in catalogue order."""
    return [d for d in DEVICES if state["findings"].get(d, {}).get("present")]
