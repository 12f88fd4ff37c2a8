"""Reading MIMIC-CXR-JPG (and SynthCXR, written in the same layout)."""

from saerad.mimic.loader import DatasetError, LoadedDataset, load_dataset
from saerad.mimic.sections import extract_findings, split_sections

__all__ = ["DatasetError", "LoadedDataset", "load_dataset", "extract_findings", "split_sections"]
