"""Sentence splitting and normalisation of report text, shared by annotation, composition and scoring.

Radiology findings are short declarative sentences, so a rule-based splitter is enough and,
unlike a trained one, gives the same answer on every machine. Abbreviations that end in a full
stop ("e.g.", "approx.") and decimals ("2.5 cm") must not end a sentence.
"""

from __future__ import annotations

import re

# Lower-case abbreviations after which a full stop does not end the sentence.
_ABBREVIATIONS = ("e.g", "i.e", "approx", "vs", "dr", "cf", "etc", "incl", "esp", "resp")

_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9_])")
_SPACES = re.compile(r"\s+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PUNCTUATION = re.compile(r"[^\w\s#]")


def split_sentences(text: str) -> list[str]:
    """Split a report section into sentences, keeping each sentence's own punctuation.

    >>> split_sentences("No effusion. Heart size is normal, e.g. no cardiomegaly. A 2.5 cm nodule.")
    ['No effusion.', 'Heart size is normal, e.g. no cardiomegaly.', 'A 2.5 cm nodule.']
    """
    if not isinstance(text, str):
        return []
    text = _SPACES.sub(" ", text).strip()
    if not text:
        return []
    pieces = _BOUNDARY.split(text)
    sentences: list[str] = []
    for piece in pieces:
        if sentences and _ends_with_abbreviation(sentences[-1]):
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece)
    return [sentence.strip() for sentence in sentences if sentence.strip()]


def _ends_with_abbreviation(sentence: str) -> bool:
    last_word = sentence.rstrip(".").rsplit(" ", 1)[-1].lower()
    return sentence.endswith(".") and last_word in _ABBREVIATIONS


def normalise_sentence(text: str) -> str:
    """Lower-case, numbers replaced by ``#``, punctuation dropped, spaces collapsed.

    Two sentences with the same normalised form say the same thing in the same words; this is
    the key used to count how often a statement occurs.
    """
    text = _NUMBER.sub("#", text.lower())
    text = _PUNCTUATION.sub(" ", text)
    return _SPACES.sub(" ", text).strip()
