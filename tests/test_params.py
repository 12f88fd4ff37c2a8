import pytest

from saerad.params import NotebookParameter, ParameterError, load_profile, parse_overrides, resolve_parameters

SCHEMAS = {
    "data": {name: NotebookParameter(name, default) for name, default in
             {"profile": "demo", "seed": 0, "artifacts_root": "a", "n_patients": 10, "ratio": 0.5, "flag": False,
              "root": ""}.items()},
    "encode": {name: NotebookParameter(name, default) for name, default in
               {"profile": "demo", "seed": 0, "artifacts_root": "a", "batch_size": 8, "device": "cpu",
                "optional": None}.items()},
}
PROFILE = {"common": {"seed": 3}, "stages": {"data": {"n_patients": 20}}}


def resolve(overrides=(), profile=PROFILE):
    return resolve_parameters("demo", profile, SCHEMAS, parse_overrides(list(overrides)), "artifacts/demo")


def test_profile_common_and_overrides_merge():
    resolved = resolve(["encode.batch_size=4", "seed=7", "ratio=1", "optional=[1, 2]"])
    assert resolved["data"] == {"profile": "demo", "seed": 7, "artifacts_root": "artifacts/demo",
                                "n_patients": 20, "ratio": 1}
    assert resolved["encode"]["batch_size"] == 4 and resolved["encode"]["optional"] == [1, 2]


@pytest.mark.parametrize("override, message", [
    (["encode.batchsize=4"], r"unknown parameter 'batchsize'; did you mean \['batch_size'\]"),
    (["nothing=1"], "no stage declares a parameter 'nothing'"),
    (["train.x=1"], "unknown stage 'train'"),
    (["encode.batch_size=four"], "'batch_size' expects int .* got str 'four'"),
    (["data.flag=1"], "'flag' expects bool"),
    (["data.n_patients=2.5"], "'n_patients' expects int"),
    (["novalue"], "expected key=value"),
])
def test_bad_overrides_are_refused_with_a_clear_message(override, message):
    with pytest.raises(ParameterError, match=message):
        resolve(override)


def test_unknown_name_in_profile_is_refused():
    with pytest.raises(ParameterError, match="stage 'data': unknown parameter 'n_patient'"):
        resolve(profile={"common": {}, "stages": {"data": {"n_patient": 3}}})
    with pytest.raises(ParameterError, match="unknown stage"):
        resolve(profile={"common": {}, "stages": {"sae": {}}})


def test_profile_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\nlearning_rate: 1\n")
    with pytest.raises(ParameterError, match=r"bad.yaml: unknown top-level key\(s\) \['learning_rate'\]"):
        load_profile(bad)
    with pytest.raises(ParameterError, match="does not exist"):
        load_profile(tmp_path / "missing.yaml")


def test_shipped_profiles_validate_against_the_notebooks():
    from saerad.pipeline import REPO_ROOT, STAGES
    from saerad.params import notebook_parameters

    schemas = {s.name: notebook_parameters(REPO_ROOT / "notebooks" / s.notebook) for s in STAGES}
    for profile in ("demo", "paper"):
        loaded = load_profile(REPO_ROOT / "params" / f"{profile}.yaml")
        resolved = resolve_parameters(profile, loaded, schemas, [], f"artifacts/{profile}")
        assert set(resolved) == {s.name for s in STAGES}


def test_exponent_floats_without_a_dot_are_numbers():
    # YAML 1.1 reads 3e-4 as a string; a user typing --set sae.lr=3e-4 means a number.
    assert parse_overrides(["encode.ratio=3e-4", "x=1E3", "y=-2e+2", "name=e5"]) == [
        ("encode", "ratio", 0.0003), (None, "x", 1000.0), (None, "y", -200.0), (None, "name", "e5")]
    resolved = resolve(["ratio=3e-4"])
    assert resolved["data"]["ratio"] == pytest.approx(3e-4)


