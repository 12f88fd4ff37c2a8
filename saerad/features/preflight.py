"""Checks the features stage makes before it does any work (see :mod:`saerad.preflight`)."""

from __future__ import annotations
