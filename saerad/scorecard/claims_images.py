"""Claims about counterfactual images: Appendix D's decoder, Figure 4 and the axioms of Section 5.3."""

from __future__ import annotations

import math

import pandas as pd

from saerad.counterfactual import axioms
from saerad.scorecard.artifacts import Artifacts
from saerad.scorecard.claim import Claim, number, percent
from saerad.scorecard.verdicts import (ALPHA, NOT_REPRODUCED, REPRODUCED, Outcome, combine, count_rule,
                                       not_testable, threshold_rule)

#: The judge must still tell the finding in reconstructions at this AUROC for the decoder to "redraw" it.
RECONSTRUCTION_AUROC = 0.8
#: Off-target: share of images whose decision for another finding changed (reproduced at most, partly at most).
OFF_TARGET_RATES = (0.1, 0.25)
#: Reversibility: distance left after add-then-remove as a share of the distance the addition made.
CYCLE_SHARE = 0.2
#: Segmentation: mean IoU with the planted mask (reproduced at least, partly at least).
SEGMENTATION_IOUS = (0.5, 0.2)
_NO_JUDGE = "finding labels to train a judge on (SynthCXR's planted findings)"


def _axioms(artifacts: Artifacts) -> pd.DataFrame:
    table = artifacts.csv("counterfactuals", "axioms.csv", ("feature", "finding", "measure", "value", "n", "N", "note"))
    return table[table["feature"] >= 0]


def _by_finding(table: pd.DataFrame, measure: str) -> pd.DataFrame:
    return table[table["measure"] == measure].set_index("finding")


def _decoder(artifacts: Artifacts) -> Outcome:
    artifacts.stage_record("counterfactuals")
    path = artifacts.root / "counterfactuals" / "classifiers.csv"  # not written without planted findings
    if not path.exists():
        return not_testable(_NO_JUDGE)
    judges = pd.read_csv(path)
    if "auroc_reconstructions" not in judges:
        return not_testable(_NO_JUDGE)
    judged = judges.dropna(subset=["auroc_reconstructions"])
    if judged.empty:
        return not_testable(_NO_JUDGE)
    holding = int((judged["auroc_reconstructions"] >= RECONSTRUCTION_AUROC).sum())
    verdict, reason = count_rule(holding, len(judged), f"findings the judge sees in reconstructions at AUROC >= "
                                                       f"{RECONSTRUCTION_AUROC:g}")
    ours = "; ".join(f"{row.finding}: AUROC {number(row.auroc_reconstructions, 2)} on reconstructions "
                     f"({number(row.auroc_real_test, 2)} on real images)" for row in judged.itertuples())
    return Outcome(ours, verdict, reason)


def _effectiveness(measure: str, word: str):
    def outcome(artifacts: Artifacts) -> Outcome:
        tests = _by_finding(_axioms(artifacts), measure)
        if tests.empty:
            return not_testable(_NO_JUDGE)
        # A test counts when the changed decisions went the expected way more often than chance allows.
        holding = int(((tests["value"] < ALPHA) & (tests["n"] > tests["N"] / 2)).sum())
        verdict, reason = count_rule(holding, len(tests), f"features whose {word} changed the judge's decision the "
                                                          f"expected way (exact McNemar p < {ALPHA:g})")
        ours = "; ".join(f"{finding}: {int(row.n)} of {int(row.N)} changed decisions as expected, p = {row.value:.2g}"
                         for finding, row in tests.iterrows())
        return Outcome(ours, verdict, reason)

    return outcome


def _off_target(artifacts: Artifacts) -> Outcome:
    table = _axioms(artifacts)
    rows = table[table["measure"].str.startswith("off-target: ")]
    if rows.empty:
        return not_testable("judges of at least two findings")
    worst = rows.loc[rows["value"].idxmax()]
    verdict, reason = threshold_rule(float(worst["value"]), *OFF_TARGET_RATES, higher_is_better=False,
                                     what="largest off-target rate")
    ours = "; ".join(f"{row.finding} feature changed {row.measure.removeprefix('off-target: ').split(' decision')[0]} "
                     f"in {int(row.n)} of {int(row.N)} images" for row in rows.itertuples())
    return Outcome(ours, verdict, reason)


def _composability(artifacts: Artifacts) -> Outcome:
    nulls = _by_finding(_axioms(artifacts), axioms.NULL_DISTANCE)
    if nulls.empty:
        raise ValueError(f"counterfactuals/axioms.csv: no row {axioms.NULL_DISTANCE!r}")
    largest = float(nulls["value"].max())
    verdict = REPRODUCED if largest == 0 else NOT_REPRODUCED
    return Outcome(f"largest mean change under the null intervention {number(largest, 4)}", verdict,
                   "exactly 0 by construction: the SAE's residual is added back, so the token is returned bit for bit"
                   if largest == 0 else "the null intervention changed the image")


