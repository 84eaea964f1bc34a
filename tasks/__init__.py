"""Prefect tasks: units of retry, caching and concurrency, each a thin call into the library."""
