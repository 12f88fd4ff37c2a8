"""MeSH terms of the Open-i reports as CheXpert labels.

The indexers of the Indiana University collection gave every report MeSH
"major" terms: a heading and qualifiers, ``"Opacity/lung/base/left/mild"``.
They list what a report *affirms*: there are no negated or hedged terms, and
a normal report gets the single term ``"normal"``. The mapping to the 14
CheXpert observations is data, ``mesh_to_chexpert.csv`` beside this module,
one row per heading (and qualifier, where the qualifier decides):

``heading``
    The MeSH heading, lower-cased, commas removed, spaces collapsed
    (``"fractures bone"`` for ``"Fractures, Bone"``).
``qualifier``
    Empty, or a qualifier the term must carry for the row to apply
    (``cardiac shadow`` + ``enlarged``). A row with a matching qualifier
    beats the heading's row without one.
``observations``
    CheXpert observations the term makes positive, separated by ``;``;
    empty when the heading has no CheXpert counterpart.
``note``
    Why, in a few words (shown in the book).

Conventions (the CheXpert labeler's own mention lists decide): pulmonary
congestion and heart failure are Edema; scars and interstitial markings are
Lung Opacity; fibrosis and pleural thickening are Pleural Other; a granuloma
or calcified nodule is *not* a Lung Lesion; atelectasis, consolidation,
pneumonia and edema also make their parent Lung Opacity positive, as the rule
labeler does. ``"No Indexing"`` marks a report that was never indexed: its
labels are unknown (:func:`mesh_labels` returns None).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

import pandas as pd

from saerad.mimic.loader import CHEXPERT_OBSERVATIONS

MAPPING_FILE = "mesh_to_chexpert.csv"
NOT_INDEXED = "no indexing"
NO_FINDING = "No Finding"


def normalise_heading(text: str) -> str:
    """A MeSH heading or qualifier as the mapping spells it: lower case, no commas, single spaces."""
    return " ".join(re.sub(r",", " ", str(text).lower()).split())


def parse_term(term: str) -> tuple[str, tuple[str, ...]]:
    """``"Opacity/lung/base/left"`` -> ``("opacity", ("lung", "base", "left"))`` (normalised)."""
    heading, *qualifiers = str(term).split("/")
    return normalise_heading(heading), tuple(normalise_heading(q) for q in qualifiers if q.strip())


@dataclass(frozen=True)
class MappingRow:
    """One row of ``mesh_to_chexpert.csv``."""

    heading: str
    qualifier: str
    observations: tuple[str, ...]
    note: str


def read_mapping(path=None) -> pd.DataFrame:
    """The mapping table (default: ``mesh_to_chexpert.csv`` of this package), checked.

    Raises
    ------
    ValueError
        Naming the file and row when a column is missing, an observation is
        not one of the 14 CheXpert observations, or a heading/qualifier pair repeats.
    """
    source = path if path is not None else resources.files("saerad.openi").joinpath(MAPPING_FILE)
    with resources.as_file(source) if path is None else open(path, "rb") as handle:
        table = pd.read_csv(handle, dtype=str, keep_default_na=False)
    name = str(path or MAPPING_FILE)
    expected = ["heading", "qualifier", "observations", "note"]
    if list(table.columns) != expected:
        raise ValueError(f"{name}: expected columns {expected}, found {list(table.columns)}")
    for number, row in enumerate(table.itertuples(index=False), start=2):
        if row.heading != normalise_heading(row.heading) or row.qualifier != normalise_heading(row.qualifier):
            raise ValueError(f"{name}:{number}: heading and qualifier must be normalised (lower case, no commas), "
                             f"got {row.heading!r} / {row.qualifier!r}")
        unknown = [o for o in _split(row.observations) if o not in CHEXPERT_OBSERVATIONS]
        if unknown:
            raise ValueError(f"{name}:{number}: {unknown} are not CheXpert observations {list(CHEXPERT_OBSERVATIONS)}")
    repeated = table[table.duplicated(["heading", "qualifier"], keep=False)]
    if not repeated.empty:
        raise ValueError(f"{name}: heading/qualifier pairs listed twice: "
                         f"{sorted(set(zip(repeated['heading'], repeated['qualifier'])))}")
    return table


def _split(observations: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in observations.split(";") if o.strip())


@functools.lru_cache(maxsize=1)
def _default_rows() -> dict[str, list[MappingRow]]:
    return _rows_by_heading(read_mapping())


def _rows_by_heading(table: pd.DataFrame) -> dict[str, list[MappingRow]]:
    rows: dict[str, list[MappingRow]] = {}
    for row in table.itertuples(index=False):
        rows.setdefault(row.heading, []).append(MappingRow(row.heading, row.qualifier, _split(row.observations), row.note))
    return rows


def term_rows(term: str, mapping: pd.DataFrame | None = None) -> list[MappingRow]:
    """The mapping rows that decide ``term``: those whose qualifier it carries, else the heading's plain row.

    An empty list means the heading is not in the mapping at all.
    """
    rows = _default_rows() if mapping is None else _rows_by_heading(mapping)
    heading, qualifiers = parse_term(term)
    candidates = rows.get(heading, [])
    specific = [row for row in candidates if row.qualifier and row.qualifier in qualifiers]
    return specific or [row for row in candidates if not row.qualifier]


def term_observations(term: str, mapping: pd.DataFrame | None = None) -> tuple[str, ...]:
    """CheXpert observations one MeSH major term makes positive (empty when it has no counterpart)."""
    return tuple(dict.fromkeys(o for row in term_rows(term, mapping) for o in row.observations))


def mesh_labels(terms: list[str], mapping: pd.DataFrame | None = None) -> dict[str, float] | None:
    """CheXpert labels of one report from its MeSH major terms.

    Returns
    -------
    dict or None
        Each of the 14 observations -> 1.0 when a term maps to it, else NaN
        (MeSH terms state no negatives). None for a report that was not
        indexed (no terms, or ``"No Indexing"``).
    """
    parsed = [parse_term(term)[0] for term in terms]
    if not parsed or NOT_INDEXED in parsed:
        return None
    labels = {observation: float("nan") for observation in CHEXPERT_OBSERVATIONS}
    for term in terms:
        for observation in term_observations(term, mapping):
            labels[observation] = 1.0
    return labels


def unmapped_headings(term_lists, mapping: pd.DataFrame | None = None) -> list[str]:
    """Headings that occur in ``term_lists`` but are not in the mapping, sorted."""
    rows = _default_rows() if mapping is None else _rows_by_heading(mapping)
    return sorted({parse_term(term)[0] for terms in term_lists for term in terms} - set(rows))
