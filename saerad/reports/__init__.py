"""Report generation from active SAE features (Section 4.2, Eqs. 10-11; Appendices B.5, B.6, F).

Modules, one idea each:

``active``      the active features of a study (Eq. 10) and their importance scores
``prompt``      the language-model prompt of Appendix B.5 in three configurations
``composer``    the offline composer: a paragraph from the descriptions alone (Appendix F's lower bound)
``provenance``  which features a sentence written by a language model came from
``baseline``    the nearest-neighbour baseline of Appendix B.6 (exact, blocked L2 search)
``generate``    ``reports/generated.jsonl`` for every test study; checks against SynthCXR's truth
``cost``        FLOPs and wall time per report of the offline path
"""

from saerad.reports.active import ActiveFeature, active_features, load_activations, study_activations
from saerad.reports.baseline import nearest_neighbour_reports, nearest_neighbours
from saerad.reports.composer import ComposedReport, ComposedSentence, Statement, compose_report
from saerad.reports.generate import (
    finding_f1_against_truth,
    generate_reports,
    read_generated,
    synthcxr_sentence_marks,
    tau_study,
)
from saerad.reports.prompt import CONFIGS, build_report_prompt, format_elapsed, report_prompt_text
from saerad.reports.provenance import attach_provenance, split_sentences

__all__ = [
    "ActiveFeature", "active_features", "load_activations", "study_activations", "nearest_neighbour_reports",
    "nearest_neighbours", "ComposedReport", "ComposedSentence", "Statement", "compose_report",
    "finding_f1_against_truth", "generate_reports", "read_generated", "synthcxr_sentence_marks", "tau_study",
    "CONFIGS", "build_report_prompt", "format_elapsed", "report_prompt_text", "attach_provenance", "split_sentences",
]
