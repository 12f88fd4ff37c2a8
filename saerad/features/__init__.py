"""SAE features: their activations over a data set and what they line up with.

``activations``  sparse activations chunk by chunk, streaming per-feature statistics and top-k studies
``alignment``    AUROC of each feature for each planted SynthCXR finding, best feature per finding
"""

from saerad.features.activations import (
    QUANTILES,
    SparseEncoding,
    StreamingFeatureStats,
    StreamingTopK,
    column_quantiles,
    encode_dataset_to_sparse,
    feature_statistics,
    iter_activation_chunks,
    iter_csr_chunks,
    load_sparse_encoding,
    sparse_feature_activations,
    stack_chunks,
    top_activating_studies,
)
from saerad.features.alignment import (
    align_to_ground_truth,
    feature_alignment,
    feature_finding_auroc,
    finding_alignment,
    ground_truth_labels,
    recovered_fraction,
)

__all__ = [
    "QUANTILES", "SparseEncoding", "StreamingFeatureStats", "StreamingTopK", "column_quantiles",
    "encode_dataset_to_sparse", "feature_statistics", "iter_activation_chunks", "iter_csr_chunks",
    "load_sparse_encoding", "sparse_feature_activations", "stack_chunks", "top_activating_studies",
    "align_to_ground_truth", "feature_alignment", "feature_finding_auroc", "finding_alignment",
    "ground_truth_labels", "recovered_fraction",
]
