"""Numbers the paper states in its text (and Table 4's other columns) that no other module holds yet.

The tables' numbers live next to the code that measures them and are reused
from there: Tables 1 and 2 in :mod:`saerad.evaluation.paper_values`, Tables 3
and 5 in :mod:`saerad.sae.experiments`, SAE-Rad's Table 4 column in
:mod:`saerad.reports.cost`, Appendix E's counts in
``saerad/reader_study/paper_counts.json``. Each entry here cites where the
paper states it.
"""

from __future__ import annotations

#: Title ("An X-Ray Is Worth 15 Features") and Section 4: about 15 features fire per image.
FEATURES_PER_IMAGE = 15

#: Appendix B.3: "none of our features were dead at the end of training".
DEAD_FEATURES = 0

#: Table 4 (Appendix F), the columns of the other systems. None: "NA" in the paper.
TABLE4_OTHER_SYSTEMS = {
    "MAIRA-2": {"training images": 510_848, "active training parameters": 7e9, "training TFLOP": 100_000_000.0,
                "inference TFLOP per report": 7.0},
    "CheXagent": {"training images": 1_100_000, "active training parameters": 8e9, "training TFLOP": None,
                  "inference TFLOP per report": 8.0},
}

#: Appendix F: "SAE-Rad uses approximately 1000x less train compute, 100x less parameters and 4x less data".
APPENDIX_F_FACTORS = {"training TFLOP": 1000.0, "active training parameters": 100.0, "training images": 4.0}

#: Section 5.1: SAE-Rad outperforms CheXagent "by up to 52% in the CheXpert F1 score (macro-averaged F1-14)".
CHEXAGENT_MACRO_F1_14_GAIN_PERCENT = 52.0

#: Section 5.1: SAE-Rad achieves "92.1% and 89.9% of the performance of MAIRA-1 and MAIRA-2" on the clinical scores.
MAIRA_SHARE_PERCENT = {"MAIRA-1": 92.1, "MAIRA-2": 89.9}

#: Section 5.4 and Appendix E.1: "significant clinical impact error rates are almost half" for SAE-Rad.
SIGNIFICANT_ERROR_RATE_RATIO = 0.5

#: Appendix H, Table 5 and Section 5.2: the expansion factors of the paper's size sweep, smallest to largest.
TABLE5_SIZES = (32, 64, 128)