def _reversibility(artifacts: Artifacts) -> Outcome:
    table = _axioms(artifacts)
    cycles, effects = _by_finding(table, axioms.CYCLE_DISTANCE), _by_finding(table, axioms.EFFECT_SIZE)
    findings = [finding for finding in cycles.index if finding in effects.index]
    if not findings:
        raise ValueError("counterfactuals/axioms.csv: no reversibility rows")
    shares = {finding: float(cycles.loc[finding, "value"]) / float(effects.loc[finding, "value"])
              if float(effects.loc[finding, "value"]) > 0 else math.inf for finding in findings}
    holding = sum(share <= CYCLE_SHARE for share in shares.values())
    verdict, reason = count_rule(holding, len(shares), f"features whose cycle leaves at most {CYCLE_SHARE:.0%} of "
                                                       "the addition's change")
    ours = "; ".join(f"{finding}: {number(cycles.loc[finding, 'value'], 4)} left of {number(effects.loc[finding, 'value'], 4)}"
                     f" ({percent(share, 0) if math.isfinite(share) else 'no change to undo'})"
                     for finding, share in shares.items())
    return Outcome(ours, verdict, reason)


def _segmentation(artifacts: Artifacts) -> Outcome:
    ious = _by_finding(_axioms(artifacts), axioms.SEGMENTATION_IOU)
    ious = ious[ious["n"] > 0]
    if ious.empty:
        return not_testable("planted masks of the findings (SynthCXR)")
    verdicts, reasons = [], []
    for finding, row in ious.iterrows():
        verdict, reason = threshold_rule(float(row["value"]), *SEGMENTATION_IOUS, what=f"{finding} mean IoU")
        verdicts.append(verdict)
        reasons.append(reason)
    ours = "; ".join(f"{finding}: mean IoU {number(row.value, 2)} over {int(row.n)} images" for finding, row in ious.iterrows())
    return Outcome(ours, combine(verdicts), "; ".join(reasons))


CLAIMS = (
    Claim("appendix-d-decoder",
          "A diffusion model conditioned on the class token redraws the radiograph with its findings",
          "Appendix D; Figure 4 (column 2)",
          "shown by example reconstructions; no number",
          "sec-counterfactual-decoder",
          f"a pixel judge trained on real images still detects each finding in reconstructions at AUROC >= "
          f"{RECONSTRUCTION_AUROC:g}: all, some, none",
          _decoder),
    Claim("figure4-add",
          "Switching a feature on (pacemaker, cardiomegaly) makes its finding appear in the image",
          "Figure 4; Section 5.3 (effectiveness)",
          "one image per feature (Figure 4, column 3)",
          "sec-counterfactual-figure4",
          f"per feature, exact McNemar test of the judge's changed decisions, p < {ALPHA:g} in the expected "
          "direction: all, some, none",
          _effectiveness(axioms.ADD_TEST, "addition")),
    Claim("figure4-remove",
          "Switching the feature off makes the finding disappear",
          "Figure 4; Section 5.3 (effectiveness)",
          "one image per feature (Figure 4, column 4)",
          "sec-counterfactual-figure4",
          f"per feature, exact McNemar test of the judge's changed decisions, p < {ALPHA:g} in the expected "
          "direction: all, some, none",
          _effectiveness(axioms.REMOVE_TEST, "removal")),
    Claim("axiom-specific",
          "An intervention changes only its own finding",
          "Section 5.3",
          "stated for two features; no number",
          "sec-counterfactual-axioms",
          f"largest share of images whose decision for another finding changed <= {OFF_TARGET_RATES[0]:g} reproduced, "
          f"<= {OFF_TARGET_RATES[1]:g} partly",
          _off_target),
    Claim("axiom-composability",
          "Intervening with a feature's own value leaves the image unchanged (composability)",
          "Section 5.3; Monteiro et al.",
          "named as an axiom; no number",
          "sec-counterfactual-axioms",
          "reproduced if the null intervention changes no image at all",
          _composability),
    Claim("axiom-reversibility",
          "Adding a feature and then removing it returns the original image (reversibility)",
          "Section 5.3; Appendix D",
          "described (cyclic consistency); no number",
          "sec-counterfactual-axioms",
          f"per feature, the cycle's distance from the reconstruction at most {CYCLE_SHARE:.0%} of the addition's: "
          "all, some, none",
          _reversibility),
    Claim("figure4-segmentation",
          "The difference between a counterfactual and the reconstruction segments the finding without supervision",
          "Figure 4 (last column)",
          "one map per feature; no number",
          "sec-counterfactual-figure4",
          f"per feature, mean IoU with the planted mask >= {SEGMENTATION_IOUS[0]:g} reproduced, "
          f">= {SEGMENTATION_IOUS[1]:g} partly; combined over features",
          _segmentation),
)
