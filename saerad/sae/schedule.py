"""Learning-rate and sparsity-coefficient schedules (Appendix B.1, B.3).

Steps are counted from 0 to ``total_steps - 1``; the value returned for step
``s`` is the one used by the optimiser update of step ``s``.

* learning rate: linear warm-up ``lr · (s + 1) / W`` over the first ``W`` steps
  (so step 0 already moves, and step ``W - 1`` reaches ``lr``), constant, then
  linear decay ``lr · (T - s) / D`` over the last ``D`` steps (full ``lr`` at
  the first decay step ``T - D``, ``lr / D`` at the last step, reaching zero
  just after it);
* λ: linear warm-up ``λ · (s + 1) / L`` over the first ``L`` steps, then constant.

``W``, ``D`` and ``L`` are the fractions times ``T``, rounded; a fraction
that rounds to zero steps means no warm-up (or decay).
"""

from __future__ import annotations


def phase_steps(total_steps: int, fraction: float) -> int:
    """Number of steps a warm-up or decay phase of ``fraction`` of training lasts."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"schedule fraction must lie in [0, 1], got {fraction}")
    return int(round(total_steps * fraction))


def learning_rate(step: int, total_steps: int, peak: float, warmup_fraction: float, decay_fraction: float) -> float:
    """Learning rate of optimiser step ``step`` (0-based)."""
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} is outside [0, {total_steps})")
    warmup = phase_steps(total_steps, warmup_fraction)
    decay = phase_steps(total_steps, decay_fraction)
    factor = 1.0
    if step < warmup:
        factor = (step + 1) / warmup
    decay_start = total_steps - decay
    if decay and step >= decay_start:
        # min(): a warm-up and decay that overlap (tiny runs) take the lower value.
        factor = min(factor, (total_steps - step) / decay)
    return peak * factor


def l1_coefficient(step: int, total_steps: int, peak: float, warmup_fraction: float) -> float:
    """Sparsity coefficient λ of optimiser step ``step`` (0-based)."""
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} is outside [0, {total_steps})")
    warmup = phase_steps(total_steps, warmup_fraction)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak
