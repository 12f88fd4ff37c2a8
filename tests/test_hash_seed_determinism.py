"""Byte-identical output whatever PYTHONHASHSEED is: the offline describer, scorer, composer and RadFact judge.

String hashes (and with them the iteration order of sets and the ``str()`` of a frozenset) change from one
Python process to the next unless PYTHONHASHSEED is fixed; no output may depend on them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Statements that tie on support and lift, each about two findings: which one the describer picks with
# max_statements=1 was decided by str(frozenset), i.e. by string hashes.
SCRIPT = r'''
import itertools, json
from sklearn.metrics import roc_auc_score
from saerad.features.annotation import annotation_prompt
from saerad.features.describer import OfflineDescriber, StatementKeys
from saerad.features.explanation import OfflineScorer, parse_scores, scoring_prompt
from saerad.metrics.chexpert_rules import report_findings, sentence_findings
from saerad.metrics.radfact import make_offline_radfact_client, radfact
from saerad.reports.active import ActiveFeature
from saerad.reports.composer import compose_report

SENTENCES = ["Cardiomegaly with small left pleural effusion.", "Right lower lobe consolidation and atelectasis.",
             "Endotracheal tube and nasogastric tube in place.", "Mild pulmonary edema and cardiomegaly.",
             "Pacemaker and sternal wires are seen.", "Left pneumothorax and rib fracture."]
corpus = [f"{s} No acute osseous abnormality." for s in SENTENCES for _ in range(4)] + ["Clear lungs."] * 40
describer = OfflineDescriber(corpus, sentence_findings, min_support=3, min_lift=2.0, max_statements=1)
scorer = OfflineScorer(StatementKeys(sentence_findings))
out, descriptions = [], {}
for feature, (a, b) in enumerate(itertools.combinations(SENTENCES, 2)):
    reply = describer.respond(annotation_prompt([f"{a} Clear lungs."] * 5 + [f"{b} Clear lungs."] * 5))
    description = reply.split("*This feature represents ", 1)[1].rstrip(".")
    descriptions[feature] = {"feature": feature, "status": "ok", "description": description}
    held_out = [a + " Clear lungs.", b, "Clear lungs.", "No effusion."]
    scores = parse_scores(scorer.respond(scoring_prompt(description, held_out, feature)), len(held_out))
    out.append({"reply": reply, "scores": scores, "auroc": roc_auc_score([1, 1, 0, 0], scores)})
reports = []
for start in range(len(descriptions)):
    active = [ActiveFeature(f % len(descriptions), 1.0, 1.0 / (1 + k)) for k, f in enumerate(range(start, start + 4))]
    composed = compose_report(active, descriptions, max_sentences=3)
    reports.append(composed.text)
    out.append([composed.text, [s.feature_ids for s in composed.sentences]])
out.append([list(report_findings(text).items()) for text in SENTENCES])
out.append(radfact(reports, [SENTENCES[k % 6] for k in range(len(reports))], make_offline_radfact_client(),
                   progress=False).to_csv())
print(json.dumps(out, default=str))
'''


def _run(seed: str) -> bytes:
    environment = {**os.environ, "PYTHONHASHSEED": seed}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=environment, capture_output=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return result.stdout


def test_offline_describer_and_scorer_do_not_depend_on_the_hash_seed():
    first, second = _run("1"), _run("2")
    assert len(first) > 1000
    assert first == second
