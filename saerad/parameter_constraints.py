"""What each chapter parameter's value must be, beyond the type of its default.

A notebook's ``parameters`` cell declares a parameter's name, default (and so its type) and meaning
(:mod:`saerad.params`); this table adds, once per parameter, the values it accepts: a positive count,
a learning rate above zero, a probability in [0, 1], one of a fixed set of names. The pipeline checks
them in :func:`saerad.pipeline.plan`, before any stage runs, so ``--set data.n_patients=0`` stops at
once with the stage, the parameter, the value and what is expected, not half a minute into a kernel.

Where the code that uses a parameter keeps its set of choices (the language-model backends, the
report configurations, ...), the set is imported from there, so the two cannot drift apart.
``tests/test_params.py`` checks that every numeric parameter of every chapter is listed here and that
every notebook default is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence


@dataclass(frozen=True)
class Constraint:
    """The values a parameter accepts beyond its type.

    Attributes
    ----------
    expected
        What is accepted, in words that follow the type name: ``">= 1"``, ``"one of 'a', 'b'"``.
    accepts
        The test of a value (never given None: see ``allow_none``).
    allow_none
        Whether None is accepted (a parameter whose None means "skip" or "the default choice").
    """

    expected: str
    accepts: Callable[[Any], bool]
    allow_none: bool = False

    def allows(self, value: Any) -> bool:
        """Whether ``value`` is accepted."""
        if value is None:
            return self.allow_none
        try:
            return bool(self.accepts(value))
        except TypeError:  # e.g. a string compared with a number inside a list
            return False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def at_least(minimum: float, integer: bool = False) -> Constraint:
    """A number ``>= minimum`` (a whole number if ``integer``, for the items of a list)."""
    kind = "an integer " if integer else ""
    return Constraint(f"{kind}>= {minimum:g}", lambda value: _is_number(value) and value >= minimum
                      and (not integer or isinstance(value, int)))


def above(minimum: float) -> Constraint:
    """A number strictly greater than ``minimum``."""
    return Constraint(f"> {minimum:g}", lambda value: _is_number(value) and value > minimum)


def between(low: float, high: float, low_open: bool = False) -> Constraint:
    """A number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    return Constraint(f"in {'(' if low_open else '['}{low:g}, {high:g}]",
                      lambda value: _is_number(value) and (low < value if low_open else low <= value) and value <= high)


def one_of(choices: Sequence[str]) -> Constraint:
    """One of a fixed set of names."""
    choices = tuple(choices)
    return Constraint("one of " + ", ".join(map(repr, choices)), lambda value: value in choices)


def matching(pattern: str, expected: str) -> Constraint:
    """A string matching ``pattern`` as a whole."""
    compiled = re.compile(pattern)
    return Constraint(expected, lambda value: isinstance(value, str) and compiled.fullmatch(value) is not None)


def each(item: Constraint, count: int | None = None, non_empty: bool = False) -> Constraint:
    """A list whose every item meets ``item``; of exactly ``count`` items, or of at least one if ``non_empty``."""
    size = f"of {count} items, each" if count is not None else "of at least one item, each" if non_empty \
        else "whose items are each"

    def accepts(values: Any) -> bool:
        if not isinstance(values, (list, tuple)):
            return False
        if (count is not None and len(values) != count) or (non_empty and not values):
            return False
        return all(item.allows(value) for value in values)

    return Constraint(f"{size} {item.expected}", accepts)


def or_none(constraint: Constraint, meaning: str) -> Constraint:
    """``constraint``, or None, which means ``meaning``."""
    return replace(constraint, expected=f"{constraint.expected}, or None ({meaning})", allow_none=True)


def mapping_of(key: Constraint, value: Constraint) -> Constraint:
    """A mapping whose every key meets ``key`` and every value meets ``value``."""
    return Constraint(f"a mapping of {key.expected} to {value.expected}",
                      lambda items: isinstance(items, Mapping)
                      and all(key.allows(k) and value.allows(v) for k, v in items.items()))


