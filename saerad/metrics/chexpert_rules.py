"""Rule-based report labeler: CheXpert observations and SynthCXR findings.

A small NegEx/ConText-style labeler written for this book (the original
CheXpert labeler needs NegBio and a Java parser; medspacy is not installed).
It reads a sentence in four steps:

1. **Mentions.** Regular expressions find concepts (``CONCEPTS`` below).  A
   concept is either named directly ("pleural effusion", "pneumothorax") or
   through an anatomy word plus a qualifier ("the heart is enlarged",
   "mediastinal contours are normal"): the anatomy counts as a mention only
   when the nearest qualifier in its clause says enlarged (positive) or normal
   (negated).
2. **Uncertainty** cues ("may", "possible", "likely", "versus", "cannot be
   excluded", ...) and **negation** cues ("no", "without", "negative for",
   "free of", "resolution of", "has resolved", "has been removed", ...) act on
   the mentions in their scope.  Forward cues reach mentions after them up to a
   clause boundary (";", "but", "however", "though", "which", ...); backward
   cues reach mentions before them up to the same boundaries or a comma.
   Pseudo-cues ("no change", "no interval change", "not significantly
   changed") are removed before the search.  Uncertainty beats negation inside
   one scope, as in the CheXpert labeler ("cannot be excluded" is uncertain).
3. **Observations.** Each concept maps to its CheXpert observations the way
   ``saerad.synthcxr.catalogue.FINDING_TO_CHEXPERT`` does: atelectasis, edema
   and consolidation also make "Lung Opacity" positive/uncertain; a negated
   mention only negates its primary observation ("no focal consolidation"
   says nothing about Lung Opacity).
4. **Report aggregation** (``label_report``), as in CheXpert: positive beats
   uncertain beats negative over the sentences; "No Finding" is 1.0 when no
   pathology (all but Support Devices / No Finding) is positive or uncertain,
   else NaN.

Labels use the CheXpert codes: 1.0 positive, 0.0 negative, -1.0 uncertain,
NaN not mentioned.  ``sentence_findings`` reports SynthCXR-level findings
(names from ``saerad.synthcxr.catalogue.FINDINGS``) with ``present`` True for
positive *and* uncertain mentions, matching the report-facts convention.

The term lists are data at the top of the module so the vocabulary can be
read and extended.  There are two versions of the rules, chosen with the
``rules`` argument of every public function:

``"v1"``
    The rules as first written: tuned on SynthCXR's report templates
    (``saerad/synthcxr/reports.py``) and checked on hand-written MIMIC-style
    sentences. Kept so that the book can show what changed.
``"v2"`` (``CURRENT_RULES``, the default)
    v1 corrected where the 3,955 real Open-i reports showed it wrong by the
    CheXpert labeler's own conventions (``RULES_V2_CHANGES`` lists each
    change; ``tests/test_chexpert_rules.py`` tests each on sentences written
    for the purpose): granulomas and calcified nodules are not lung lesions,
    nor is a bare "lesion" (of bone, say); findings CheXpert counts against
    "No Finding" without being one of the 13 pathologies (emphysema,
    scoliosis, degenerative change, calcification, ...) now block it;
    "heart failure" is edema, fibrosis is pleural other, scars and
    interstitial markings are lung opacity, prosthetic valves and devices
    are support devices; "not significantly enlarged", "top normal" and
    "within limits of normal" negate; a pericardial effusion, soft-tissue
    edema or a fractured catheter is not a thoracic finding; and a size word
    is no longer given to the heart or mediastinum when it belongs to the
    aorta after it or to a clause across a comma.

Agreement with SynthCXR's truth is measured by
``saerad.metrics.chexpert_f1.evaluate_labeler``; agreement with the Open-i
indexers by ``saerad.openi.evaluation``.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from saerad.mimic.loader import CHEXPERT_OBSERVATIONS
from saerad.synthcxr.catalogue import CHEXPERT_PATHOLOGIES, FINDINGS

# ---------------------------------------------------------------------------
# Vocabulary (regular-expression fragments, matched on lower-cased text)
# ---------------------------------------------------------------------------

# Concept -> (SynthCXR finding or None, CheXpert observations when positive or
# uncertain; the first one is also the one a negated mention negates).
CONCEPT_TARGETS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "cardiomegaly": ("cardiomegaly", ("Cardiomegaly",)),
    "enlarged_cardiomediastinum": ("enlarged_cardiomediastinum", ("Enlarged Cardiomediastinum",)),
    "pleural_effusion": ("pleural_effusion", ("Pleural Effusion",)),
    "pneumothorax": ("pneumothorax", ("Pneumothorax",)),
    "consolidation": ("consolidation", ("Consolidation", "Lung Opacity")),
    "pneumonia": ("consolidation", ("Pneumonia", "Lung Opacity")),
    "opacity": ("consolidation", ("Lung Opacity",)),
    "edema": ("edema", ("Edema", "Lung Opacity")),
    "atelectasis": ("atelectasis", ("Atelectasis", "Lung Opacity")),
    "lung_nodule": ("lung_nodule", ("Lung Lesion",)),
    "lung_mass": ("lung_mass", ("Lung Lesion",)),
    "lung_lesion": (None, ("Lung Lesion",)),
    "rib_fracture": ("rib_fracture", ("Fracture",)),
    "fracture": (None, ("Fracture",)),
    "pleural_thickening": ("pleural_thickening", ("Pleural Other",)),
    "pleural_other": (None, ("Pleural Other",)),
    "pacemaker": ("pacemaker", ("Support Devices",)),
    "central_line": ("central_line", ("Support Devices",)),
    "endotracheal_tube": ("endotracheal_tube", ("Support Devices",)),
    "nasogastric_tube": ("nasogastric_tube", ("Support Devices",)),
    "sternotomy_wires": ("sternotomy_wires", ("Support Devices",)),
    "support_device": (None, ("Support Devices",)),
    "no_finding": (None, ("No Finding",)),
}

# Terms that name a concept by themselves (they imply the abnormality).
DIRECT_TERMS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (r"cardiomegaly", r"cardiac enlargement", r"enlarged heart", r"enlarged cardiac silhouette"),
    "enlarged_cardiomediastinum": (r"mediastinal widening", r"widened mediastinum", r"widening of the (?:superior )?mediastinum",
                                   r"enlarged cardiomediastinal silhouette", r"mediastinal (?:mass|lymphadenopathy)"),
    "pleural_effusion": (r"(?:pleural )?effusions?", r"pleural fluid", r"hydropneumothorax", r"hemothorax"),
    "pneumothorax": (r"pneumothora(?:x|ces)", r"hydropneumothorax"),
    "consolidation": (r"consolidations?", r"consolidative", r"consolidated"),
    "pneumonia": (r"pneumonias?", r"infections?", r"infectious process", r"aspiration", r"bronchopneumonia"),
    "opacity": (r"opacit(?:y|ies)", r"opacification", r"infiltrates?", r"airspace disease", r"haziness",
                r"densit(?:y|ies)"),
    "edema": (r"edema", r"oedema", r"(?:pulmonary )?(?:vascular )?congestion", r"chf", r"fluid overload",
              r"vascular engorgement"),
    "atelectasis": (r"atelecta(?:sis|ses|tic)", r"collapse", r"collapsed"),
    "lung_nodule": (r"nodules?", r"nodular (?:opacit(?:y|ies)|densit(?:y|ies))", r"granulomas?"),
    "lung_mass": (r"(?<!soft tissue )masse?s?(?! effect)",),
    "lung_lesion": (r"lesions?", r"neoplasms?", r"tumou?rs?", r"carcinomas?", r"metastas[ie]s"),
    "rib_fracture": (r"rib fractures?", r"fractures? of the (?:\w+ ){0,3}ribs?", r"fractured? (?:\w+ ){0,3}ribs?",
                     r"osseous abnormality", r"osseous abnormalities", r"rib deformit(?:y|ies)"),
    "fracture": (r"fractures?", r"fractured"),
    "pleural_thickening": (r"pleural thickening", r"apical cap", r"pleural scarring"),
    "pleural_other": (r"pleural plaques?", r"fibrothorax", r"pleural calcifications?"),
    "pacemaker": (r"pacemakers?", r"pacers?", r"aicd", r"(?<!\w)icd(?!\w)", r"defibrillator", r"pacing (?:leads?|wires?)",
                  r"pacemaker leads?"),
    "central_line": (r"central (?:venous )?(?:catheters?|lines?)", r"\b[lr](?:ij|sc)\b(?: (?:line|catheter|cvl|cvc))?",
                     r"(?:internal jugular|subclavian|ij) (?:central )?(?:venous )?(?:line|catheter|cvl|cvc|approach)",
                     r"(?:left|right) (?:internal jugular|subclavian) line", r"cvl", r"cvc", r"picc(?: line)?",
                     r"swan[- ]ganz", r"dialysis catheter"),
    "endotracheal_tube": (r"endotracheal(?: tubes?)?", r"\bet tubes?", r"\bett\b", r"extubat(?:ion|ed)", r"intubat(?:ion|ed)"),
    "nasogastric_tube": (r"nasogastric tubes?", r"\b[no]g tubes?", r"enteric tubes?", r"orogastric tubes?",
                         r"feeding tubes?", r"dobhoff"),
    "sternotomy_wires": (r"sternotomy(?: wires)?", r"sternal wires", r"sternal sutures"),
    "support_device": (r"lines and tubes", r"tubes and lines", r"support devices", r"chest tubes?", r"tracheostomy",
                       r"drains?", r"stents?", r"catheters?", r"monitoring leads", r"hardware"),
    "no_finding": (r"no acute (?:cardiopulmonary|intrathoracic) (?:process|abnormality|disease)",),
}

# Anatomy words that become a mention through a qualifier: concept, anatomy
# pattern, concepts negated when the qualifier says normal.
ANATOMY_TERMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("cardiomegaly", r"heart(?: size)?|cardiac (?:silhouette|size|contours?|shadow)",
     ("cardiomegaly",)),
    ("cardiomegaly", r"cardiac and mediastinal (?:silhouettes|contours)",
     ("cardiomegaly", "enlarged_cardiomediastinum")),
    ("enlarged_cardiomediastinum", r"cardiomediastinal (?:silhouette|contours?|shadow)",
     ("cardiomegaly", "enlarged_cardiomediastinum")),
    ("enlarged_cardiomediastinum", r"(?:superior )?mediastin(?:um|al contours?|al silhouette)|hil(?:a|ar) contours",
     ("enlarged_cardiomediastinum",)),
)
ABNORMAL_QUALIFIERS = (r"enlarg\w*", r"widen\w*", r"wide", r"increased in size", r"large", r"prominen\w*")
NORMAL_QUALIFIERS = (r"normal", r"within normal limits", r"unremarkable", r"not enlarged", r"not widened")

# Uncertainty cues.  Forward ones reach mentions after them, backward ones
# mentions before them; both-way ones do both.
UNCERTAIN_FORWARD = (
    r"possible", r"possibly", r"probable", r"probably", r"likely", r"questionable", r"question of",
    r"suspicious for", r"suspect(?:ed)?", r"concerning for", r"concern for", r"worrisome for", r"suggestive of",
    r"suggests?", r"suggesting", r"may", r"might", r"could", r"can not exclude", r"cannot exclude",
    r"cannot rule out", r"can not rule out", r"rule out", r"r/o", r"differential", r"versus", r"vs\.?",
    r"borderline", r"top[- ]normal", r"equivocal", r"indeterminate", r"presumed", r"represents?", r"reflects?",
)
UNCERTAIN_BACKWARD = (
    r"cannot be (?:fully )?excluded", r"can not be (?:fully )?excluded", r"not (?:be )?excluded",
    r"cannot be ruled out", r"can not be ruled out", r"is possible", r"are possible", r"likely", r"may",
    r"versus", r"vs\.?", r"is suspected", r"are suspected", r"is questioned", r"\?", r"borderline",
    r"top[- ]normal", r"may be accentuated", r"accentuated by", r"exaggerated by",
)
# Cues whose backward reach ignores commas ("widened, which may be accentuated by technique").
UNCERTAIN_BACKWARD_SENTENCE = (r"(?:may be )?accentuated by (?:technique|projection|low lung volumes)",
                               r"(?:may be )?exaggerated by (?:technique|projection|low lung volumes)")

NEGATION_FORWARD = (
    r"no", r"not", r"without", r"negative for", r"free of", r"absence of", r"absent", r"resolution of",
    r"resolved", r"removal of", r"clear of", r"never", r"nor", r"rather than", r"interval removal of",
    r"no longer", r"no evidence of", r"ruled out",
)
NEGATION_BACKWARD = (
    r"(?:has|have) resolved", r"resolved", r"(?:is|are) not (?:seen|identified|present|visualized|appreciated)",
    r"(?:is|are|has been|have been) removed", r"(?:is|are) absent", r"(?:has|have) been removed",
    r"no longer (?:seen|present|visualized|identified)", r"(?:is|are) excluded", r"(?:has|have) cleared",
    r"(?:is|are|has|have) (?:been )?withdrawn",
)
# Phrases that contain a negation word but negate nothing.
PSEUDO_NEGATION = (
    r"no (?:significant |definite |substantial |appreciable )?(?:interval )?change",
    r"not (?:significantly |substantially )?changed", r"without (?:significant |interval )?change",
    r"no (?:significant )?interval (?:change|worsening|improvement)", r"not only", r"no new",
    r"no increase", r"no decrease", r"cannot be (?:fully )?excluded", r"can not be (?:fully )?excluded",
    r"cannot exclude", r"can not exclude", r"not (?:be )?excluded", r"cannot be ruled out", r"cannot rule out",
    r"not been removed", r"no other",
)
# Phrases that contain an uncertainty word but hedge nothing.
PSEUDO_UNCERTAINTY = (r"to suggest", r"no evidence to suggest", r"could be (?:withdrawn|advanced|retracted|pulled back)",
                      r"may be (?:withdrawn|advanced|retracted|pulled back)", r"likely unchanged",
                      r"should be (?:withdrawn|advanced)")

# Clause boundaries: no cue reaches across them.
CLAUSE_BOUNDARIES = (r";", r":", r"\bbut\b", r"\bhowever\b", r"\bthough\b", r"\balthough\b", r"\bwhich\b",
                     r"\bwhereas\b", r"\bexcept\b", r"\bapart from\b", r"\bother than\b", r"\bwith the exception of\b",
                     r"\bthere is\b", r"\bthere are\b", r"\bnow\b")
# Backward cues also stop at commas and at "and there/with"-style joins.
BACKWARD_BOUNDARIES = CLAUSE_BOUNDARIES + (r",", r"\bwith\b")


# ---------------------------------------------------------------------------
# Version 2: the corrections the real Open-i reports called for
# ---------------------------------------------------------------------------

#: Each change of v2 over v1, in words (the book lists them).
RULES_V2_CHANGES = (
    ("granuloma", "A granuloma, granulomatous disease or calcified nodule is not a Lung Lesion (CheXpert excludes "
                  "\"calcified nodule\" and lists granuloma only against No Finding); nor is granulomatous "
                  "infection a Pneumonia, nor cystic fibrosis a Pleural Other."),
    ("bare lesion", "A bare \"lesion\" is not a Lung Lesion (CheXpert's Lung Lesion terms are mass, nodule, "
                    "nodular opacity, cavitary lesion, tumour, neoplasm, carcinoma); bone lesions and metastases "
                    "count against No Finding only."),
    ("other findings", "Findings CheXpert counts against No Finding without labelling them (emphysema, "
                       "scoliosis, degenerative change, calcification, hernia, hyperinflation, atherosclerosis, "
                       "osteopenia, volume loss, deformity, blunting, elevation, ...) block No Finding."),
    ("edema terms", "\"Heart failure\" is Edema, as in CheXpert's Edema terms."),
    ("pleural other terms", "Fibrosis and pleuro-parenchymal scarring are Pleural Other, as in CheXpert."),
    ("opacity terms", "Scars, interstitial markings or patterns, reticular change and peribronchial thickening are "
                      "Lung Opacity, as in CheXpert."),
    ("device terms", "Devices, prosthetic or replacement valves, arthroplasties and ports are Support Devices, as "
                     "in CheXpert."),
    ("negation", "\"Not significantly enlarged\", \"top normal\", \"upper limits of normal\" and \"within "
                 "limits of normal\" negate (CheXpert's normal-limits patterns); \"top normal to mildly enlarged\" "
                 "stays uncertain."),
    ("wrong organ", "A pericardial effusion is not a pleural effusion, soft-tissue edema is not pulmonary edema, "
                    "a bony density is not a lung opacity, a fractured catheter or wire is not a Fracture."),
    ("size word owner", "An enlargement word is not given to the heart or mediastinum when it modifies another "
                        "organ right after it (\"enlarged and tortuous aorta\") or lies across a comma before it."),
)

_V2_DIRECT_CHANGES: dict[str, tuple[str, ...]] = {
    "lung_nodule": (r"(?<!\\bcalcified )(?<!\\bcalcific )nodules?",
                    r"(?<!\\bcalcified )nodular (?:opacit(?:y|ies)|densit(?:y|ies)|opacification)"),
    "lung_lesion": (r"(?:lung|pulmonary|parenchymal|cavitary|cavitating|spiculated) lesions?", r"neoplasms?",
                    r"tumou?rs?", r"carcinomas?"),
    "edema": DIRECT_TERMS["edema"] + (r"(?:congestive )?heart failure",),
    "pleural_other": DIRECT_TERMS["pleural_other"] + (r"(?:pulmonary |interstitial )?fibrosis",
                                                      r"pleural[- ]parenchymal scar(?:ring|s)?",
                                                      r"pleuro-?parenchymal scar(?:ring|s)?"),
    "opacity": DIRECT_TERMS["opacity"] + (r"(?:parenchymal )?scar(?:s|ring|red)?",
                                          r"interstitial (?:markings?|pattern|prominence|opacit(?:y|ies)|"
                                          r"lung disease|disease|changes?)",
                                          r"reticula(?:r|tion)(?: \w+)?", r"reticulonodular(?: \w+)?",
                                          r"peribronchial (?:thickening|cuffing)"),
    "support_device": DIRECT_TERMS["support_device"] + (r"devices?", r"(?:prosthetic|replacement|mechanical|"
                                                        r"bioprosthetic|artificial) (?:\w+ ){0,2}valves?",
                                                        r"valve (?:replacement|prosthesis)", r"arthroplast\w*",
                                                        r"mediport", r"port-a-cath"),
    # Spans claimed so that no other concept reads them; they state no CheXpert observation.
    "elsewhere": (r"pericardial effusions?", r"(?:soft[- ]tissue|subcutaneous) (?:edema|swelling)",
                  r"(?:bony|bone|osseous) densit(?:y|ies)"),
    # A broken device is a device, not a broken bone.
    "device_fracture": (r"(?:catheter|wire|lead|line)s? fractures?",
                        r"fractured? (?:\w+ ){0,3}(?:wires?|leads?|catheters?)",
                        r"(?:catheter|wire|lead)s? (?:is |are )?fractured"),
    # Claimed before the lung findings: CheXpert counts them against No Finding only.
    "other_finding_first": (r"cystic fibrosis", r"(?:calcified |calcific )?granulomas?", r"granulomatous (?:\w+ )?(?:infection|disease|process|"
                  r"changes?|calcifications?)", r"granulomatous", r"calcified (?:\w+ ){0,2}nodules?",
                  r"calcific (?:\w+ ){0,2}nodules?"),
    # Claimed last; CheXpert's list of findings that rule out No Finding (its mention list no_finding.txt).
    "other_finding": (r"emphysema\w*", r"calcifi\w+", r"calcified", r"scoliosis", r"\w*scoliosis", r"kypho\w+",
                      r"degenerat\w+", r"hernias?", r"hyperinfla\w+", r"hyperexpan\w+", r"bullae", r"bullous",
                      r"copd", r"chronic obstructive (?:pulmonary|lung) disease", r"atherosclero\w+",
                      r"osteopeni\w+", r"volume loss", r"deformit(?:y|ies)", r"eventration", r"blunt\w+",
                      r"elevation", r"elevated (?:\w+ ){0,2}(?:hemi)?diaphragms?",
                      r"(?:hemi)?diaphragms? (?:is |are )?(?:mildly |moderately |markedly )?elevated",
                      r"thickening", r"osteophyt\w+", r"spondylosis", r"arthropathy", r"metastas[ie]s",
                      r"(?:bony|bone|osseous|lytic|sclerotic|blastic|expansile|skeletal) lesions?",
                      r"pneumomediastinum", r"pneumoperitoneum", r"cephalization", r"bronchitis",
                      r"airways? disease", r"lesions?"),
}
_V2_CONCEPT_TARGETS = {"elsewhere": (None, ()), "device_fracture": (None, ("Support Devices",)),
                       "other_finding_first": (None, ()), "other_finding": (None, ())}
#: Concepts with no observation whose positive or uncertain mention still rules out No Finding.
NO_FINDING_BLOCKERS = ("other_finding_first", "other_finding")

_V2_NORMAL_QUALIFIERS = NORMAL_QUALIFIERS + (
    r"not (?:significantly |appreciably |markedly |substantially |definitely )?(?:enlarged|widened)",
    r"within (?:the )?limits of normal", r"(?:at |near |within )?(?:the )?(?:top|upper)[- ]normal(?: limits?)?",
    r"(?:at |near |within )?(?:the )?upper limits? of normal",
)
_V2_UNCERTAIN_FORWARD = tuple(p for p in UNCERTAIN_FORWARD if p != r"top[- ]normal")
_V2_UNCERTAIN_BACKWARD = tuple(p for p in UNCERTAIN_BACKWARD if p != r"top[- ]normal") + (
    r"to (?:mildly |minimally |slightly )?enlarged",)
_V2_NEGATION_BACKWARD = NEGATION_BACKWARD + (
    r"(?:appears? |appearing |is |are |remains? )?within (?:the )?(?:normal limits|limits of normal)",)
#: Organs an enlargement word may describe right after it, instead of the heart or mediastinum before it.
OTHER_ORGANS = (r"aort\w*", r"(?:aortic )?arch", r"pulmonary arter(?:y|ies)", r"lymph nodes?", r"thyroid", r"goiter",
                r"liver", r"spleen", r"stomach", r"bowel", r"colon", r"kidneys?", r"esophag\w*", r"azygos(?: vein)?",
                r"soft tissues?", r"breasts?", r"thymus", r"vessels?")


# ---------------------------------------------------------------------------
# Compiled rule sets
# ---------------------------------------------------------------------------

def _alt(patterns) -> str:
    return "|".join(f"(?:{p})" for p in patterns)


def _words(patterns) -> re.Pattern:
    return re.compile(rf"(?<![\w-])(?:{_alt(patterns)})(?![\w-])")


@dataclass(frozen=True)
class RuleSet:
    """One version of the rules, compiled (see the module docstring for the versions)."""

    name: str
    concept_targets: dict
    direct: dict
    order: tuple
    anatomy: list
    any_anatomy: re.Pattern
    abnormal: re.Pattern
    normal: re.Pattern
    unc_fwd: re.Pattern
    unc_bwd: re.Pattern
    unc_bwd_sentence: re.Pattern
    neg_fwd: re.Pattern
    neg_bwd: re.Pattern
    pseudo_neg: re.Pattern
    pseudo_unc: re.Pattern
    no_finding_blockers: tuple
    #: v2: an enlargement word followed by another organ belongs to that organ.
    other_organ_after: re.Pattern | None
    #: v2: a qualifier found before the anatomy word must not lie across a comma.
    backward_qualifier_stop: re.Pattern


_ORDER_V1 = ("no_finding", "rib_fracture", "sternotomy_wires", "pacemaker", "central_line", "endotracheal_tube",
             "nasogastric_tube", "support_device", "pleural_thickening", "pleural_other", "cardiomegaly",
             "enlarged_cardiomediastinum", "lung_nodule", "pneumothorax", "pleural_effusion", "consolidation",
             "pneumonia", "edema", "atelectasis", "lung_mass", "lung_lesion", "fracture", "opacity")
_ORDER_V2 = ("no_finding", "elsewhere", "device_fracture", "other_finding_first") + _ORDER_V1 + ("other_finding",)


def _compile(name: str) -> RuleSet:
    if name == "v1":
        direct, targets, order = DIRECT_TERMS, CONCEPT_TARGETS, _ORDER_V1
        normal, unc_fwd, unc_bwd = NORMAL_QUALIFIERS, UNCERTAIN_FORWARD, UNCERTAIN_BACKWARD
        neg_bwd, blockers, owner, backward_stop = NEGATION_BACKWARD, (), None, re.compile(r"[;.]|\bbut\b")
    elif name == "v2":
        direct, targets, order = {**DIRECT_TERMS, **_V2_DIRECT_CHANGES}, {**CONCEPT_TARGETS, **_V2_CONCEPT_TARGETS}, _ORDER_V2
        normal, unc_fwd, unc_bwd = _V2_NORMAL_QUALIFIERS, _V2_UNCERTAIN_FORWARD, _V2_UNCERTAIN_BACKWARD
        neg_bwd, blockers = _V2_NEGATION_BACKWARD, NO_FINDING_BLOCKERS
        owner = re.compile(rf"(?:\s+(?!is\b|are\b|the\b|with\b|for\b|in\b)[a-z/-]+,?){{0,3}}?\s+(?:{_alt(OTHER_ORGANS)})\b")
        backward_stop = re.compile(r"[;.,]|\bbut\b")
    else:
        raise ValueError(f"unknown rules version {name!r}; versions are {RULE_VERSIONS}")
    return RuleSet(
        name=name, concept_targets=targets, direct={c: _words(p) for c, p in direct.items()}, order=order,
        anatomy=[(c, _words([p]), neg) for c, p, neg in ANATOMY_TERMS],
        any_anatomy=_words([p for _, p, _ in ANATOMY_TERMS]), abnormal=_words(ABNORMAL_QUALIFIERS),
        normal=_words(normal), unc_fwd=_words(unc_fwd), unc_bwd=_words(unc_bwd),
        unc_bwd_sentence=_words(UNCERTAIN_BACKWARD_SENTENCE), neg_fwd=_words(NEGATION_FORWARD),
        neg_bwd=_words(neg_bwd), pseudo_neg=_words(PSEUDO_NEGATION), pseudo_unc=_words(PSEUDO_UNCERTAINTY),
        no_finding_blockers=blockers, other_organ_after=owner, backward_qualifier_stop=backward_stop,
    )


#: The versions of the rules, oldest first, and the one every function uses unless told otherwise.
RULE_VERSIONS = ("v1", "v2")
CURRENT_RULES = "v2"


@functools.lru_cache(maxsize=None)
def rule_set(rules: str = CURRENT_RULES) -> RuleSet:
    """The compiled rules of version ``rules`` (``"v1"`` or ``"v2"``)."""
    return _compile(rules)


_COORDINATION = re.compile(r"\s*(?:,|and|or|,\s*and)?\s*(?:the\s+)?")
_CLAUSE = re.compile(_alt(CLAUSE_BOUNDARIES))
_BACKWARD_STOP = re.compile(_alt(BACKWARD_BOUNDARIES))
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=\S)|\n\s*\n|\s+(?=\d{1,2}\.\s+[A-Za-z])")

_POSITIVE, _UNCERTAIN, _NEGATIVE = 1.0, -1.0, 0.0
_RANK = {_POSITIVE: 3, _UNCERTAIN: 2, _NEGATIVE: 1}


@dataclass(frozen=True)
class Mention:
    """One concept mention in a sentence and its status (1.0 / -1.0 / 0.0)."""

    concept: str
    start: int
    end: int
    status: float


# ---------------------------------------------------------------------------
# Sentence analysis
# ---------------------------------------------------------------------------

def _mask(text: str, pattern: re.Pattern) -> str:
    """Blank out matches (same length) so that their words are not cues."""
    return pattern.sub(lambda m: " " * (m.end() - m.start()), text)


def _clause_span(text: str, start: int, end: int, stop: re.Pattern) -> tuple[int, int]:
    """The region around [start, end) that is not separated by a boundary."""
    left = 0
    for m in stop.finditer(text, 0, start):
        left = m.end()
    m = stop.search(text, end)
    right = m.start() if m else len(text)
    return left, right


def _status(rules: RuleSet, text: str, neg_text: str, unc_text: str, start: int, end: int, base: float) -> float:
    """Status of a mention at [start, end) given the cue-masked texts."""
    fwd_left, fwd_right = _clause_span(text, start, end, _CLAUSE)
    _, bwd_right = _clause_span(text, start, end, _BACKWARD_STOP)
    _, sent_right = _clause_span(text, start, end, re.compile(r";"))
    before = slice(fwd_left, start)
    uncertain = (rules.unc_fwd.search(unc_text[start:end]) is not None  # "top normal to mildly enlarged" (v1)
                 or rules.unc_fwd.search(unc_text[before]) is not None
                 or rules.unc_bwd.search(unc_text[end:bwd_right]) is not None
                 or rules.unc_bwd_sentence.search(text[end:sent_right]) is not None)
    if uncertain:
        return _UNCERTAIN
    negated = (rules.neg_fwd.search(neg_text[before]) is not None
               or rules.neg_bwd.search(neg_text[end:bwd_right]) is not None)
    if negated:
        return _NEGATIVE if base == _POSITIVE else _POSITIVE
    return base


def _anatomy_mentions(rules: RuleSet, text: str) -> list[tuple]:
    """Anatomy words made into mentions by their nearest qualifier.

    Returns ``(concept, start, end, base status, target concepts, anatomy
    span)`` where [start, end) covers the anatomy and its qualifier.
    """
    out = []
    stop = re.compile(r"[;.]|\bbut\b")
    for concept, pattern, negated in rules.anatomy:
        for m in pattern.finditer(text):
            left, right = _clause_span(text, m.start(), m.end(), stop)
            # The qualifier search stops at the next anatomy word, unless the two
            # are coordinated ("heart size and mediastinal contours are normal").
            pos = m.end()
            while True:
                nxt = rules.any_anatomy.search(text, pos, right)
                if nxt and _COORDINATION.fullmatch(text, pos, nxt.start()):
                    pos = nxt.end()
                    continue
                break
            after_end = nxt.start() if nxt else right
            best = None  # (distance, kind, qualifier start, qualifier end)
            for kind, q in (("abnormal", rules.abnormal), ("normal", rules.normal)):
                for qm in q.finditer(text, m.end(), after_end):
                    if (kind == "abnormal" and rules.other_organ_after is not None
                            and rules.other_organ_after.match(text, qm.end())):
                        continue  # "heart size normal, enlarged tortuous aorta": the aorta's, not the heart's
                    cand = (qm.start() - m.end(), kind, qm.start(), qm.end())
                    best = cand if best is None or cand < best else best
            if best is None:  # "enlargement of the cardiac silhouette", "enlarged heart"
                back_left, _ = _clause_span(text, m.start(), m.end(), rules.backward_qualifier_stop)
                for kind, q in (("abnormal", rules.abnormal), ("normal", rules.normal)):
                    for qm in q.finditer(text, max(left, back_left, m.start() - 40), m.start()):
                        if rules.any_anatomy.search(text, qm.end(), m.start()):
                            continue
                        cand = (m.start() - qm.end(), kind, qm.start(), qm.end())
                        best = cand if best is None or cand < best else best
            if best is None:
                continue
            _, kind, qs, qe = best
            start, end = min(m.start(), qs), max(m.end(), qe)
            base, targets = (_POSITIVE, (concept,)) if kind == "abnormal" else (_NEGATIVE, negated)
            out.append((concept, start, end, base, targets, (m.start(), m.end())))
    return out


def sentence_mentions(text: str, rules: str = CURRENT_RULES) -> list[Mention]:
    """All concept mentions of one sentence with their status.

    Parameters
    ----------
    text : str
        One sentence (any case).
    rules : str
        Version of the rules, ``"v1"`` or ``"v2"`` (default ``CURRENT_RULES``).

    Returns
    -------
    list of Mention
        Concepts are keys of ``CONCEPT_TARGETS`` (v2 adds ``elsewhere``,
        ``other_finding_first`` and ``other_finding``, which state no observation, and
        ``device_fracture``, a Support Device).
    """
    if not isinstance(text, str):
        raise TypeError(f"sentence text must be a str, got {type(text).__name__}")
    compiled = rule_set(rules)
    low = " ".join(text.lower().split())
    unc_text = _mask(low, compiled.pseudo_unc)
    neg_text = _mask(_mask(low, compiled.pseudo_neg), compiled.pseudo_unc)
    neg_text = _mask(neg_text, compiled.unc_bwd)  # "cannot be excluded" is uncertainty, not negation
    mentions: list[Mention] = []
    taken: list[tuple[int, int]] = []

    def overlaps(s, e):
        return any(s < te and ts < e for ts, te in taken)

    # Anatomy + qualifier first, then direct terms from the most specific
    # concept to the most generic (a span is claimed once).
    for concept, start, end, base, targets, (a_start, a_end) in _anatomy_mentions(compiled, low):
        if overlaps(a_start, a_end):
            continue
        status = _status(compiled, low, neg_text, unc_text, start, end, base)
        if base == _NEGATIVE:  # "normal" qualifier: uncertainty ("top normal") still hedges
            status = _UNCERTAIN if status == _UNCERTAIN else _NEGATIVE
            for target in targets:
                mentions.append(Mention(target, start, end, status))
        else:
            mentions.append(Mention(concept, start, end, status))
        taken.append((a_start, a_end))
    for concept in compiled.order:
        for m in compiled.direct[concept].finditer(low):
            if concept in ("pneumothorax", "pleural_effusion") and "hydropneumothorax" in m.group(0):
                pass  # one word, two concepts
            elif overlaps(m.start(), m.end()):
                continue
            status = _status(compiled, low, neg_text, unc_text, m.start(), m.end(), _POSITIVE)
            mentions.append(Mention(concept, m.start(), m.end(), status))
            taken.append((m.start(), m.end()))
    extubation = re.compile(r"extubat")
    fixed = []
    for mention in mentions:  # "interval extubation" means the tube is gone
        if mention.concept == "endotracheal_tube" and extubation.match(low, mention.start):
            mention = Mention(mention.concept, mention.start, mention.end, _NEGATIVE)
        fixed.append(mention)
    return sorted(fixed, key=lambda m: m.start)


def _merge(labels: dict, key, value: float) -> None:
    current = labels.get(key)
    if current is None or (isinstance(current, float) and math.isnan(current)) or _RANK[value] > _RANK[current]:
        labels[key] = value


def _observations(rules: RuleSet, concept: str, status: float) -> tuple[str, ...]:
    targets = rules.concept_targets[concept][1]
    return targets if status != _NEGATIVE else targets[:1]


@functools.lru_cache(maxsize=1 << 16)
def _sentence_labels(text: str, rules: str) -> tuple[dict[str, float], bool]:
    """(labels of one sentence, whether it states a finding that rules out No Finding without a label).

    Memoised: reports repeat the same sentences ("No pneumothorax.") thousands of times. Callers copy the dict.
    """
    compiled = rule_set(rules)
    labels: dict[str, float] = {}
    blocks = False
    for m in sentence_mentions(text, rules):
        if m.concept == "no_finding":
            continue
        if m.concept in compiled.no_finding_blockers and m.status != _NEGATIVE:
            blocks = True
        for obs in _observations(compiled, m.concept, m.status):
            _merge(labels, obs, m.status)
    return labels, blocks


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------

def label_sentence(text: str, rules: str = CURRENT_RULES) -> dict[str, float]:
    """CheXpert labels stated by one sentence.

    Parameters
    ----------
    text : str
        One sentence.
    rules : str
        Version of the rules (``"v1"`` or ``"v2"``).

    Returns
    -------
    dict
        Observation -> 1.0 (positive), 0.0 (negative), -1.0 (uncertain), only
        for the observations the sentence mentions.  A sentence's own "No
        Finding" statement ("no acute cardiopulmonary process") is not
        reported here: "No Finding" is decided per report.
    """
    return dict(_sentence_labels(text, rules)[0])


def sentence_rules_out_no_finding(text: str, rules: str = CURRENT_RULES) -> bool:
    """Whether one sentence states, as present or possible, a finding that rules out No Finding without being
    one of the 13 pathologies (v2 only: emphysema, scoliosis, granuloma, ...)."""
    return _sentence_labels(text, rules)[1]


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences (periods, blank lines, numbered items)."""
    if not isinstance(text, str):
        return []
    parts = _SENTENCE_SPLIT.split(text.strip())
    return [p.strip() for p in parts if p and p.strip() and re.search(r"[A-Za-z]", p)]


def label_report(text: str, rules: str = CURRENT_RULES) -> dict[str, float]:
    """CheXpert labels of a whole report.

    Parameters
    ----------
    text : str
        Report text (findings and/or impression).  A non-string (NaN) is
        treated as an empty report.
    rules : str
        Version of the rules (``"v1"`` or ``"v2"``).

    Returns
    -------
    dict
        All 14 observations of ``CHEXPERT_OBSERVATIONS`` -> 1.0 / 0.0 / -1.0,
        NaN when not mentioned.  Positive beats uncertain beats negative;
        "No Finding" is 1.0 when no pathology is positive or uncertain, else
        NaN (CheXpert's rule; support devices do not count). With the v2 rules
        a finding of CheXpert's "other findings" list (emphysema, scoliosis,
        granuloma, ...) stated as present also rules No Finding out.
    """
    labels: dict[str, float] = {o: float("nan") for o in CHEXPERT_OBSERVATIONS}
    other_finding = False
    for sentence in split_sentences(text if isinstance(text, str) else ""):
        sentence_labels, blocks = _sentence_labels(sentence, rules)
        other_finding = other_finding or blocks
        for obs, value in sentence_labels.items():
            _merge(labels, obs, value)
    labels["No Finding"] = float("nan")
    if not other_finding and not any(labels[o] in (_POSITIVE, _UNCERTAIN) for o in CHEXPERT_PATHOLOGIES):
        labels["No Finding"] = 1.0
    return labels


