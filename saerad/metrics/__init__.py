"""Report-generation metrics (Section 5.1 and Appendix B.2 of the paper).

Modules
-------
nlg
    BLEU-4, ROUGE-L and METEOR (pycocoevalcap) with per-study statistics for
    bootstrapping (``nlg_scores``, ``corpus_bleu4_from_stats``, ...).
chexpert_rules
    Rule-based CheXpert / SynthCXR labeler (``label_sentence``,
    ``label_report``, ``sentence_findings``).
chexpert_f1
    CheXpert F1 (micro / macro over the 5 key and all 14 observations) and the
    labeler agreement table (``evaluate_labeler``).
chexbert
    CheXbert labels from a user-supplied checkpoint (``load_chexbert``).
rger
    RadGraph partial reward (RGER) from a user-supplied RadGraph model
    (``load_rger``).
radfact
    RadFact's protocol (phrase splitting, entailment both ways, logical
    precision/recall) through :mod:`saerad.llm`, with offline responders.
oracle
    The exact RadFact of SynthCXR, where every sentence's facts are known.
planted
    A sentence against SynthCXR's planted findings by finding, side and size
    (``sentence_marks``, ``finding_f1_by_side_and_size``).
bootstrap
    Percentile confidence intervals over studies and paired differences.

Heavier dependencies (torch/transformers for CheXbert, radgraph for RGER,
Java for METEOR) are imported only when those modules are used.
"""

from saerad.metrics.chexpert_f1 import (
    KEY_OBSERVATIONS,
    binary_label_arrays,
    chexpert_f1,
    chexpert_f1_from_arrays,
    evaluate_labeler,
    labels_frame,
)
from saerad.metrics.chexpert_rules import (
    label_report,
    label_sentence,
    report_findings,
    sentence_findings,
    split_sentences,
)
from saerad.metrics.bootstrap import bootstrap_ci, paired_difference, summarise
from saerad.metrics.oracle import SentenceFacts, compare_to_oracle, oracle_radfact, study_truth
from saerad.metrics.radfact import (
    make_offline_radfact_client,
    offline_radfact_responder,
    radfact,
    radfact_means,
    radfact_prompts,
    radfact_summary,
)
from saerad.metrics.nlg import (
    corpus_bleu4_from_stats,
    corpus_meteor_from_stats,
    corpus_rouge_l_from_stats,
    mean_meteor_from_stats,
    nlg_scores,
)

__all__ = [
    "KEY_OBSERVATIONS",
    "SentenceFacts",
    "bootstrap_ci",
    "compare_to_oracle",
    "make_offline_radfact_client",
    "offline_radfact_responder",
    "oracle_radfact",
    "paired_difference",
    "radfact",
    "radfact_means",
    "radfact_prompts",
    "radfact_summary",
    "study_truth",
    "summarise",
    "binary_label_arrays",
    "chexpert_f1",
    "chexpert_f1_from_arrays",
    "corpus_bleu4_from_stats",
    "corpus_meteor_from_stats",
    "corpus_rouge_l_from_stats",
    "evaluate_labeler",
    "label_report",
    "label_sentence",
    "labels_frame",
    "mean_meteor_from_stats",
    "nlg_scores",
    "report_findings",
    "sentence_findings",
    "split_sentences",
]