POSITIVE = at_least(1)
NON_NEGATIVE = at_least(0)
RATE = above(0)
PROBABILITY = between(0, 1)
SHARE = between(0, 1, low_open=True)
#: Where torch runs a stage's work: "auto" takes CUDA when there is a GPU (saerad.encode.encoder.resolve_device).
DEVICE = matching(r"auto|cpu|cuda(:\d+)?", "one of 'cpu', 'cuda', 'cuda:N', 'auto'")
#: A comparison arm of the encode stage names a folder (encode/arms/<name>, sae/encoder_arms/...).
ARM_NAME = matching(r"[A-Za-z0-9][A-Za-z0-9_-]*", "a name of letters, digits, '_' and '-'")


def _choices() -> dict[str, tuple[str, ...]]:
    """The sets of names the stages' code accepts, from the modules that use them."""
    from saerad.data import SOURCES
    from saerad.encode.encoder import DTYPES
    from saerad.features.activations import STATISTICS_COLUMNS
    from saerad.llm import BACKENDS
    from saerad.mimic.loader import IMAGE_CHECKS
    from saerad.openi.loader import SPLITS
    from saerad.reports.composer import AGGREGATES
    from saerad.reports.generate import SYSTEMS
    from saerad.reports.prompt import CONFIGS

    # beta_quantile names a column of features/feature_stats.csv that holds an activation level.
    activation_levels = tuple(name for name in STATISTICS_COLUMNS if name not in ("feature", "density", "fire_count",
                                                                                  "dead"))
    return {"source": SOURCES, "dtype": DTYPES, "backend": BACKENDS, "image_check": IMAGE_CHECKS, "split": SPLITS,
            "aggregate": AGGREGATES, "system": SYSTEMS, "config": CONFIGS, "activation_level": activation_levels}


#: Constraints of the parameters every chapter declares (saerad.params.COMMON_PARAMETERS).
COMMON_CONSTRAINTS: dict[str, Constraint] = {
    "seed": NON_NEGATIVE,  # numpy's generators refuse negative seeds
}