def sentence_findings(text: str, rules: str = CURRENT_RULES) -> set[tuple[str, bool]]:
    """SynthCXR findings stated by one sentence.

    Parameters
    ----------
    text : str
        One sentence.
    rules : str
        Version of the rules (``"v1"`` or ``"v2"``).

    Returns
    -------
    set of (str, bool)
        ``(finding, present)`` with finding names from
        ``saerad.synthcxr.catalogue.FINDINGS``; ``present`` is True for
        positive or uncertain mentions, False for negated ones.  A finding
        both affirmed and negated in one sentence is reported as present.
        A bare "opacity" counts as consolidation only when the sentence
        names no other lung finding it could belong to.
    """
    compiled = rule_set(rules)
    mentions = sentence_mentions(text, rules)
    named = {m.concept for m in mentions}
    lung_findings = {"atelectasis", "edema", "lung_nodule", "lung_mass", "consolidation", "pneumonia",
                     "pleural_effusion", "lung_lesion"}
    state: dict[str, bool] = {}
    for m in mentions:
        finding = compiled.concept_targets[m.concept][0]
        if finding is None:
            continue
        if m.concept == "opacity" and (named & lung_findings):
            continue
        state[finding] = state.get(finding, False) or m.status != _NEGATIVE
    assert set(state) <= set(FINDINGS)
    return set(state.items())


def report_findings(text: str, rules: str = CURRENT_RULES) -> dict[str, bool]:
    """SynthCXR findings of a whole report: finding -> present (True beats False).

    Findings the report does not mention are absent from the dict.
    """
    out: dict[str, bool] = {}
    for sentence in split_sentences(text if isinstance(text, str) else ""):
        for finding, present in sorted(sentence_findings(sentence, rules)):  # sorted: dict order must not follow hashes
            out[finding] = out.get(finding, False) or present
    return out
