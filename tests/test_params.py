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
