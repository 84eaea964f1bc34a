"""Quantification: counts → activity, VOIs on the SPECT grid, VOI statistics."""
