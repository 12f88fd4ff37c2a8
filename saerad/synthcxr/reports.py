"""MIMIC-CXR style free-text reports with sentence-level facts.

A report is assembled from *statements*: a sentence plus the facts it states.
Each fact is ``{"finding", "present", "certainty", "attributes",
"comparison"}``; CheXpert labels are then derived from the facts only, so
the labels describe what the report says (including omissions and hedges),
not the hidden ground truth.

Sentence texts are recorded unwrapped; in the report text the sentences of a
paragraph are joined with two spaces and wrapped at 77 characters with a
leading space on every line, as in the MIMIC-CXR report files.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np

from .catalogue import FINDING_ATTRIBUTES, SEVERITY_ATTRIBUTE, chexpert_labels_from_facts
from .patients import make_indication

_ORDINAL = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth",
            7: "seventh", 8: "eighth", 9: "ninth", 10: "tenth", 11: "eleventh", 12: "twelfth"}


@dataclass
class Statement:
    """One sentence and the facts it states."""

    text: str
    facts: list[dict]
    group: str = "lungs"      # devices, lungs, pleura, cardiac, bones, other
    priority: int = 5         # lower = more important for the impression
    impression: str | None = None  # shorter wording for the impression


@dataclass
class Report:
    """A finished report.

    Attributes
    ----------
    text : str
        Report file contents.
    sentences : list of dict
        ``{"section", "header", "text", "facts"}`` for every sentence of the
        findings, impression, wet-read or free-text parts, in report order.
        ``section`` is normalised to findings / impression /
        findings_and_impression / wet_read / other; ``header`` is the raw
        header text used (``None`` for headerless text).
    structure : str
        findings_impression, impression_only, findings_and_impression or
        free_text.
    indication : str
    chexpert : dict
        CheXpert observation -> 1.0 / 0.0 / -1.0 / NaN.
    """

    text: str
    sentences: list[dict]
    structure: str
    indication: str
    chexpert: dict = field(default_factory=dict)


def _fact(finding, present=True, certainty="definite", comparison=None, **attributes):
    return {"finding": finding, "present": bool(present), "certainty": certainty,
            "attributes": attributes, "comparison": comparison}


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _cap(text):
    return text[:1].upper() + text[1:]


def _attrs(name, finding):
    return {k: finding[k] for k in FINDING_ATTRIBUTES.get(name, {}) if k in finding}


def _change(name, cur, prev):
    """Comparison category of a present finding against the previous study."""
    if prev is None:
        return None
    if not prev.get("present"):
        return "new"
    key = SEVERITY_ATTRIBUTE.get(name)
    if key:
        order = FINDING_ATTRIBUTES[name][key]
        a, b = order.index(prev[key]), order.index(cur[key])
        if b != a:
            return "worsened" if b > a else "improved"
    if name == "pleural_effusion" and prev["laterality"] != cur["laterality"]:
        return "worsened" if cur["laterality"] == "bilateral" else "improved"
    if name in ("lung_nodule", "lung_mass") and cur["size_mm"] > prev["size_mm"]:
        return "worsened"
    return "unchanged"


_LOBE = {("right", "upper"): "right upper lobe", ("right", "middle"): "right middle lobe",
         ("right", "lower"): "right lower lobe", ("left", "upper"): "left upper lobe",
         ("left", "middle"): "lingula", ("left", "lower"): "left lower lobe"}
_LUNG_ZONE = {"upper": "upper", "middle": "mid", "lower": "lower"}


def _adj(lobe):
    return "lingular" if lobe == "lingula" else lobe


def _effusion_phrase(f):
    if f["laterality"] == "bilateral":
        return f"{f['size']} bilateral pleural effusions"
    return f"{f['size']} {f['laterality']} pleural effusion"


def _pathology_statements(state, prev, rng):
    """Positive and 'resolved' statements for the pathology findings."""
    out = []
    fnd = state["findings"]
    fever = state.get("clinical", {}).get("fever", False)

    def cmp_(name):
        c = _change(name, fnd[name], prev[name] if prev else None)
        # Radiologists do not always make the comparison explicit.
        return c if (c is not None and rng.random() < 0.75) else None

    for name in fnd:
        f = fnd[name]
        was = prev[name] if prev else {"present": False}
        if not f["present"]:
            if was["present"] and name in _RESOLVED and rng.random() < 0.7:
                text = _pick(rng, _RESOLVED[name]).format(**_fmt(name, was))
                out.append(Statement(_cap(text), [_fact(name, False, comparison="improved", **_attrs(name, was))],
                                     _GROUP.get(name, "lungs"), 6))
            continue
        maker = _POSITIVE.get(name)
        if maker is None:
            continue
        st = maker(f, cmp_(name), rng, fever)
        if st is not None:
            out.append(st)
    return out


def _fmt(name, f):
    d = dict(f)
    if "laterality" in f and name == "pleural_effusion":
        d["eff"] = _effusion_phrase(f)
        d["lat"] = "bilateral" if f["laterality"] == "bilateral" else f["laterality"]
    if name == "consolidation":
        d["lobe"] = _LOBE[(f["laterality"], f["zone"])]
    if name == "atelectasis":
        d["base"] = "bibasilar" if f["laterality"] == "bibasilar" else f"{f['laterality']} basilar"
    if name in ("lung_nodule", "lung_mass"):
        d["where"] = f"{f['laterality']} {_LUNG_ZONE[f['zone']]} lung"
    return d


_GROUP = {"cardiomegaly": "cardiac", "enlarged_cardiomediastinum": "cardiac", "pleural_effusion": "pleura",
          "pneumothorax": "pleura", "pleural_thickening": "pleura", "rib_fracture": "bones"}

_RESOLVED = {
    "pleural_effusion": ("interval resolution of the {eff}.", "the previously seen {lat} pleural effusion has resolved."),
    "pneumothorax": ("the previously seen {laterality} pneumothorax has resolved.", "interval resolution of the {laterality} pneumothorax."),
    "consolidation": ("interval resolution of the {lobe} consolidation.", "the {lobe} opacity has resolved."),
    "edema": ("interval resolution of pulmonary edema.", "pulmonary edema has resolved."),
    "atelectasis": ("the previously seen {base} atelectasis has resolved.",),
}


def _cardiomegaly(f, c, rng, fever):
    sev = f["severity"]
    adv = {"mild": "mildly", "moderate": "moderately", "severe": "markedly"}[sev]
    if c == "unchanged":
        text = _pick(rng, (f"Stable {sev} cardiomegaly.", f"{_cap(sev)} cardiomegaly is unchanged.",
                           f"The heart remains {adv} enlarged."))
    elif c in ("worsened", "improved"):
        word = "increased" if c == "worsened" else "decreased"
        text = f"The cardiac silhouette has {word} in size, now {adv} enlarged."
    elif c == "new":
        text = f"The heart is newly {adv} enlarged."
    elif sev == "mild" and rng.random() < 0.2:
        return Statement("The heart size is top normal to mildly enlarged.",
                         [_fact("cardiomegaly", certainty="uncertain", severity=sev)], "cardiac", 8,
                         "Borderline cardiomegaly.")
    else:
        text = _pick(rng, (f"{_cap(sev)} cardiomegaly.", f"The heart is {adv} enlarged.",
                           f"There is {sev} enlargement of the cardiac silhouette."))
    return Statement(text, [_fact("cardiomegaly", comparison=c, severity=sev)], "cardiac", 7,
                     f"{_cap(sev)} cardiomegaly.")


def _ecm(f, c, rng, fever):
    if rng.random() < 0.25:
        return Statement("The mediastinum appears widened, which may be accentuated by technique.",
                         [_fact("enlarged_cardiomediastinum", certainty="uncertain", severity=f["severity"])],
                         "cardiac", 6, "Possible mediastinal widening.")
    text = _pick(rng, ("The mediastinum is widened.", "Widening of the superior mediastinum is noted.",
                       "The mediastinal contours are enlarged."))
    if c == "unchanged":
        text = "Mediastinal widening is unchanged."
    return Statement(text, [_fact("enlarged_cardiomediastinum", comparison=c, severity=f["severity"])],
                     "cardiac", 5, "Widened mediastinum.")


def _effusion(f, c, rng, fever):
    eff = _effusion_phrase(f)
    attrs = _attrs("pleural_effusion", f)
    if c is None and f["size"] == "small" and rng.random() < 0.3:
        side = "bilateral costophrenic angles" if f["laterality"] == "bilateral" else f"{f['laterality']} costophrenic angle"
        text = _pick(rng, (f"Blunting of the {side} may reflect a small effusion.",
                           f"A {eff} cannot be excluded.", f"Possible {eff}."))
        return Statement(_cap(text), [_fact("pleural_effusion", certainty="uncertain", **attrs)], "pleura", 4,
                         f"Possible {eff}.")
    if c == "unchanged":
        text = _pick(rng, (f"Unchanged {eff}.", f"{_cap(eff)} is unchanged from prior."))
    elif c == "worsened":
        text = _pick(rng, (f"Interval increase in pleural effusion, now {eff}.", f"Slightly increased {eff}."))
    elif c == "improved":
        text = _pick(rng, (f"Interval decrease in pleural effusion, now {eff}.", f"Slightly decreased {eff}."))
    elif c == "new":
        text = _pick(rng, (f"New {eff} since ___.", f"There is a new {eff}."))
    else:
        text = _pick(rng, (f"There is a {eff}." if f["laterality"] != "bilateral" else f"There are {eff}.",
                           f"{_cap(eff)}.", f"{_cap(eff)} is present."))
    return Statement(text, [_fact("pleural_effusion", comparison=c, **attrs)], "pleura", 3,
                     f"{_cap(eff)}{', unchanged' if c == 'unchanged' else ''}.")


def _pneumothorax(f, c, rng, fever):
    lat, size = f["laterality"], f["size"]
    attrs = _attrs("pneumothorax", f)
    if size == "small" and c is None and rng.random() < 0.15:
        text = f"A tiny {lat} apical pneumothorax cannot be excluded."
        return Statement(text, [_fact("pneumothorax", certainty="uncertain", **attrs)], "pleura", 1,
                         f"Possible tiny {lat} apical pneumothorax.")
    desc = f"{'small' if size == 'small' else 'large'} {lat} {'apical ' if size == 'small' else ''}pneumothorax"
    if c == "unchanged":
        text = f"Unchanged {desc}."
    elif c == "worsened":
        text = f"Increased size of the {lat} pneumothorax, now large."
    elif c == "improved":
        text = f"Decreased size of the {lat} pneumothorax, now small."
    elif c == "new":
        text = f"New {desc}."
    else:
        text = _pick(rng, (f"There is a {desc}.", f"{_cap(desc)}."))
    return Statement(text, [_fact("pneumothorax", comparison=c, **attrs)], "pleura", 0, f"{_cap(desc)}.")


def _consolidation(f, c, rng, fever):
    lobe = _LOBE[(f["laterality"], f["zone"])]
    attrs = _attrs("consolidation", f)
    adj = "extensive" if f["extent"] == "large" else "patchy"
    if c == "unchanged":
        return Statement(f"Unchanged {lobe} consolidation.", [_fact("consolidation", comparison=c, **attrs)],
                         "lungs", 2, f"Persistent {lobe} consolidation.")
    if c in ("worsened", "improved"):
        word = "Increasing" if c == "worsened" else "Improving"
        return Statement(f"{word} consolidation in the {lobe}.", [_fact("consolidation", comparison=c, **attrs)],
                         "lungs", 2, f"{word} {lobe} consolidation.")
    new = "New " if c == "new" else ""
    if fever:
        kind = rng.integers(3)
        if kind == 0:
            return Statement(f"{new}{_cap(adj) if not new else adj} consolidation in the {lobe} is concerning for pneumonia.",
                             [_fact("consolidation", comparison=c, **attrs),
                              _fact("consolidation", certainty="uncertain", term="pneumonia", **attrs)],
                             "lungs", 1, f"Findings concerning for {_adj(lobe)} pneumonia.")
        if kind == 1:
            return Statement(f"{_cap(_adj(lobe))} pneumonia." if not new else f"New {_adj(lobe)} pneumonia.",
                             [_fact("consolidation", comparison=c, term="pneumonia", **attrs)],
                             "lungs", 1, f"{_cap(_adj(lobe))} pneumonia.")
        return Statement(f"{new}{'F' if not new else 'f'}ocal opacity in the {lobe}, likely pneumonia.",
                         [_fact("consolidation", comparison=c, term="opacity", **attrs),
                          _fact("consolidation", certainty="uncertain", term="pneumonia", **attrs)],
                         "lungs", 1, f"{_cap(lobe)} opacity, likely pneumonia.")
    if rng.random() < 0.25:
        return Statement(f"Opacity in the {lobe} may represent atelectasis or consolidation.",
                         [_fact("consolidation", certainty="uncertain", comparison=c, **attrs),
                          _fact("atelectasis", certainty="uncertain", laterality=f["laterality"])],
                         "lungs", 2, f"{_cap(lobe)} opacity, atelectasis versus consolidation.")
    text = _pick(rng, (f"{_cap(adj)} consolidation in the {lobe}.", f"There is {adj} consolidation in the {lobe}.",
                       f"Airspace consolidation is present in the {lobe}."))
    if new:
        text = f"New {adj} consolidation in the {lobe}."
    return Statement(text, [_fact("consolidation", comparison=c, **attrs)], "lungs", 2,
                     f"{_cap(lobe)} consolidation.")


def _edema(f, c, rng, fever):
    sev = f["severity"]
    if sev == "mild" and c is None and rng.random() < 0.25:
        return Statement("Possible mild interstitial edema.", [_fact("edema", certainty="uncertain", severity=sev)],
                         "lungs", 3, "Possible mild interstitial edema.")
    base = {"mild": ("Mild pulmonary vascular congestion.", "Mild interstitial pulmonary edema.",
                     "There is mild pulmonary edema."),
            "moderate": ("Moderate pulmonary edema.", "Moderate interstitial edema with perihilar haziness.",
                         "There is moderate pulmonary edema."),
            "severe": ("Severe pulmonary edema.", "Diffuse alveolar opacities consistent with severe pulmonary edema.",
                       "There is severe pulmonary edema.")}[sev]
    if c == "unchanged":
        text = f"Unchanged {sev} pulmonary edema."
    elif c == "worsened":
        text = f"Worsening pulmonary edema, now {sev}."
    elif c == "improved":
        text = f"Pulmonary edema has improved, now {sev}."
    elif c == "new":
        text = f"New {sev} pulmonary edema."
    else:
        text = _pick(rng, base)
    return Statement(text, [_fact("edema", comparison=c, severity=sev)], "lungs", 2,
                     f"{_cap(sev)} pulmonary edema{', ' + {'worsened': 'worse', 'improved': 'improved', 'unchanged': 'unchanged', 'new': 'new'}[c] if c else ''}.")


def _atelectasis(f, c, rng, fever):
    base = "bibasilar" if f["laterality"] == "bibasilar" else f"{f['laterality']} basilar"
    attrs = _attrs("atelectasis", f)
    if fever and rng.random() < 0.5:
        return Statement(f"{_cap(base)} opacities may reflect atelectasis, though infection cannot be excluded.",
                         [_fact("atelectasis", certainty="uncertain", **attrs),
                          _fact("consolidation", certainty="uncertain", term="pneumonia")],
                         "lungs", 3, f"{_cap(base)} opacity, atelectasis versus pneumonia.")
    if rng.random() < 0.3:
        return Statement(f"Linear opacity at the {base.replace(' basilar', '')} base likely reflects atelectasis."
                         if base != "bibasilar" else "Bibasilar linear opacities likely reflect atelectasis.",
                         [_fact("atelectasis", certainty="uncertain", **attrs)], "lungs", 8,
                         f"{_cap(base)} atelectasis.")
    text = _pick(rng, (f"{_cap(base)} atelectasis.", f"Plate-like atelectasis at the {base.replace(' basilar', '')} lung base."
                       if base != "bibasilar" else "Minimal bibasilar atelectasis.",
                       f"{'Unchanged ' if c == 'unchanged' else ''}{base} atelectasis.".capitalize()))
    return Statement(text, [_fact("atelectasis", comparison=c if "Unchanged" in text else None, **attrs)],
                     "lungs", 8, f"{_cap(base)} atelectasis.")


def _lesion(kind):
    def make(f, c, rng, fever):
        if kind == "lung_nodule" and rng.random() < 0.1:
            return None  # small nodules are missed now and then
        where = f"{f['laterality']} {_LUNG_ZONE[f['zone']]} lung"
        attrs = _attrs(kind, f)
        if kind == "lung_nodule":
            size = f"{f['size_mm']} mm"
            if c is None and rng.random() < 0.15:
                return Statement(f"Possible nodular opacity in the {where}, which may represent a nipple shadow.",
                                 [_fact(kind, certainty="uncertain", **attrs)], "lungs", 6,
                                 "Possible pulmonary nodule; repeat with nipple markers is recommended.")
            text = _pick(rng, (f"There is a {size} nodule in the {where}.",
                               f"A {size} nodular opacity projects over the {where}.",
                               f"{size} {where} nodule; recommend CT for further evaluation."))
            imp = f"{_cap(where)} nodule, for which chest CT is recommended."
        else:
            size = f"{f['size_mm'] / 10:.1f} cm"
            text = _pick(rng, (f"There is a {size} mass in the {where}, concerning for malignancy.",
                               f"Large {where} mass measuring approximately {size}."))
            imp = f"{_cap(where)} mass, concerning for malignancy."
        if c == "unchanged":
            text = f"Unchanged {size} {'nodule' if kind == 'lung_nodule' else 'mass'} in the {where}."
        elif c == "worsened":
            text = f"Slightly increased size of the {where} {'nodule' if kind == 'lung_nodule' else 'mass'}, now {size}."
        elif c == "new":
            text = f"New {size} {'nodule' if kind == 'lung_nodule' else 'mass'} in the {where}."
        return Statement(_cap(text), [_fact(kind, comparison=c if c != "improved" else "unchanged", **attrs)],
                         "lungs", 4 if kind == "lung_mass" else 6, imp)
    return make


def _fracture(f, c, rng, fever):
    lat, rib = f["laterality"], _ORDINAL[int(f["rib"])]
    attrs = _attrs("rib_fracture", f)
    if c == "unchanged":
        return Statement(f"Healing fracture of the {lat} {rib} rib.", [_fact("rib_fracture", comparison=c, **attrs)],
                         "bones", 9, f"Healing {lat} {rib} rib fracture.")
    if c is None and rng.random() < 0.15:
        return Statement(f"Possible nondisplaced fracture of the {lat} {rib} rib.",
                         [_fact("rib_fracture", certainty="uncertain", **attrs)], "bones", 7,
                         f"Possible {lat} {rib} rib fracture.")
    text = _pick(rng, (f"Acute fracture of the {lat} {rib} posterior rib.",
                       f"There is a minimally displaced fracture of the {lat} {rib} rib."))
    return Statement(text, [_fact("rib_fracture", comparison=c, **attrs)], "bones", 5,
                     f"Acute {lat} {rib} rib fracture.")


def _thickening(f, c, rng, fever):
    if rng.random() < 0.2:
        return None
    lat = f["laterality"]
    text = (f"{_cap(lat)} apical pleural thickening." if f["location"] == "apical"
            else f"Pleural thickening along the {lat} lateral chest wall{'s' if lat == 'bilateral' else ''}.")
    if c == "unchanged":
        text = text[:-1] + ", unchanged."
    return Statement(text, [_fact("pleural_thickening", comparison=c, **_attrs("pleural_thickening", f))],
                     "pleura", 9, f"{_cap(lat)} pleural thickening.")


_POSITIVE = {"cardiomegaly": _cardiomegaly, "enlarged_cardiomediastinum": _ecm, "pleural_effusion": _effusion,
             "pneumothorax": _pneumothorax, "consolidation": _consolidation, "edema": _edema,
             "atelectasis": _atelectasis, "lung_nodule": _lesion("lung_nodule"), "lung_mass": _lesion("lung_mass"),
             "rib_fracture": _fracture, "pleural_thickening": _thickening}


def _cm(value):
    return f"{value:.0f}" if abs(value - round(value)) < 0.25 else f"{value:.1f}"


def _device_statements(state, prev, rng):
    out = []
    fnd = state["findings"]

    def was(name):
        return bool(prev and prev[name]["present"])

    ett = fnd["endotracheal_tube"]
    if ett["present"]:
        cm, tip = _cm(ett["tip_cm_above_carina"]), ett["tip"]
        attrs = _attrs("endotracheal_tube", ett)
        if tip == "appropriate":
            text = _pick(rng, (f"Endotracheal tube terminates {cm} cm above the carina.",
                               f"The ET tube is in standard position, {cm} cm above the carina.",
                               f"ETT tip is appropriately positioned {cm} cm from the carina."))
            imp = None
        elif tip == "low":
            text = _pick(rng, (f"Endotracheal tube terminates {cm} cm above the carina and could be withdrawn by approximately 2 cm.",
                               "The endotracheal tube tip is low, at the level of the carina; recommend retraction."))
            imp = "Low-lying endotracheal tube; recommend withdrawal by approximately 2 cm."
        else:
            text = f"Endotracheal tube tip is high, {cm} cm above the carina; advancement by 2-3 cm is recommended."
            imp = "Endotracheal tube is high and should be advanced."
        if not was("endotracheal_tube"):
            text = f"Interval placement of an endotracheal tube, which terminates {cm} cm above the carina." \
                if (prev and tip == "appropriate") else text
        comparison = "new" if (prev and not was("endotracheal_tube")) else None
        out.append(Statement(text, [_fact("endotracheal_tube", comparison=comparison, **attrs)], "devices",
                             1 if imp else 9, imp))
    elif was("endotracheal_tube"):
        out.append(Statement(_pick(rng, ("Interval extubation.", "The endotracheal tube has been removed.")),
                             [_fact("endotracheal_tube", False, change="removed")], "devices", 9))

    ng = fnd["nasogastric_tube"]
    if ng["present"]:
        if ng["tip"] == "stomach":
            text = _pick(rng, ("Enteric tube courses below the diaphragm with the tip in the stomach.",
                               "Nasogastric tube terminates in the stomach.",
                               "An NG tube is seen with its tip in the stomach."))
            imp = None
        else:
            text = _pick(rng, ("Nasogastric tube terminates in the distal esophagus and should be advanced.",
                               "The enteric tube tip is in the esophagus; advancement by 10 cm is recommended."))
            imp = "Nasogastric tube tip in the esophagus; recommend advancement."
        out.append(Statement(text, [_fact("nasogastric_tube", tip=ng["tip"])], "devices", 1 if imp else 9, imp))
    elif was("nasogastric_tube") and rng.random() < 0.7:
        out.append(Statement("The nasogastric tube has been removed.",
                             [_fact("nasogastric_tube", False, change="removed")], "devices", 9))

    cl = fnd["central_line"]
    if cl["present"]:
        access = f"{cl['side']} {'internal jugular' if cl['approach'] == 'jugular' else 'subclavian'}"
        abbrev = f"{cl['side'][0].upper()}{'IJ' if cl['approach'] == 'jugular' else 'SC'}"
        where = {"svc": _pick(rng, ("mid SVC", "lower SVC", "superior vena cava")),
                 "right_atrium": _pick(rng, ("right atrium", "upper right atrium")),
                 "too_high": f"{cl['side']} brachiocephalic vein"}[cl["tip"]]
        text = _pick(rng, (f"{_cap(access)} central venous catheter terminates in the {where}.",
                           f"{abbrev} line tip is in the {where}.",
                           f"A {access} line is present with its tip in the {where}."))
        imp = None
        if cl["tip"] == "too_high":
            text = text[:-1] + " and could be advanced."
            imp = f"{abbrev} line terminates in the brachiocephalic vein."
        elif cl["tip"] == "right_atrium" and rng.random() < 0.5:
            text = text[:-1] + "; consider withdrawal by 2 cm."
        attrs = _attrs("central_line", cl)
        comparison = "new" if (prev and not was("central_line")) else None
        out.append(Statement(text, [_fact("central_line", comparison=comparison, **attrs)], "devices",
                             2 if imp else 9, imp))
    elif was("central_line") and rng.random() < 0.7:
        out.append(Statement("Interval removal of the central venous catheter.",
                             [_fact("central_line", False, change="removed")], "devices", 9))

    pm = fnd["pacemaker"]
    if pm["present"]:
        side = pm["generator_side"]
        if pm["leads"] >= 2:
            text = _pick(rng, (f"{_cap(side)}-sided pacemaker with leads terminating in the right atrium and right ventricle.",
                               f"Dual-lead {side} chest wall pacemaker in place."))
        else:
            text = f"{_cap(side)}-sided pacemaker with a single lead terminating in the right ventricle."
        if prev and was("pacemaker") and rng.random() < 0.5:
            text = "Pacemaker leads are unchanged in position."
        new = prev is not None and not was("pacemaker")
        if new:
            text = "Interval placement of a " + text[0].lower() + text[1:]
        out.append(Statement(text, [_fact("pacemaker", comparison="new" if new else None, **_attrs("pacemaker", pm))],
                             "devices", 6 if new else 9, "Interval pacemaker placement without pneumothorax." if new else None))

    if fnd["sternotomy_wires"]["present"]:
        out.append(Statement(_pick(rng, ("Median sternotomy wires are intact.", "The patient is status post median sternotomy.",
                                          "Sternotomy wires are noted.")),
                             [_fact("sternotomy_wires", count=fnd["sternotomy_wires"]["count"])], "devices", 9))
    return out


def _nuisance_statements(state, rng):
    out = []
    nz = state["nuisance"]
    if nz.get("scoliosis", "none") != "none" and rng.random() < 0.5:
        out.append(Statement(f"{_cap(nz['scoliosis'])}scoliosis of the thoracic spine.",
                             [_fact("scoliosis", direction=nz["scoliosis"])], "bones", 9))
    if nz.get("piercing") and rng.random() < 0.2:
        out.append(Statement("Nipple piercing is noted.", [_fact("piercing", side=nz.get("piercing_side"))], "other", 9))
    return out


def _negative_statements(state, rng):
    """Pertinent negatives for absent key findings, often combined."""
    fnd = state["findings"]
    absent = [n for n in ("consolidation", "pleural_effusion", "pneumothorax") if not fnd[n]["present"]]
    words = {"consolidation": "focal consolidation", "pleural_effusion": "pleural effusion", "pneumothorax": "pneumothorax"}
    out = []
    mention = [n for n in absent if rng.random() < 0.85]
    if len(mention) >= 2 and rng.random() < 0.75:
        items = [words[n] for n in mention]
        joined = items[0] if len(items) == 1 else ", ".join(items[:-1]) + (", or " if len(items) > 2 else " or ") + items[-1]
        text = _pick(rng, (f"There is no {joined}.", f"No {joined}.", f"No {joined} is seen."))
        out.append(Statement(text, [_fact(n, False) for n in mention], "lungs", 9))
    else:
        singles = {"consolidation": ("No focal consolidation.", "The lungs are clear without focal consolidation.",
                                     "No focal airspace opacity to suggest pneumonia."),
                   "pleural_effusion": ("No pleural effusion.", "There is no pleural effusion."),
                   "pneumothorax": ("No pneumothorax.", "There is no pneumothorax.")}
        for n in mention:
            text = _pick(rng, singles[n])
            if "to suggest pneumonia" in text:
                facts = [_fact("consolidation", False, term="opacity"), _fact("consolidation", False, term="pneumonia")]
            else:
                facts = [_fact(n, False)]
            out.append(Statement(text, facts, "pleura" if n != "consolidation" else "lungs", 9))
    if not fnd["edema"]["present"] and rng.random() < 0.35:
        out.append(Statement(_pick(rng, ("No pulmonary edema.", "There is no pulmonary vascular congestion or edema.")),
                             [_fact("edema", False)], "lungs", 9))
    card, ecm = fnd["cardiomegaly"]["present"], fnd["enlarged_cardiomediastinum"]["present"]
    if not card and not ecm and rng.random() < 0.85:
        text = _pick(rng, ("The cardiomediastinal silhouette is normal.", "Heart size and mediastinal contours are normal.",
                           "The cardiac and mediastinal silhouettes are within normal limits."))
        out.append(Statement(text, [_fact("cardiomegaly", False), _fact("enlarged_cardiomediastinum", False)], "cardiac", 9))
    elif not card and rng.random() < 0.7:
        out.append(Statement(_pick(rng, ("The heart size is normal.", "Heart size is within normal limits.")),
                             [_fact("cardiomegaly", False)], "cardiac", 9))
    elif not ecm and rng.random() < 0.5:
        out.append(Statement("The mediastinal contours are normal.", [_fact("enlarged_cardiomediastinum", False)], "cardiac", 9))
    if not fnd["rib_fracture"]["present"] and rng.random() < 0.25:
        out.append(Statement(_pick(rng, ("No acute osseous abnormality.", "No displaced rib fractures are identified.")),
                             [_fact("rib_fracture", False)], "bones", 9))
    return out


_GROUP_ORDERS = (("devices", "lungs", "pleura", "cardiac", "bones", "other"),
                 ("devices", "cardiac", "lungs", "pleura", "bones", "other"),
                 ("lungs", "pleura", "cardiac", "devices", "bones", "other"))


def _impression(statements, state, prev, rng):
    """Short summary statements: the most important positives or a normal line."""
    key = sorted((s for s in statements if s.impression and s.facts and s.facts[0]["present"]),
                 key=lambda s: s.priority)[:3]
    out = []
    for s in key:
        facts = [dict(f) for f in s.facts]
        out.append(Statement(s.impression, facts, s.group, s.priority))
        if s.priority <= 1 and s.group == "pleura" and rng.random() < 0.4:
            # Critical results get a communication note, a sentence without facts.
            out.append(Statement("Findings were discussed with the referring team by telephone at the time of "
                                 "this dictation.", [], "other", 9))
    fnd = state["findings"]
    well_placed = {"endotracheal_tube": ("appropriate",), "nasogastric_tube": ("stomach",),
                   "central_line": ("svc", "right_atrium")}
    devices_ok = [d for d, tips in well_placed.items()
                  if fnd[d]["present"] and fnd[d]["tip"] in tips and not any(s.facts[0]["finding"] == d for s in key)]
    if devices_ok and rng.random() < 0.6:
        out.append(Statement(_pick(rng, ("Lines and tubes in appropriate position.", "Support devices as described above.")),
                             [_fact(d, **_attrs(d, fnd[d])) for d in devices_ok], "devices", 9))
    if not out or all(f["finding"] in ("pacemaker", "sternotomy_wires", "central_line", "nasogastric_tube",
                                       "endotracheal_tube", "scoliosis", "piercing", "lung_nodule",
                                       "pleural_thickening", "atelectasis", "cardiomegaly")
                      for s in out for f in s.facts):
        if prev is not None and rng.random() < 0.4:
            text, facts = "No acute cardiopulmonary process; no significant interval change.", []
        else:
            text, facts = _pick(rng, (("No acute cardiopulmonary process.", []),
                                      ("No acute intrathoracic process.", []),
                                      ("No evidence of pneumonia.", [_fact("consolidation", False, term="pneumonia")]))) \
                if not fnd["consolidation"]["present"] else ("No other acute cardiopulmonary process.", [])
        out.append(Statement(text, facts, "other", 9))
    return out


def _technique(views, orientation, rng):
    lateral = any(v in ("LATERAL", "LL") for v in views)
    if lateral:
        return _pick(rng, ("Chest PA and lateral", "PA and lateral views of the chest.",
                           "Frontal and lateral views of the chest."))
    if views[0] == "AP":
        if orientation == "Recumbent":
            return "Supine portable AP chest radiograph."
        return _pick(rng, ("Portable AP upright chest radiograph.", "Portable semi-upright AP view of the chest.",
                           "Single frontal view of the chest."))
    return "Single PA view of the chest."


def _wrap(paragraph: str) -> list[str]:
    return [" " + line for line in textwrap.wrap(paragraph, width=77, break_long_words=False,
                                                  break_on_hyphens=False)] or [" "]


def write_report(state: dict, prev_state: dict | None, views: list[str], procedure: str,
                 rng: np.random.Generator) -> Report:
    """Write the report of one study.

    Parameters
    ----------
    state : dict
        Study state (findings, clinical reason, nuisance of the first image).
    prev_state : dict or None
        The same patient's previous study state, for comparison language.
    views : list of str
        View positions of the study's images, frontal first.
    procedure : str
        Examination name for the EXAMINATION line.
    rng : numpy.random.Generator

    Returns
    -------
    Report
    """
    prev = prev_state["findings"] if prev_state else None
    indication = state.get("indication") or make_indication(state, rng)
    devices = _device_statements(state, prev, rng)
    pathology = _pathology_statements(state, prev, rng)
    statements = devices + pathology + _nuisance_statements(state, rng) + _negative_statements(state, rng)
    order = _GROUP_ORDERS[int(rng.integers(len(_GROUP_ORDERS)))]
    # Positives before negatives inside a group, otherwise keep the random-ish order.
    statements.sort(key=lambda s: (order.index(s.group), not any(f["present"] for f in s.facts)))
    impression = _impression(statements, state, prev, rng)
    says_pneumonia = any(f["attributes"].get("term") == "pneumonia" and f["present"]
                         for s in statements for f in s.facts)
    if says_pneumonia:  # never contradict a hedged pneumonia with "no evidence of pneumonia"
        impression = [s if s.text != "No evidence of pneumonia." else
                      Statement("No acute cardiopulmonary process.", [], "other", 9) for s in impression]

    u = rng.random()
    structure = ("free_text" if u < 0.03 else "impression_only" if u < 0.11
                 else "findings_and_impression" if u < 0.125 else "findings_impression")
    comparison = ("None." if prev_state is None else
                  _pick(rng, ("___", "Chest radiograph from ___.", "Prior chest radiographs ___ through ___.",
                              "Comparison to ___.")))
    if prev_state is not None and rng.random() < 0.05:
        comparison = "None."  # the prior was not pulled up for comparison
    orientation = state.get("nuisance", {}).get("patient_orientation", "Erect")
    technique = _technique(views, orientation, rng)
    v = rng.random()
    preamble_variant = v < 0.02
    history_header = "HISTORY" if 0.02 <= v < 0.07 else "INDICATION"
    impression_header = "IMPRESSON" if rng.random() < 0.012 else "IMPRESSION"
    wet_read = structure == "free_text" and rng.random() < 0.5

    lines: list[str] = []
    sentences: list[dict] = []

    def add_paragraph(stmts, section, header):
        if not stmts:
            return
        lines.extend(_wrap("  ".join(s.text for s in stmts)))
        sentences.extend({"section": section, "header": header, "text": s.text, "facts": s.facts} for s in stmts)

    def add_numbered(stmts, section, header):
        if len(stmts) >= 2 and rng.random() < 0.4:
            for i, s in enumerate(stmts, 1):
                wrapped = textwrap.wrap(f"{i}.  {s.text}", width=77, break_long_words=False)
                lines.extend([" " + wrapped[0]] + ["     " + w for w in wrapped[1:]])
                sentences.append({"section": section, "header": header, "text": s.text, "facts": s.facts})
        else:
            add_paragraph(stmts, section, header)

    if wet_read:
        lines.append(f" WET READ: ___ ___ ___ {int(rng.integers(1, 13))}:{int(rng.integers(0, 60)):02d} "
                     f"{_pick(rng, ('AM', 'PM'))}")
        for s in impression:
            lines.extend("  " + w for w in textwrap.wrap(s.text, width=76))
            sentences.append({"section": "wet_read", "header": "WET READ", "text": s.text, "facts": s.facts})
        lines.append(" " + "_" * 78)
    lines.append(" " * 33 + "FINAL REPORT")
    if preamble_variant:
        lines += [f" {'PA AND LATERAL' if len(views) > 1 and views[-1] in ('LATERAL', 'LL') else 'PORTABLE'}"
                  f" CHEST RADIOGRAPH:  ___", " "]
    else:
        lines += [f" EXAMINATION:  {procedure}", " "]
    wrapped = textwrap.wrap(f"{history_header}:  {indication}", width=77, break_long_words=False)
    lines += [" " + w for w in wrapped] + [" "]
    if structure != "free_text":
        lines += [f" TECHNIQUE:  {technique}", " "]
    lines += [f" COMPARISON:  {comparison}", " "]

    if structure == "findings_impression":
        lines += [" FINDINGS: ", " "]
        add_paragraph(statements, "findings", "FINDINGS")
        lines += [" ", f" {impression_header}: ", " "]
        add_numbered(impression, "impression", impression_header)
    elif structure == "impression_only":
        lines += [f" {impression_header}: ", " "]
        add_paragraph(statements, "impression", impression_header)
    elif structure == "findings_and_impression":
        lines += [" FINDINGS AND IMPRESSION: ", " "]
        add_paragraph(statements + [s for s in impression if not s.facts], "findings_and_impression",
                      "FINDINGS AND IMPRESSION")
    else:
        add_paragraph(statements, "other", None)
        lines.append(" ")
        add_paragraph(impression, "other", None)
    text = "\n".join(lines) + "\n"
    facts = [f for s in sentences for f in s["facts"]]
    return Report(text=text, sentences=sentences, structure=structure, indication=indication,
                  chexpert=chexpert_labels_from_facts(facts))
