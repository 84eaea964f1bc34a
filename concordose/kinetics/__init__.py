"""Kinetics: from time-activity curves to time-integrated activity (TIA), batched.

Every method is a named, versioned strategy (``methods/``) registered in ``registry.py``;
results are :class:`~concordose.kinetics.models.KineticsBatch` objects, one entry per curve.
"""
