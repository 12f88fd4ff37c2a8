"""Checks the stages that call a language model make before they do any work (see :mod:`saerad.preflight`).

The features (describer, scorer), reports (composer) and metrics (RadFact judge)
stages each check, in this order and before their first cell of work:

1. data protection: if the data stage's reports are protected text (MIMIC-CXR,
   read from ``data/dataset.json``, whatever the profile is called) and a
   backend sends prompts off this machine, ``acknowledge_restricted_data_use``
   must be true;
2. credentials: the backend has an API key or other credentials;
3. the endpoint answers within a few seconds (no prompt is sent).

Each failure raises :class:`saerad.preflight.PreflightError` naming the
parameter to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from saerad.preflight import PreflightError, register

#: The language-model roles of each stage: (backend parameter, model parameter).
LLM_ROLES: dict[str, tuple[tuple[str, str], ...]] = {
    "features": (("describer_backend", "describer_model"), ("scorer_backend", "scorer_model")),
    "reports": (("composer_backend", "composer_model"),),
    "metrics": (("radfact_backend", "radfact_model"),),
}
BASE_URL_PARAMETER = "llm_base_url"
ACKNOWLEDGE_PARAMETER = "acknowledge_restricted_data_use"


def stage_settings(stage: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` over the defaults of the stage's notebook (the pipeline passes only what a profile sets)."""
    from saerad.params import stage_defaults

    return stage_defaults(stage, parameters)


def check_llm_stage(stage: str, parameters: Mapping[str, Any], artifacts_root: str | Path) -> None:
    """Raise PreflightError if ``stage``'s language-model settings cannot work or would leak protected text.

    Parameters
    ----------
    stage
        A key of :data:`LLM_ROLES`.
    parameters
        The stage's parameters (the pipeline's resolved values, or a chapter's ``globals()``).
    artifacts_root
        ``artifacts/<profile>``; relative paths are taken from the repository root.
    """
    from saerad.llm import BACKENDS, LLMConfigurationError, check_connection
    from saerad.mimic.loader import reports_restriction
    from saerad.paths import project_path

    settings = stage_settings(stage, parameters)
    base_url = settings.get(BASE_URL_PARAMETER) or None
    roles = [(backend_name, model_name, settings.get(backend_name, "offline"), settings.get(model_name) or None)
             for backend_name, model_name in LLM_ROLES[stage]]
    used = [role for role in roles if role[2] != "offline"]
    for backend_name, _, backend, _ in used:
        if backend not in BACKENDS:
            raise PreflightError(f"stage {stage!r}: {stage}.{backend_name}={backend!r} is not a backend; expected "
                                 f"one of {list(BACKENDS)}. Nothing has been run.")
    if not used:
        return

    _check_protection(stage, settings, used, base_url,
                      lambda: reports_restriction(project_path(artifacts_root) / "data"))

    checked: set[tuple] = set()
    for backend_name, model_name, backend, model in used:
        if (backend, model) in checked:
            continue
        checked.add((backend, model))
        if backend == "openai" and model is None:
            raise PreflightError(f"stage {stage!r}: {stage}.{backend_name}='openai' needs a model: set "
                                 f"{stage}.{model_name} to the name the server serves (e.g. "
                                 "meta-llama/Meta-Llama-3-70B-Instruct). Nothing has been run.")
        connection = {"base_url": base_url} if base_url else {}
        try:
            check_connection(backend, model, **connection)
        except LLMConfigurationError as error:
            raise PreflightError(
                f"stage {stage!r}, {stage}.{backend_name}={backend!r}: {str(error).rstrip('.')}. Fix it, or set "
                f"{stage}.{backend_name}=offline. Nothing has been run.") from error


