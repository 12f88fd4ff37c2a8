"""SAE features: their activations over a data set and what they line up with.

``activations``  sparse activations chunk by chunk, streaming per-feature statistics and top-k studies
``alignment``    AUROC of each feature for each planted SynthCXR finding, best feature per finding
``spatial``      where in the image a feature's pre-activation comes from (mean-pooled CNNs, exact; ViTs by
                 dispatch to ``spatial_vit``, the exact split through the last block's attention)
``localisation`` pointing game and IoU of those maps against SynthCXR's planted masks, with baselines
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
from saerad.features.localisation import localisation_row, localisation_table, localise_findings
from saerad.features.spatial import SpatialAttribution, SpatialAttributionError, spatial_attribution

__all__ = [
    "QUANTILES", "SparseEncoding", "StreamingFeatureStats", "StreamingTopK", "column_quantiles",
    "encode_dataset_to_sparse", "feature_statistics", "iter_activation_chunks", "iter_csr_chunks",
    "load_sparse_encoding", "sparse_feature_activations", "stack_chunks", "top_activating_studies",
    "align_to_ground_truth", "feature_alignment", "feature_finding_auroc", "finding_alignment",
    "ground_truth_labels", "recovered_fraction", "localisation_row", "localisation_table", "localise_findings",
    "SpatialAttribution", "SpatialAttributionError", "spatial_attribution",
]
