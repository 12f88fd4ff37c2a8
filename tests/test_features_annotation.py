"""Annotation prompt and parser, the offline describer, explanation scoring and text search."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from saerad.features.annotation import annotate_features, annotation_prompt, parse_description, reports_in_prompt
from saerad.features.describer import OfflineDescriber, StatementKeys
from saerad.features.descriptions import FeatureDescription, Statement, read_descriptions, write_descriptions
from saerad.features.explanation import (OfflineScorer, explanation_scores, parse_scores, scoring_prompt,
                                         scoring_sample)
from saerad.features.search import FeatureSearch
from saerad.llm import make_client
from saerad.text import normalise_sentence, split_sentences


def toy_findings(sentence: str) -> set:
    """A stand-in labeler: enough vocabulary for these tests, independent of the real one."""
    text = sentence.lower()
    found = set()
    for word, finding in (("pacemaker", "pacemaker"), ("effusion", "pleural_effusion"),
                          ("pneumothorax", "pneumothorax"), ("heart", "cardiomegaly")):
        if word in text:
            present = not (text.startswith("no ") or "normal" in text)
            found.add((finding, present))
    return found


CORPUS = (
    ["No pneumothorax. Heart size is normal."] * 60
    + ["Left-sided pacemaker in place. No pneumothorax."] * 8
    + ["Small left pleural effusion. No pneumothorax."] * 12
    + ["The lungs are clear."] * 20
)


def test_split_and_normalise():
    assert split_sentences("No effusion.  Heart size is 2.5 cm, e.g. large. Done") == [
        "No effusion.", "Heart size is 2.5 cm, e.g. large.", "Done"]
    assert normalise_sentence("A 2.5 cm Nodule!") == "a # cm nodule"
    assert split_sentences(float("nan")) == []


def test_prompt_round_trip_and_parser():
    reports = ["Left pacemaker.\nNo pneumothorax.", "Pacemaker leads in the right ventricle."]
    prompt = annotation_prompt(reports)
    assert "Report number 2:" in prompt.user and "*This feature represents" in prompt.user
    assert reports_in_prompt(prompt.user) == reports
    reply = "Thinking...\nReport 1 mentions...\n*This feature represents a left-sided pacemaker\nwith leads.\n\nDone"
    assert parse_description(reply) == ("a left-sided pacemaker with leads", None)
    assert parse_description("**This feature represents** cardiomegaly.")[0] == "cardiomegaly"
    text, note = parse_description("I think This feature represents an effusion.")
    assert text == "an effusion" and "no asterisk" in note
    assert parse_description("no idea")[0] is None
    assert parse_description("*This feature represents [your specific, detailed description].")[0] is None
    assert parse_description(None) == (None, "empty reply")


def test_offline_describer_picks_shared_over_represented_statements():
    describer = OfflineDescriber(CORPUS, toy_findings, min_support=3, min_lift=2.0)
    top = ["Left-sided pacemaker in place. No pneumothorax."] * 7 + ["No pneumothorax. Heart size is normal."] * 3
    chosen = describer.choose(top)
    assert chosen[0].text == "Left-sided pacemaker in place."
    # "No pneumothorax" is in every top report but also in nearly all of the corpus: not distinctive.
    assert all("pneumothorax" not in statement.text for statement in chosen)
    description, problem = parse_description(describer.describe(top))
    assert description.startswith("left-sided pacemaker in place") and problem is None
    nothing = parse_description(describer.describe(["The lungs are clear."] * 2 + ["No pneumothorax."] * 2))
    assert nothing[0] is None


def test_annotate_features_offline_writes_and_flags(tmp_path):
    describer = OfflineDescriber(CORPUS, toy_findings)
    client = make_client("offline", model=describer.name, responder=describer.respond, cache_dir=tmp_path / "cache")
    top_reports = {3: ["Left-sided pacemaker in place."] * 10, 5: ["No pneumothorax."] * 10}
    path = tmp_path / "descriptions.jsonl"
    descriptions = annotate_features(top_reports, client, path, finding_key=toy_findings, progress=False,
                                     skipped={9: "fires on no training study"})
    assert [description.feature for description in descriptions] == [3, 5, 9]
    assert descriptions[2].status == "flagged" and descriptions[2].flag_reason == "fires on no training study"
    by_feature = {description.feature: description for description in descriptions}
    assert by_feature[3].ok and by_feature[3].statements[0].findings == frozenset({("pacemaker", True)})
    assert not by_feature[5].ok and "This feature represents" in by_feature[5].flag_reason
    assert read_descriptions(path) == by_feature
    # The second run is answered from the cache.
    annotate_features(top_reports, client, path, finding_key=toy_findings, progress=False)
    assert client.usage()["cache_hits"] >= 2


def test_read_descriptions_names_bad_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"feature": 1, "status": "maybe", "description": "", "statements": []}) + "\n")
    with pytest.raises(ValueError, match=r"d.jsonl:1: field 'status'"):
        read_descriptions(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"d.jsonl:1: not valid JSON"):
        read_descriptions(path)


def test_scoring_separates_a_good_description_from_a_bad_one(tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    has_pacemaker = rng.random(n) < 0.3
    reports = {study: ("Left-sided pacemaker in place. No pneumothorax." if pm else "No pneumothorax. Lungs clear.")
               for study, pm in enumerate(has_pacemaker)}
    values = np.where(has_pacemaker, rng.uniform(1, 5, n), 0.0)
    noise = np.where(rng.random(n) < 0.3, rng.uniform(1, 5, n), 0.0)
    activations = sparse.csr_matrix(np.stack([values, noise], axis=1))
    sample = scoring_sample(activations, np.arange(n), [0, 1], per_bin=2, negatives=6, seed=1)
    assert set(sample.groupby("feature")["activating"].sum()) == {6}
    assert not sample.duplicated(["feature", "study_id"]).any()
    descriptions = {feature: FeatureDescription(feature, "ok", "a left-sided pacemaker in place",
                                                (Statement("Left-sided pacemaker in place.",
                                                           frozenset({("pacemaker", True)})),))
                    for feature in (0, 1)}
    scorer = OfflineScorer(StatementKeys(toy_findings))
    client = make_client("offline", model=scorer.name, responder=scorer.respond, cache_dir=tmp_path / "cache")
    per_feature, per_study = explanation_scores(sample, descriptions, reports, client, progress=False)
    by_feature = per_feature.set_index("feature")
    assert by_feature.loc[0, "auroc"] == 1.0 and by_feature.loc[0, "precision"] == 1.0
    assert by_feature.loc[1, "auroc"] < 0.9
    assert len(per_study) == len(sample)


def test_parse_scores():
    assert parse_scores('Sure: {"1": 0.9, "2": 1.4}', 2) == [0.9, 1.0]
    assert parse_scores('{"1": 0.9}', 2) is None
    assert parse_scores("nothing", 1) is None
    prompt = scoring_prompt("an effusion", ["A.", "B."], 7)
    assert prompt.key == "score-feature-7" and "Report 2:" in prompt.user


def test_search_ranks_features_by_what_their_reports_affirm():
    evidence = {
        1: ["Left-sided pacemaker with leads in the right ventricle."] * 4,  # fires on pacemaker studies only
        2: ["Small left pleural effusion.", "Small left pleural effusion.", "No pneumothorax."],
        3: ["Right pleural effusion.", "No pacemaker is seen. Heart size is normal."],  # negated mention only
        4: ["Left-sided pacemaker.", "Heart size is normal.", "Heart size is normal.", "Heart size is normal."],
        5: [],  # fires on no training study: not searchable
    }
    search = FeatureSearch(evidence, {1: "a pacemaker", 2: "a left effusion"}, n_reports=4)
    assert search.features == [1, 2, 3, 4]
    # Feature 1's reports all say pacemaker, feature 4's one in four; feature 3's only deny it.
    assert search.ranking("pacemaker") == [1, 4]
    assert search.ranking("left effusion")[0] == 2
    assert search.ranking("pneumothorax") == []  # only ever negated
    found = search.features_for("pacemaker", top=1)
    assert found["feature"].tolist() == [1] and found["description"].tolist() == ["a pacemaker"]
    top = pd.DataFrame({"feature": [2, 2, 1], "rank": [1, 2, 1], "study_id": [10, 11, 12],
                        "dicom_id": ["a", "b", "c"], "activation": [3.0, 2.0, 1.0]})
    studies = search.studies_for("left effusion", top, top_features=1)
    assert studies["study_id"].tolist() == [10, 11]
    with pytest.raises(ValueError, match="no feature has any report"):
        FeatureSearch({4: []})


def test_search_synonyms_widen_the_query_and_the_browser_index_scores_the_same():
    from sklearn.preprocessing import normalize

    from saerad.features.search import expand_query

    evidence = {7: ["An NG tube is seen with its tip in the stomach."], 8: ["The heart is normal."]}
    search = FeatureSearch(evidence)
    assert expand_query("Nasogastric tube").startswith("nasogastric tube ng tube")
    assert search.ranking("nasogastric tube") == [7]
    assert FeatureSearch(evidence, synonyms=()).ranking("nasogastric tube") == [7]  # "tube" alone still matches
    assert FeatureSearch(evidence, synonyms=()).scores("nasogastric tube")[0] < search.scores("nasogastric tube")[0]
    index = search.browser_index()
    assert index["features"] == [7, 8] and len(index["idf"]) == len(index["vocabulary"])
    # Rebuild the score from the exported numbers alone, as the atlas's JavaScript does.
    query = search.vectoriser.transform([expand_query("nasogastric tube")])
    query = normalize(query).toarray().ravel()
    rebuilt = [sum(weight * query[column] for column, weight in row) for row in index["rows"]]
    assert np.allclose(rebuilt, search.scores("nasogastric tube"), atol=1e-6)


def test_finding_queries_and_search_evaluation():
    from saerad.features.search import finding_queries, search_evaluation

    alignment = pd.DataFrame({"finding": ["pacemaker", "pleural_effusion"], "best_feature": [1, 2]})
    by_side = pd.DataFrame({"finding": ["pleural_effusion (left)", "pleural_effusion (right)", "pacemaker"],
                            "best_feature": [2, 3, 1]})
    queries = finding_queries(alignment, by_side)
    assert queries["query"].tolist() == ["pacemaker", "pleural effusion", "left pleural effusion",
                                         "right pleural effusion"]
    evidence = {1: ["Pacemaker in place."], 2: ["Left pleural effusion."], 3: ["Right pleural effusion."]}
    table = search_evaluation(FeatureSearch(evidence), queries)
    assert table["rank"].tolist()[0] == 1 and table["rank"].tolist()[2] == 1
    assert table.loc[3, "rank"] == 1 and table["reciprocal_rank"].between(0, 1).all()
    assert np.isnan(search_evaluation(FeatureSearch({1: ["Pacemaker."]}), queries.iloc[[1]])["rank"].iloc[0])


def test_search_evaluation_carries_each_targets_auroc_and_averages_over_the_recovered_ones():
    from saerad.features.search import finding_queries, mean_reciprocal_rank, search_evaluation

    alignment = pd.DataFrame({"finding": ["pacemaker", "rib_fracture"], "best_feature": [1, 1], "auroc": [0.98, 0.49]})
    by_side = pd.DataFrame({"finding": ["rib_fracture (left)"], "best_feature": [2], "auroc": [0.93]})
    queries = finding_queries(alignment, by_side)
    assert queries["target_auroc"].tolist() == [0.98, 0.49, 0.93]
    # Feature 1 fires on pacemaker studies, so "rib fracture" cannot rank it (its target, at chance) first.
    evidence = {1: ["Pacemaker in place."], 2: ["Left rib fracture."], 3: ["Rib fracture."]}
    table = search_evaluation(FeatureSearch(evidence), queries)
    assert table["target_auroc"].tolist() == [0.98, 0.49, 0.93]
    assert mean_reciprocal_rank(table) == 0.5  # pacemaker first; rib fracture's target not returned
    assert mean_reciprocal_rank(table, min_target_auroc=0.9) == 1.0
    assert mean_reciprocal_rank(table, sided=True) == 1.0
    assert np.isnan(mean_reciprocal_rank(table.iloc[[1]], min_target_auroc=0.9))
    # Tables without an auroc column still give queries, with NaN AUROCs.
    assert finding_queries(alignment.drop(columns="auroc"))["target_auroc"].isna().all()


def test_similar_studies_explains_each_neighbour_by_shared_features():
    from scipy import sparse

    from saerad.features.search import similar_studies

    dense = np.array([[1.0, 0.0, 2.0, 0.0], [1.0, 0.0, 2.0, 0.1], [0.0, 3.0, 0.0, 0.0], [0.9, 0.0, 0.0, 0.0]])
    index = pd.DataFrame({"study_id": [10, 11, 12, 13], "dicom_id": ["a", "b", "c", "d"]})
    found = similar_studies(sparse.csr_matrix(dense), index, 10, top=2)
    assert found["study_id"].tolist() == [11, 13]
    assert found["shared"].iloc[0] == [2, 0]
    with pytest.raises(KeyError, match="study 99"):
        similar_studies(sparse.csr_matrix(dense), index, 99)
