"""Exercise solutions: stored with a fingerprint, stale when what produced them changes, glued for the page."""

import json

import pytest

from saerad.book import solutions


@pytest.fixture
def artifacts(tmp_path):
    root = tmp_path / "artifacts" / "demo"
    (root / "encode").mkdir(parents=True)
    (root / "encode" / "stage.json").write_text(json.dumps({"parameters": {"batch_size": 64}}))
    return root


def _register(exercise, value):
    def compute(artifacts_root, parameters):
        return {"answer": value * parameters["scale"]}

    solutions._REGISTRY.pop(exercise, None)
    solutions.solution(exercise, keys=("answer",), reads=("encode",), encode__scale=2)(compute)
    return solutions._REGISTRY[exercise]


def test_a_solution_is_stored_with_its_parameters_and_goes_stale_when_its_inputs_change(artifacts, tmp_path):
    entry = _register("99.1", 21)
    assert entry.parameters == {"encode.scale": 2}
    out = tmp_path / "solutions"
    assert solutions.solution_status(entry, artifacts, "demo", out)[0] == "not run"
    entry = solutions.Solution(entry.exercise, entry.keys, entry.reads, {"scale": 2}, entry.compute)
    record = solutions.run_solution(entry, artifacts, "demo", out)
    assert record["values"] == {"answer": 42} and record["parameters"] == {"scale": 2}
    assert solutions.solution_status(entry, artifacts, "demo", out)[0] == "current"
    # the chapter it reads ran with other parameters: the stored numbers are stale
    (artifacts / "encode" / "stage.json").write_text(json.dumps({"parameters": {"batch_size": 32}}))
    assert solutions.solution_status(entry, artifacts, "demo", out)[0] == "stale"
    solutions._REGISTRY.pop("99.1")


def test_how_a_stage_was_spread_over_cores_does_not_stale_a_solution(artifacts, tmp_path):
    entry = solutions.Solution("99.3", ("answer",), ("encode",), {"scale": 2},
                               lambda artifacts_root, parameters: {"answer": 1})
    solutions.run_solution(entry, artifacts, "demo", tmp_path)
    (artifacts / "encode" / "stage.json").write_text(json.dumps(
        {"parameters": {"batch_size": 64, "training_workers": 2, "threads_per_run": 1,
                        "artifacts_root": "elsewhere"}}))
    assert solutions.solution_status(entry, artifacts, "demo", tmp_path)[0] == "current"


def test_compute_must_return_exactly_the_declared_keys(artifacts, tmp_path):
    def compute(artifacts_root, parameters):
        return {"answr": 1}

    entry = solutions.Solution("99.2", ("answer",), ("encode",), {}, compute)
    with pytest.raises(ValueError, match="missing \\['answer'\\], unexpected \\['answr'\\]"):
        solutions.run_solution(entry, artifacts, "demo", tmp_path)


def test_every_registered_solution_has_keys_and_reads_known_stages():
    from saerad.pipeline import stage_names

    for exercise, entry in solutions.registry().items():
        assert entry.keys, exercise
        assert set(entry.reads) <= set(stage_names()), exercise


def test_a_solution_goes_stale_when_a_stage_upstream_of_what_it_reads_changes(artifacts, tmp_path):
    # It reads only the counterfactual stage, which trained on the SAE: a new encoder must stale it.
    entry = solutions.Solution("99.4", ("answer",), ("counterfactuals",), {},
                               lambda artifacts_root, parameters: {"answer": 1})
    assert {"encode", "sae", "counterfactuals"} <= set(solutions.read_stages(entry))
    solutions.run_solution(entry, artifacts, "demo", tmp_path)
    assert solutions.solution_status(entry, artifacts, "demo", tmp_path)[0] == "current"
    (artifacts / "encode").mkdir(parents=True, exist_ok=True)
    (artifacts / "encode" / "stage.json").write_text(json.dumps({"parameters": {"encoder_model": "another"}}))
    assert solutions.solution_status(entry, artifacts, "demo", tmp_path)[0] == "stale"
