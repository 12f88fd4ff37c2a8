"""Scoring the generated reports: the paper's Table 1, Table 2 and Appendix G (the ``05`` chapter).

Modules
-------
schema
    Column and metric names of the long tables.
paper_values
    The numbers printed in the paper (``source="paper"``).
scoring
    Which studies are scored (:func:`scoring_sets`) and every Table 1 metric
    of one system as a per-study statistic (:func:`score_system`).
tables
    :func:`table1`, :func:`table2` with 95 % bootstrap intervals over studies,
    :func:`paired_differences`, and the book's views (:func:`table1_view`,
    :func:`table2_view`, and ours beside the paper's: :func:`table1_side_by_side`,
    :func:`paper_other_systems`, :func:`table2_side_by_side`).
checks
    pycocoevalcap run directly on the same texts; labeler agreement.
appendix_g
    RadFact against the reference report versus against the planted truth.

Tables are long data frames whose first columns are
``system, metric, value, ci_low, ci_high, source`` (as
``artifacts/<profile>/metrics/table1.csv`` requires), then
``method, n_studies, note``.  ``source`` is ``"measured"`` (value and 95 %
percentile-bootstrap interval over studies, in %), ``"paper"`` (a number
printed in the paper, no interval) or ``"not measured"`` (not measurable in
this profile; ``note`` reads "n/a: ..." and says what it needs).  Metric names follow the paper's Table 1
(``RadFact F1``, ``BL4``, ``RG-L``, ``MTR``, ``RGER``, ``Ma-5``, ``Ma-14``,
``Mi-5``, ``Mi-14``) and Table 2 (``RadFact precision``, ``RadFact recall``,
``RadFact F1``).
"""

from saerad.evaluation.appendix_g import appendix_g, judge_against_oracle, judged_sentences
from saerad.evaluation.checks import direct_pycocoevalcap, labeler_agreement, pycocoevalcap_check
from saerad.evaluation.paper_values import paper_table1, paper_table2
from saerad.evaluation.schema import (CHEXPERT_KEYS, CONFIG_LABELS, NN_LABEL, NOT_MEASURED, ORACLE_METHOD,
                                      TABLE1_METRICS, TABLE2_METRICS, TABLE_COLUMNS)
from saerad.evaluation.scoring import (CachedLabeler, Measure, ScoringSet, SystemScores, chexbert_labeler,
                                       radfact_client, rger_scorer, rule_labeler, score_system, scoring_sets,
                                       system_label)
from saerad.evaluation.tables import (cell_text, direction_against_paper, method_family, na_reasons,
                                      paired_differences, paper_other_systems, sae_sweep_pattern, table1,
                                      table1_side_by_side, table1_view, table2, table2_side_by_side, table2_view)

__all__ = [
    "CHEXPERT_KEYS", "CONFIG_LABELS", "NN_LABEL", "NOT_MEASURED", "ORACLE_METHOD", "TABLE1_METRICS",
    "TABLE2_METRICS", "TABLE_COLUMNS", "appendix_g", "CachedLabeler", "cell_text", "chexbert_labeler",
    "direct_pycocoevalcap", "direction_against_paper", "judge_against_oracle", "judged_sentences",
    "labeler_agreement", "Measure", "method_family", "na_reasons", "paired_differences", "paper_table1",
    "paper_table2", "pycocoevalcap_check", "radfact_client", "rger_scorer", "rule_labeler", "sae_sweep_pattern",
    "score_system", "scoring_sets", "ScoringSet", "system_label", "SystemScores", "table1", "table1_side_by_side",
    "table1_view", "table2", "table2_side_by_side", "table2_view", "paper_other_systems",
]
