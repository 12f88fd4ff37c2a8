"""Moved to :mod:`saerad.sae.experiments`; this name stays for code written against it.

The exercise solutions import it under this name, and a solution's fingerprint hashes its source, so
renaming the import there would mark every stored solution stale without changing what it computes.
"""

import sys

from saerad.sae import experiments

sys.modules[__name__] = experiments
