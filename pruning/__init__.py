"""The pruning engine: models, calibration data, tickets and the methods that make them.

This floor imports nothing from `analysis` or `app`; results travel up as return values or callbacks.
"""

__version__ = "0.1.0"
