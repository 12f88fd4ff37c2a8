"""Profiles of parameters and their validation against the notebooks.

A profile (``params/<profile>.yaml``) holds the values injected into each
chapter notebook by papermill::

    seed: 0                 # common: given to every stage
    stages:
      data:
        n_patients: 1500
      encode:
        batch_size: 64

The schema is the notebooks' own ``parameters`` cell: a name a profile or a
``--set`` gives must exist there, and its value must have the type of the
default written there. So a parameter is declared exactly once, next to the
code that uses it, and a typo is caught before any stage runs. The values a
parameter accepts beyond its type (a positive count, a probability, one of a
set of names) are declared once in :mod:`saerad.parameter_constraints` and
joined to it by :func:`stage_schema`, so they too are checked before any stage runs.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

if TYPE_CHECKING:
    from saerad.parameter_constraints import Constraint

#: Names every chapter declares and the runner fills in for all stages.
COMMON_PARAMETERS = ("profile", "seed", "artifacts_root")

#: Parameters that decide where and how a stage's work runs, not what it computes: the artifacts
#: folder, and how SAE training is spread over processes and threads (weights are the same for any
#: number of worker processes, tests/test_sae_parallel.py; the thread count changes only the order of
#: floating-point sums). A result's fingerprint leaves them out, so changing them stales nothing.
EXECUTION_ONLY_PARAMETERS = frozenset({"artifacts_root", "training_workers", "threads_per_run"})


class ParameterError(ValueError):
    """A profile or override names an unknown parameter or has a wrong type."""


class _Loader(yaml.SafeLoader):
    """YAML as PyYAML reads it, except that ``3e-4`` is a float (YAML 1.2), not the string YAML 1.1 makes it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text; numbers in exponent form without a dot (``3e-4``) are floats."""
    return yaml.load(text, Loader=_Loader)


@dataclass(frozen=True)
class NotebookParameter:
    """One entry of a notebook's ``parameters`` cell, and what its values must be beyond their type."""

    name: str
    default: Any
    help: str = ""
    constraint: Constraint | None = None

    @property
    def type_name(self) -> str:
        return "any" if self.default is None else type(self.default).__name__

    @property
    def expected(self) -> str:
        """What the parameter accepts, in words: ``int >= 1``, ``str one of 'decode', 'header', 'none'``."""
        if self.constraint is None:
            return self.type_name
        # A None default says nothing of the type: the constraint alone says what is accepted.
        return self.constraint.expected if self.default is None else f"{self.type_name} {self.constraint.expected}"


def notebook_parameters(notebook: str | Path) -> dict[str, NotebookParameter]:
    """Read the ``parameters`` cell of a notebook.

    Parameters
    ----------
    notebook
        Path to an ``.ipynb`` whose cell tagged ``parameters`` assigns
        literals (numbers, strings, booleans, None, lists, dicts).

    Returns
    -------
    dict
        Parameter name to :class:`NotebookParameter`.
    """
    from papermill.inspection import inspect_notebook

    notebook = Path(notebook)
    found = inspect_notebook(str(notebook))
    if not found:
        raise ParameterError(f"{notebook}: no cell tagged 'parameters'")
    parameters = {}
    for name, entry in found.items():
        try:
            default = ast.literal_eval(entry["default"])
        except (ValueError, SyntaxError) as error:
            raise ParameterError(
                f"{notebook}: default of parameter {name!r} must be a literal, got {entry['default']!r}"
            ) from error
        parameters[name] = NotebookParameter(name, default, entry.get("help", ""))
    return parameters


def stage_schema(stage: str, notebook: str | Path) -> dict[str, NotebookParameter]:
    """The parameters of ``stage``'s notebook, each with its constraint (:mod:`saerad.parameter_constraints`).

    Raises
    ------
    ParameterError
        When a constraint names a parameter the notebook does not declare (renamed or removed): the
        constraint would otherwise stop checking anything without a word.
    """
    from dataclasses import replace

    from saerad.parameter_constraints import constraints_for

    schema = notebook_parameters(notebook)
    constraints = constraints_for(stage)
    stale = sorted(set(constraints) - set(schema) - set(COMMON_PARAMETERS))
    if stale:
        raise ParameterError(f"saerad/parameter_constraints.py: stage {stage!r} constrains {stale}, which "
                             f"{Path(notebook).name}'s parameters cell does not declare")
    return {name: replace(parameter, constraint=constraints.get(name)) for name, parameter in schema.items()}


