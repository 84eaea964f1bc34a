"""DICOM edge of the platform: receiver (storage SCP), spool and index, sender, readers."""
