"""DICOM readers: NM (SPECT), CT, SEG, geometry, and pseudonymisation of identifiers. Readers
only: the network edge is :mod:`concordose.ingest`, the spool :mod:`concordose.spool`."""
