"""fmc: learn to turn one light-sheet view into the quality of a multi-view fusion.

Importing the package is cheap (no torch): commands import what they need.
"""

__version__ = "0.1.0"
