"""Reproducible performance measurements, each against a peer in the same run."""
