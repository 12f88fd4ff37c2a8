"""Column and metric names shared by the evaluation tables, and the row builder."""

from __future__ import annotations

#: ``source`` of a row that could not be measured in this profile (its ``note`` starts with "n/a: " and says
#: what it needs).  Not "n/a" itself, which pandas.read_csv would turn into a missing value.
NOT_MEASURED = "not measured"
TABLE_COLUMNS = ("system", "metric", "value", "ci_low", "ci_high", "source", "method", "n_studies", "note")
TABLE1_METRICS = ("RadFact F1", "BL4", "RG-L", "MTR", "RGER", "Ma-5", "Ma-14", "Mi-5", "Mi-14")
TABLE2_METRICS = ("RadFact precision", "RadFact recall", "RadFact F1")
CHEXPERT_KEYS = {"Ma-5": "macro_f1_5", "Ma-14": "macro_f1_14", "Mi-5": "micro_f1_5", "Mi-14": "micro_f1_14"}
CONFIG_LABELS = {"no_aux": "no auxiliary text", "indication": "with indication",
                 "indication_priors": "with indication + prior reports"}
NN_LABEL = "Baseline (nearest neighbour)"
ORACLE_METHOD = "oracle (SynthCXR facts)"
OFFLINE_METHOD = "offline approximation"
LLM_JUDGE_METHOD = "LLM judge"
NA_NO_LLM_JUDGE = ("n/a: needs an LLM judge (radfact_backend = anthropic, bedrock, vertex or openai, e.g. "
                   "Llama-3-70B-Instruct on a local OpenAI-compatible server)")
NA_NOT_SYNTHCXR = "n/a: needs SynthCXR's sentence facts and planted truth (MIMIC-CXR has neither)"


def table_row(system, metric, value=float("nan"), ci_low=float("nan"), ci_high=float("nan"), source="measured",
              method="", n_studies=None, note="") -> dict:
    """One row of a long table (:data:`TABLE_COLUMNS`)."""
    return {"system": system, "metric": metric, "value": value, "ci_low": ci_low, "ci_high": ci_high,
            "source": source, "method": method, "n_studies": n_studies, "note": note}