def check_value(where: str, parameter: NotebookParameter, value: Any) -> None:
    """Raise :class:`ParameterError` if ``value`` cannot stand for ``parameter``: wrong type, or out of range."""
    _check_type(where, parameter, value)
    # None is accepted where the notebook's own default is None, whatever the constraint says.
    if parameter.constraint is None or (value is None and parameter.default is None):
        return
    if not parameter.constraint.allows(value):
        raise ParameterError(f"{where}: parameter {parameter.name!r} expects {parameter.expected}, got {value!r}")


def _check_type(where: str, parameter: NotebookParameter, value: Any) -> None:
    """Raise :class:`ParameterError` if ``value`` has not the type of the parameter's default (None: any)."""
    expected = parameter.default
    if expected is None or value is None:
        return
    if isinstance(expected, bool) or isinstance(value, bool):
        ok = isinstance(expected, bool) and isinstance(value, bool)
    elif isinstance(expected, float):
        ok = isinstance(value, (int, float))
    else:
        ok = isinstance(value, type(expected))
    if not ok:
        raise ParameterError(
            f"{where}: parameter {parameter.name!r} expects {parameter.type_name} "
            f"(default {expected!r}), got {type(value).__name__} {value!r}"
        )


def load_profile(path: str | Path) -> dict[str, Any]:
    """Load a profile YAML file into ``{"common": {...}, "stages": {...}}``."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"profile file {path} does not exist")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ParameterError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(raw, dict):
        raise ParameterError(f"{path}: expected a mapping at the top level")
    stages = raw.pop("stages", {}) or {}
    if not isinstance(stages, dict) or not all(isinstance(v, dict) or v is None for v in stages.values()):
        raise ParameterError(f"{path}: 'stages' must map stage names to mappings of parameters")
    unknown_common = set(raw) - set(COMMON_PARAMETERS)
    if unknown_common:
        raise ParameterError(
            f"{path}: unknown top-level key(s) {sorted(unknown_common)}; top level holds only "
            f"{list(COMMON_PARAMETERS)} and 'stages'"
        )
    return {"common": raw, "stages": {name: dict(values or {}) for name, values in stages.items()}}


def parse_overrides(assignments: list[str]) -> list[tuple[str | None, str, Any]]:
    """Parse ``--set`` arguments ``[stage.]key=value`` (values read as YAML).

    Returns
    -------
    list of (stage or None, key, value)
        ``stage`` is None for a bare key, which applies to every stage that
        declares it.
    """
    parsed = []
    for assignment in assignments:
        if "=" not in assignment:
            raise ParameterError(f"--set {assignment!r}: expected key=value or stage.key=value")
        target, text = assignment.split("=", 1)
        stage, _, key = target.rpartition(".")
        if not key:
            raise ParameterError(f"--set {assignment!r}: empty parameter name")
        try:
            value = load_yaml(text) if text != "" else ""
        except yaml.YAMLError as error:
            raise ParameterError(f"--set {assignment!r}: value is not valid YAML ({error})") from error
        parsed.append((stage or None, key, value))
    return parsed


def resolve_parameters(
    profile_name: str,
    profile: Mapping[str, Any],
    schemas: Mapping[str, Mapping[str, NotebookParameter]],
    overrides: list[tuple[str | None, str, Any]],
    artifacts_root: str,
) -> dict[str, dict[str, Any]]:
    """Merge profile, overrides and common values into per-stage parameters.

    Every name is checked against the schema of the stage it goes to; the
    first problem raises :class:`ParameterError` naming the stage, the
    parameter and what was expected.

    Parameters
    ----------
    profile_name
        Name of the profile (injected as ``profile``).
    profile
        Output of :func:`load_profile`.
    schemas
        Stage name to the parameters of its notebook, in run order.
    overrides
        Output of :func:`parse_overrides`.
    artifacts_root
        Folder holding every stage's artifacts for this profile.
    """
    common = {"profile": profile_name, "seed": 0, "artifacts_root": artifacts_root}
    common.update(profile["common"])
    unknown_stages = set(profile["stages"]) - set(schemas)
    if unknown_stages:
        raise ParameterError(
            f"profile {profile_name!r}: unknown stage(s) {sorted(unknown_stages)}; stages are {list(schemas)}"
        )

    resolved: dict[str, dict[str, Any]] = {}
    for stage, schema in schemas.items():
        missing_common = [name for name in COMMON_PARAMETERS if name not in schema]
        if missing_common:
            raise ParameterError(f"stage {stage!r}: its notebook must declare {missing_common} in its parameters cell")
        values = dict(common)
        for key, value in profile["stages"].get(stage, {}).items():
            values[key] = value
        resolved[stage] = values

    for stage, key, value in overrides:
        if stage is not None:
            if stage not in schemas:
                raise ParameterError(f"--set {stage}.{key}: unknown stage {stage!r}; stages are {list(schemas)}")
            if key not in schemas[stage]:
                raise ParameterError(_unknown(stage, key, schemas[stage]))
            resolved[stage][key] = value
        else:
            targets = [name for name, schema in schemas.items() if key in schema]
            if not targets:
                raise ParameterError(f"--set {key}: no stage declares a parameter {key!r}")
            for name in targets:
                resolved[name][key] = value

    for stage, values in resolved.items():
        for key, value in values.items():
            if key not in schemas[stage]:
                raise ParameterError(_unknown(stage, key, schemas[stage]))
            check_value(f"stage {stage!r}", schemas[stage][key], value)
    return resolved


def _unknown(stage: str, key: str, schema: Mapping[str, NotebookParameter]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(schema), n=3)
    hint = f"; did you mean {close}?" if close else ""
    return f"stage {stage!r}: unknown parameter {key!r}{hint} (known: {sorted(schema)})"


def with_defaults(schema: Mapping[str, NotebookParameter], values: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of a notebook: its default, replaced by ``values`` where given (notebook order)."""
    merged = {name: parameter.default for name, parameter in schema.items()}
    merged.update(values)
    return merged


