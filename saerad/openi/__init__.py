"""Reading the Indiana University chest X-ray collection (Open-i): real reports without credentials.

:mod:`saerad.openi.reports` reads the report XMLs (from the copy installed with ``torchxrayvision``, or a
download), :mod:`saerad.openi.mesh` turns their MeSH terms into CheXpert labels (``mesh_to_chexpert.csv``),
:mod:`saerad.openi.loader` builds the MIMIC-CXR loader's tables from reports and PNGs, and
:mod:`saerad.openi.evaluation` measures the report-reading tools on the real reports.
"""

from saerad.openi.loader import OpenILoadedDataset, assign_splits, load_openi
from saerad.openi.mesh import mesh_labels, read_mapping, term_observations
from saerad.openi.reports import OpenIError, packaged_reports_available, read_reports

__all__ = ["OpenIError", "OpenILoadedDataset", "assign_splits", "load_openi", "mesh_labels",
           "packaged_reports_available", "read_mapping", "read_reports", "term_observations"]
