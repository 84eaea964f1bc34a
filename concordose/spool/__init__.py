"""The spool: durable instance files, the write-ahead journal, the SQLite index, and the
time-point and cycle state machines (receiving → complete → processed / held / failed)."""
