"""Ingest: the DICOM network edge — the storage SCP (receiver), its upper layer, TLS, and the
sender used by the demo and tests. Everything received goes to :mod:`concordose.spool`."""
