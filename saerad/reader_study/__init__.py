"""The reader study of Section 5.4 / Appendix E: a blinded review page, its export format, and the analysis.

:func:`build_review_page` writes the self-contained page with its unblinding
file; :func:`validate_export` checks what a reader downloads against
``export_schema.json``; :mod:`~saerad.reader_study.simulated` annotates
SynthCXR reports from the planted truth; :mod:`~saerad.reader_study.analysis`
turns exports into Appendix E.1's figures with intervals and tests, and
:mod:`~saerad.reader_study.paper` runs the paper's own counts through it.
"""

from saerad.reader_study.analysis import (category_severity_table, error_type_figure, fisher_tests, read_exports,
                                          reader_agreement, summary_table)
from saerad.reader_study.page import ReviewPage, build_review_page, review_inputs, unblinding_table
from saerad.reader_study.paper import analyse_paper_counts
from saerad.reader_study.schema import validate_export
from saerad.reader_study.simulated import simulate_reader, write_export

__all__ = ["ReviewPage", "analyse_paper_counts", "build_review_page", "category_severity_table", "error_type_figure",
           "fisher_tests", "read_exports", "reader_agreement", "review_inputs", "simulate_reader", "summary_table",
           "unblinding_table", "validate_export", "write_export"]