def _check_protection(stage: str, settings: Mapping[str, Any], used: list[tuple], base_url: str | None,
                      restriction) -> None:
    """Raise PreflightError if a backend of ``used`` sends text off this machine, the text is protected
    (``restriction()`` → ``(restricted, why)``, asked only then) and the stage has no acknowledgment."""
    from saerad.llm import is_remote

    outgoing = [role for role in used if is_remote(role[2], base_url)]
    if not outgoing or settings.get(ACKNOWLEDGE_PARAMETER, False):
        return
    restricted, why = restriction()
    if restricted:
        backend_name, _, backend, _ = outgoing[0]
        raise PreflightError(
            f"stage {stage!r} would send report text off this machine ({stage}.{backend_name}={backend!r}"
            + (f" at {base_url}" if base_url else "") + f"), and that text is protected: {why}. MIMIC-CXR's "
            "data use agreement forbids giving its reports to an online service that may keep or use them. "
            f"Choose one: set {stage}.{backend_name}=offline; or serve a model on this machine and set "
            f"{stage}.{backend_name}=openai with {stage}.{BASE_URL_PARAMETER}=http://127.0.0.1:8000/v1; or, "
            "only if the provider is bound to zero data retention under terms that cover this data, set "
            f"{stage}.{ACKNOWLEDGE_PARAMETER}=true. Nothing has been run and no request has been sent.")


def planned_restriction(data_parameters: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the data stage, run with ``data_parameters``, will keep protected report text, and why.

    The same rule as the loaders' ``restricted_text`` mark: SynthCXR's and Open-i's reports are not
    restricted; MIMIC-CXR's are, unless ``dataset_root`` is a SynthCXR world laid out as MIMIC-CXR (the
    tests' fixtures); an unknown source counts as restricted.
    """
    from saerad.mimic.loader import is_synthcxr_root
    from saerad.paths import project_path

    source = data_parameters.get("source", "synthcxr")
    if source in ("synthcxr", "openi"):
        return False, f"data.source={source!r}"
    root = data_parameters.get("dataset_root") or ""
    if source == "mimic" and root and is_synthcxr_root(project_path(root)):
        return False, f"data.source='mimic' reads a SynthCXR world ({root})"
    return True, f"data.source={source!r} reads MIMIC-CXR reports" + (f" from {root}" if root else "")


def check_planned_protection(parameters: Mapping[str, Mapping[str, Any]], artifacts_root: str | Path,
                             data_runs: bool) -> None:
    """The data-protection check of every language-model stage in ``parameters``, before the pipeline runs any.

    ``parameters`` maps the selected stages to their resolved parameters (with ``"data"`` among them, or
    not). Where the reports come from is judged from the data stage's parameters when it runs now
    (``data_runs``), else from what it recorded (``data/dataset.json``), as the stage's own check does.
    Credentials and endpoints are checked when each stage starts.
    """
    from saerad.llm import BACKENDS
    from saerad.mimic.loader import reports_restriction
    from saerad.paths import project_path

    data_parameters = parameters.get("data")
    for stage, stage_parameters in parameters.items():
        if stage not in LLM_ROLES:
            continue
        settings = stage_settings(stage, stage_parameters)
        base_url = settings.get(BASE_URL_PARAMETER) or None
        used = [(backend_name, model_name, settings.get(backend_name, "offline"), settings.get(model_name) or None)
                for backend_name, model_name in LLM_ROLES[stage]]
        used = [role for role in used if role[2] != "offline" and role[2] in BACKENDS]  # others: the stage's check
        if data_runs and data_parameters is not None:
            restriction = lambda: planned_restriction(data_parameters)  # noqa: E731
        else:
            restriction = lambda: reports_restriction(project_path(artifacts_root) / "data")  # noqa: E731
        _check_protection(stage, settings, used, base_url, restriction)


def _register(stage: str) -> None:
    @register(stage)
    def check(parameters: Mapping[str, Any], artifacts_root: Path) -> None:
        check_llm_stage(stage, parameters, artifacts_root)


for _stage in LLM_ROLES:
    _register(_stage)
