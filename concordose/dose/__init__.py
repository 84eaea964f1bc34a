"""Absorbed dose: S-value tables and dose methods (one module per method, one registry)."""