def stage_parameters(artifacts_root: str | Path, stage: str, notebooks_dir: str | Path | None = None) -> dict[str, Any]:
    """The parameters a stage ran with (or is running with): its notebook's defaults, overridden by its record.

    This is the one place a chapter reads another stage's settings. Records written by
    :mod:`saerad.pipeline` hold every parameter already; the defaults also complete older
    records, which held only the values a profile or ``--set`` gave. Without a record
    (the stage never ran) the notebook's defaults are returned.

    Parameters
    ----------
    artifacts_root
        ``artifacts/<profile>`` (relative paths are resolved against the repository root).
    stage
        A stage name of :data:`saerad.pipeline.STAGES`.
    notebooks_dir
        Folder of the chapter notebooks (default: the repository's ``notebooks/``).
    """
    from saerad.io import read_json
    from saerad.paths import project_path

    recorded = project_path(artifacts_root) / stage / "stage.json"
    values = read_json(recorded).get("parameters", {}) if recorded.exists() else {}
    return stage_defaults(stage, values, notebooks_dir)


def stage_defaults(stage: str, values: Mapping[str, Any] | None = None,
                   notebooks_dir: str | Path | None = None) -> dict[str, Any]:
    """A stage's notebook defaults, replaced by ``values`` where given (the pipeline passes only what is set)."""
    from saerad.paths import REPO_ROOT
    from saerad.pipeline import STAGES

    notebooks = {entry.name: entry.notebook for entry in STAGES}
    if stage not in notebooks:
        raise ParameterError(f"unknown stage {stage!r}; stages are {sorted(notebooks)}")
    notebook = Path(notebooks_dir or REPO_ROOT / "notebooks") / notebooks[stage]
    return with_defaults(notebook_parameters(notebook), values or {})
