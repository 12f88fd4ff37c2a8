"""The verdicts of the scorecard and the rules that give them.

Every claim of the paper ends in one of five verdicts:

``reproduced``
    The artifacts of this run show what the paper claims, by the claim's rule.
``partly``
    Some of what the claim says holds and some does not (e.g. three of four
    metrics), or the direction holds but the interval or test cannot tell it
    from chance.
``not reproduced``
    The artifacts show the opposite, or nothing distinguishable from it.
``not testable in this profile``
    The run cannot measure the claim; the reason says what it would need.
``not run``
    An artifact the claim is read from is missing: its stage has not run (or
    failed). No number is shown, never a stale one.

The rules below are the only ways a verdict is reached; each claim in
:mod:`saerad.scorecard.claims` names the one it uses and its thresholds.

* :func:`interval_rule`: a difference with a 95 % interval. Reproduced when
  the whole interval lies on the claimed side of zero; partly when the
  estimate does but the interval includes zero (``not reproduced`` instead
  when the paper says *significantly*); not reproduced otherwise.
* :func:`significance_rule`: two rates and a one-sided p-value. Reproduced when the
  direction is the claimed one and ``p < alpha``; partly (not reproduced
  for a claim of significance) when the direction holds with ``p >= alpha``.
* :func:`threshold_rule`: one number against stated bars.
* :func:`factor_rule`: a number within a factor of the paper's.
* :func:`count_rule`: how many of several parts of a claim hold (all,
  some, none).
* :func:`combine`: the verdict of a claim made of sub-claims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

REPRODUCED = "reproduced"
PARTLY = "partly"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable in this profile"
NOT_RUN = "not run"

#: Every verdict, in the order the page counts them.
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_TESTABLE, NOT_RUN)

#: Significance level of every test the scorecard reads (one-sided p-values).
ALPHA = 0.05


@dataclass(frozen=True)
class Outcome:
    """What this run shows for one claim.

    Attributes
    ----------
    ours
        Our figure, as text (``"not run"`` when an artifact is missing).
    verdict
        One of :data:`VERDICTS`.
    reason
        Why this verdict: the number that decided it and the rule's bar.
    """

    ours: str
    verdict: str
    reason: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; expected one of {VERDICTS}")


def not_testable(needs: str, ours: str = "n/a") -> Outcome:
    """The claim cannot be measured in this profile; ``needs`` says what it would take."""
    return Outcome(ours, NOT_TESTABLE, f"needs {needs}")


def interval_rule(estimate: float, low: float, high: float, claimed_sign: int,
                  says_significantly: bool = False) -> tuple[str, str]:
    """Verdict of "the difference is positive" (``claimed_sign=+1``) or negative (``-1``) from a 95 % interval.

    Returns
    -------
    (verdict, reason)
    """
    if claimed_sign not in (1, -1):
        raise ValueError(f"claimed_sign must be +1 or -1, got {claimed_sign!r}")
    if not all(math.isfinite(value) for value in (estimate, low, high)):
        raise ValueError(f"interval_rule needs finite numbers, got {estimate}, [{low}, {high}]")
    side = "above" if claimed_sign > 0 else "below"
    interval = f"95 % interval [{low:.2f}, {high:.2f}]"
    if (low > 0) if claimed_sign > 0 else (high < 0):
        return REPRODUCED, f"{interval} lies wholly {side} 0, as claimed"
    if (high < 0) if claimed_sign > 0 else (low > 0):
        return NOT_REPRODUCED, f"{interval} lies wholly on the other side of 0"
    if estimate * claimed_sign > 0:
        if says_significantly:
            return NOT_REPRODUCED, f"the estimate points the claimed way but the {interval} includes 0"
        return PARTLY, f"the estimate points the claimed way but the {interval} includes 0"
    return NOT_REPRODUCED, f"the estimate points the other way ({interval})"


def significance_rule(focus_rate: float, comparator_rate: float, p_one_sided: float, claimed_lower: bool = True,
              says_significantly: bool = False, alpha: float = ALPHA) -> tuple[str, str]:
    """Verdict of "the focus rate is lower (higher) than the comparator's" from a one-sided test.

    ``p_one_sided`` must test the claimed direction.
    """
    if not all(math.isfinite(value) for value in (focus_rate, comparator_rate, p_one_sided)):
        raise ValueError(f"significance_rule needs finite numbers, got {focus_rate}, {comparator_rate}, p={p_one_sided}")
    right_way = focus_rate < comparator_rate if claimed_lower else focus_rate > comparator_rate
    if not right_way:
        return NOT_REPRODUCED, f"the rate is not {'lower' if claimed_lower else 'higher'} (one-sided p = {p_one_sided:.3g})"
    if p_one_sided < alpha:
        return REPRODUCED, f"one-sided p = {p_one_sided:.3g} < {alpha:g}"
    verdict = NOT_REPRODUCED if says_significantly else PARTLY
    return verdict, f"the direction holds but one-sided p = {p_one_sided:.3g} >= {alpha:g}"


#: Relative difference below which two single runs count as a tie (no interval exists to say more).
TIE_TOLERANCE = 0.01


def single_run_rule(ours: float, theirs: float, claimed_lower: bool, tolerance: float = TIE_TOLERANCE,
                    what: str = "value") -> tuple[str, str]:
    """Verdict of "ours is lower (higher) than theirs" for one run of each, without an interval.

    Reproduced when the difference is in the claimed direction and larger
    than ``tolerance`` of ``theirs``; a smaller difference is a tie and, like
    the opposite direction, not reproduced.
    """
    if not (math.isfinite(ours) and math.isfinite(theirs)):
        raise ValueError(f"single_run_rule needs finite numbers, got {ours} and {theirs}")
    margin = tolerance * abs(theirs)
    difference = ours - theirs
    word = "lower" if claimed_lower else "higher"
    if (difference < -margin) if claimed_lower else (difference > margin):
        return REPRODUCED, f"{what} {ours:.3g} is {word} than {theirs:.3g} (one run each, no interval)"
    if abs(difference) <= margin:
        return NOT_REPRODUCED, f"{what} {ours:.3g} and {theirs:.3g} tie (within {tolerance:.0%}; one run each)"
    return NOT_REPRODUCED, f"{what} {ours:.3g} is not {word} than {theirs:.3g} (one run each, no interval)"


def threshold_rule(value: float, reproduced_at: float, partly_at: float | None = None,
                   higher_is_better: bool = True, what: str = "value") -> tuple[str, str]:
    """Verdict of one number against bars: reproduced at ``reproduced_at`` or better, partly at ``partly_at``."""
    if not math.isfinite(value):
        raise ValueError(f"threshold_rule needs a finite {what}, got {value}")
    better = (lambda a, b: a >= b) if higher_is_better else (lambda a, b: a <= b)
    sign = ">=" if higher_is_better else "<="
    if better(value, reproduced_at):
        return REPRODUCED, f"{what} {value:.3g} {sign} {reproduced_at:g}"
    if partly_at is not None and better(value, partly_at):
        return PARTLY, f"{what} {value:.3g} misses {sign} {reproduced_at:g} but meets {sign} {partly_at:g}"
    bar = partly_at if partly_at is not None else reproduced_at
    return NOT_REPRODUCED, f"{what} {value:.3g} misses {sign} {bar:g}"


def factor_rule(value: float, target: float, factor: float, partly_factor: float | None = None,
                what: str = "value") -> tuple[str, str]:
    """Verdict of "``value`` is about ``target``": within ``factor`` either way (partly within ``partly_factor``)."""
    if not (math.isfinite(value) and value > 0 and target > 0 and factor >= 1):
        raise ValueError(f"factor_rule needs positive finite numbers and factor >= 1, got {value}, {target}, {factor}")
    ratio = max(value / target, target / value)
    if ratio <= factor:
        return REPRODUCED, f"{what} {value:.3g} is within a factor {factor:g} of {target:g}"
    if partly_factor is not None and ratio <= partly_factor:
        return PARTLY, f"{what} {value:.3g} is {ratio:.2g}x off {target:g} (within {partly_factor:g}x, not {factor:g}x)"
    return NOT_REPRODUCED, f"{what} {value:.3g} is {ratio:.2g}x off {target:g} (more than {partly_factor or factor:g}x)"


def count_rule(holding: int, total: int, what: str = "parts") -> tuple[str, str]:
    """Verdict of a claim with ``total`` parts of which ``holding`` hold: all, some or none."""
    if total <= 0 or not 0 <= holding <= total:
        raise ValueError(f"count_rule needs 0 <= holding <= total and total > 0, got {holding} of {total}")
    text = f"{holding} of {total} {what} hold"
    if holding == total:
        return REPRODUCED, text
    if holding == 0:
        return NOT_REPRODUCED, text
    return PARTLY, text


def combine(verdicts: Iterable[str]) -> str:
    """One verdict for sub-claims: all reproduced -> reproduced, none reproduced or partly -> not reproduced, else partly.

    Sub-claims that could not be tested are left out; if none is left, the claim is not testable.
    """
    tested = [verdict for verdict in verdicts if verdict in (REPRODUCED, PARTLY, NOT_REPRODUCED)]
    if not tested:
        return NOT_TESTABLE
    if all(verdict == REPRODUCED for verdict in tested):
        return REPRODUCED
    if all(verdict == NOT_REPRODUCED for verdict in tested):
        return NOT_REPRODUCED
    return PARTLY
