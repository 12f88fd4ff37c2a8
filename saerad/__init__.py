"""SAE-Rad, the executable edition: sparse autoencoders for interpretable
radiology report generation.

The package holds the logic of every chapter of the book; the notebooks in
``notebooks/`` only set parameters, call into it and show the results.
"""

__version__ = "0.1.0"