def test_exponent_floats_in_a_profile_file_are_numbers(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  sae:\n    lr: 3e-4\n")
    assert load_profile(path)["stages"]["sae"]["lr"] == pytest.approx(3e-4)


def test_a_profile_that_gives_only_the_seed_resolves_every_parameter_of_every_stage(tmp_path):
    from saerad.params import COMMON_PARAMETERS, notebook_parameters
    from saerad.pipeline import REPO_ROOT, STAGES, plan

    (tmp_path / "seed_only.yaml").write_text("seed: 3\n")
    planned = plan("seed_only", params_dir=tmp_path)
    assert planned.artifacts_root == REPO_ROOT / "artifacts" / "seed_only"
    for stage in STAGES:
        schema = notebook_parameters(REPO_ROOT / "notebooks" / stage.notebook)
        defaults = {name: parameter.default for name, parameter in schema.items()}
        values = planned.parameters[stage.name]
        assert set(values) == set(defaults), stage.name
        assert values["seed"] == 3 and values["profile"] == "seed_only"
        assert {k: v for k, v in values.items() if k not in COMMON_PARAMETERS} == {
            k: v for k, v in defaults.items() if k not in COMMON_PARAMETERS}, stage.name


def test_stage_parameters_are_the_notebook_defaults_merged_with_the_record(tmp_path):
    from saerad.io import write_json
    from saerad.params import notebook_parameters, stage_parameters
    from saerad.pipeline import REPO_ROOT, STAGES
    from saerad.reports.sae_sweep import stage_settings

    sae = next(stage for stage in STAGES if stage.name == "sae")
    defaults = {name: p.default for name, p in notebook_parameters(REPO_ROOT / "notebooks" / sae.notebook).items()}
    assert stage_parameters(tmp_path, "sae") == defaults  # never ran: the defaults
    # An older record held only what the profile gave: the defaults complete it.
    write_json(tmp_path / "sae" / "stage.json", {"parameters": {"expansion_factor": 2}})
    merged = stage_parameters(tmp_path, "sae")
    assert merged["expansion_factor"] == 2 and merged["steps"] == defaults["steps"]
    assert set(merged) == set(defaults)
    write_json(tmp_path / "features" / "stage.json", {"parameters": {"top_k": 4}})
    assert stage_settings(tmp_path, "features") == stage_parameters(tmp_path, "features")
    assert stage_settings(tmp_path, "features")["top_k"] == 4
    with pytest.raises(ParameterError, match="unknown stage 'train'"):
        stage_parameters(tmp_path, "train")


# -- declared ranges and choices, checked by plan() before any stage runs ------------------------------------

@pytest.mark.parametrize("assignment, message", [
    ("data.n_patients=0", "stage 'data': parameter 'n_patients' expects int >= 1, got 0"),
    ("sae.lr=-1", "stage 'sae': parameter 'lr' expects float > 0, got -1"),
    ("data.verify_images=bogus",
     "stage 'data': parameter 'verify_images' expects str one of 'decode', 'header', 'none', got 'bogus'"),
    ("metrics.radfact_backend=claude", "stage 'metrics': parameter 'radfact_backend' expects str one of 'offline'"),
    ("encode.probe_min_prevalence=1.5", "stage 'encode': parameter 'probe_min_prevalence' expects float in [0, 1]"),
    ("reports.configs=[no_aux, priors]", "stage 'reports': parameter 'configs' expects list whose items are each "
                                         "one of 'no_aux', 'indication', 'indication_priors', got ['no_aux', 'priors']"),
    ("sae.table3_steps=0", "stage 'sae': parameter 'table3_steps' expects >= 1, or None"),
    ("sae.steps=null", "stage 'sae': parameter 'steps' expects int >= 1, got None"),
    ("seed=-1", "stage 'data': parameter 'seed' expects int >= 0, got -1"),
    ("encode.baseline_pixels_side=1", "stage 'encode': parameter 'baseline_pixels_side' expects int 0 (skip) or an "
                                      "integer >= 2, got 1"),
    ("sae.encoder_arm_matched_l1={supervised: -1}", "stage 'sae': parameter 'encoder_arm_matched_l1' expects dict a "
                                                    "mapping of a name"),
    ("features.encoder_arms=[../up]", "stage 'features': parameter 'encoder_arms' expects list whose items are each "
                                      "a name of letters"),
])
def test_out_of_range_values_are_refused_by_plan_naming_stage_parameter_value_and_expectation(assignment, message):
    from saerad.pipeline import plan

    with pytest.raises(ParameterError) as refusal:
        plan("demo", [assignment])
    assert str(refusal.value).startswith(message)


def test_values_inside_the_declared_ranges_and_optional_nones_are_accepted():
    from saerad.pipeline import plan

    planned = plan("demo", ["sae.layer_norm_l1_coefficient=null", "sae.table3_steps=null", "encode.device=cuda:1",
                            "reports.configs=[]", "reader_study.simulated_cases=0", "sae.resampling_every=0"])
    assert planned.parameters["encode"]["device"] == "cuda:1"


@pytest.mark.parametrize("profile", ["demo", "iu", "paper"])
def test_shipped_profiles_plan_cleanly_with_the_constraints(profile):
    from saerad.pipeline import STAGES, plan

    assert set(plan(profile).parameters) == {stage.name for stage in STAGES}


def test_every_numeric_parameter_is_constrained_and_every_default_meets_its_constraint():
    from saerad.params import COMMON_PARAMETERS, check_value, stage_schema
    from saerad.pipeline import REPO_ROOT, STAGES

    unconstrained = []
    for stage in STAGES:
        for parameter in stage_schema(stage.name, REPO_ROOT / "notebooks" / stage.notebook).values():
            check_value(f"notebooks/{stage.notebook}", parameter, parameter.default)
            numeric = isinstance(parameter.default, (int, float)) and not isinstance(parameter.default, bool)
            if numeric and parameter.constraint is None and parameter.name not in COMMON_PARAMETERS:
                unconstrained.append(f"{stage.name}.{parameter.name}")
    assert not unconstrained, f"declare their ranges in saerad/parameter_constraints.py: {unconstrained}"


def test_a_constraint_on_a_parameter_the_notebook_lacks_is_an_error(monkeypatch):
    from saerad import parameter_constraints
    from saerad.params import stage_schema
    from saerad.pipeline import REPO_ROOT

    monkeypatch.setattr(parameter_constraints, "COMMON_CONSTRAINTS", {"n_patient": parameter_constraints.POSITIVE})
    with pytest.raises(ParameterError, match=r"stage 'data' constrains \['n_patient'\].*00_data.ipynb"):
        stage_schema("data", REPO_ROOT / "notebooks" / "00_data.ipynb")


def test_choice_sets_are_the_ones_the_code_uses():
    from saerad.llm import BACKENDS
    from saerad.parameter_constraints import stage_constraints
    from saerad.reports.prompt import CONFIGS

    constraints = stage_constraints()
    assert all(constraints["features"]["describer_backend"].allows(name) for name in BACKENDS)
    assert not constraints["features"]["describer_backend"].allows("claude")
    assert constraints["reports"]["configs"].allows(list(CONFIGS))