def stage_constraints() -> dict[str, dict[str, Constraint]]:
    """Stage name to parameter name to :class:`Constraint`, for the stages of :data:`saerad.pipeline.STAGES`."""
    choices = _choices()
    backend = one_of(choices["backend"])
    return {
        "data": {
            "source": one_of(choices["source"]),
            "n_patients": POSITIVE,
            "image_size": at_least(16),  # SynthCXR draws no anatomy below 16 pixels (saerad.synthcxr.writer)
            "max_studies_per_patient": POSITIVE,
            "verify_images": one_of(choices["image_check"]),
            "max_priors": NON_NEGATIVE,
            "workers": POSITIVE,
            "n_example_images": POSITIVE,
        },
        "encode": {
            "device": DEVICE,
            "dtype": one_of(choices["dtype"]),
            "batch_size": POSITIVE,
            "chunk_size": POSITIVE,
            "num_workers": NON_NEGATIVE,  # 0: images are decoded in the main process
            "probe_min_prevalence": PROBABILITY,
            "projection_points": POSITIVE,
            "comparison_arms": mapping_of(ARM_NAME, matching(r".+", "a checkpoint (a local directory or hub id)")),
            # 0: no pixel baseline; a 1-pixel image has no layout to read
            "baseline_pixels_side": Constraint("0 (skip) or an integer >= 2",
                                               lambda value: isinstance(value, int) and (value == 0 or value >= 2)),
        },
        "sae": {
            "expansion_factor": POSITIVE,
            "steps": POSITIVE,
            "batch_size": POSITIVE,
            "lr": RATE,
            "l1_coefficient": NON_NEGATIVE,
            "l1_coefficient_conerly": NON_NEGATIVE,
            "table5_expansion_factors": each(at_least(1, integer=True), count=3),  # small, middle, large
            "table3_steps": or_none(POSITIVE, "the main run's steps"),
            "comparison_steps": POSITIVE,
            "lr_warmup_fraction": PROBABILITY,
            "checkpoint_every": POSITIVE,
            "device": DEVICE,
            "training_workers": or_none(POSITIVE, "one per core"),
            "threads_per_run": POSITIVE,
            "resampling_every": NON_NEGATIVE,  # 0: no resampling run
            "resampling_until": PROBABILITY,
            "dead_feature_token_fractions": each(SHARE),
            "layer_norm_l1_coefficient": or_none(NON_NEGATIVE, "no layer-normed run"),
            "dead_feature_expansion_factors": each(at_least(1, integer=True)),
            "matryoshka_k": POSITIVE,
            "matryoshka_prefix_fractions": each(SHARE, non_empty=True),
            "matryoshka_aux_k": NON_NEGATIVE,  # 0: no AuxK loss
            "encoder_arms": each(ARM_NAME),
            "encoder_arm_matched_l1": mapping_of(ARM_NAME, NON_NEGATIVE),
        },
        "features": {
            "top_k": POSITIVE,
            "chunk_size": POSITIVE,
            "describer_backend": backend,
            "scorer_backend": backend,
            "max_concurrency": POSITIVE,
            "min_support": POSITIVE,
            "min_lift": RATE,
            "max_statements": POSITIVE,
            "score_per_bin": POSITIVE,
            "score_negatives": POSITIVE,  # an explanation's AUROC needs studies where the feature is silent
            "search_reports": POSITIVE,
            "encoder_arms": each(ARM_NAME),
            "largest_features": POSITIVE,
            "example_study": NON_NEGATIVE,  # 0: the first test study the first dashboard feature fires on
            "localisation_split": one_of(choices["split"]),
            "device": DEVICE,
        },
        "reports": {
            "tau": NON_NEGATIVE,
            "statements_per_feature": NON_NEGATIVE,  # 0: every statement
            "max_sentences": POSITIVE,
            "aggregate": one_of(choices["aggregate"]),
            "tau_grid": each(NON_NEGATIVE, non_empty=True),
            "composer_backend": backend,
            "max_concurrency": POSITIVE,
            "configs": each(one_of(choices["config"])),
            "n_examples": POSITIVE,
            "device": DEVICE,
        },
        "metrics": {
            "n_resamples": POSITIVE,
            "radfact_backend": backend,
            "max_concurrency": POSITIVE,
            "device": DEVICE,
            "n_examples": POSITIVE,
        },
        "counterfactuals": {
            "image_size": at_least(4),  # the UNet halves it twice (saerad.counterfactual.decoder)
            "channels": each(at_least(1, integer=True), count=3),  # the UNet's three levels
            "norm_groups": POSITIVE,
            "epochs": POSITIVE,
            "batch_size": POSITIVE,
            "lr": RATE,
            "lr_warmup_steps": NON_NEGATIVE,
            "lr_decay_fraction": PROBABILITY,
            "checkpoint_every": POSITIVE,
            "sampling_steps": between(1, 1000),  # DDIM steps over a 1000-step noise schedule
            "beta": or_none(NON_NEGATIVE, "the feature's beta_quantile activation"),
            "beta_quantile": one_of(choices["activation_level"]),
            "images_per_group": POSITIVE,
            "segmentation_threshold": PROBABILITY,
            "classifier_regularisation": RATE,
            "sample_batch_size": POSITIVE,
            "device": DEVICE,
        },
        "reader_study": {
            "n_cases": POSITIVE,
            "systems": each(one_of(choices["system"]), non_empty=True),
            "simulated_cases": NON_NEGATIVE,  # 0: no simulated readers
            "simulated_error_rates": each(PROBABILITY),
        },
        "real_reports": {
            "n_resamples": POSITIVE,
            "min_support": POSITIVE,
            "examples_per_kind": POSITIVE,
            "describer_sets": POSITIVE,
            "describer_set_size": POSITIVE,
        },
        "scorecard": {},
    }


def constraints_for(stage: str) -> Mapping[str, Constraint]:
    """The constraints of ``stage``'s parameters, the common ones included (none for a stage not listed)."""
    return {**COMMON_CONSTRAINTS, **stage_constraints().get(stage, {})}
