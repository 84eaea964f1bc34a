"""Harmonised results: Arrow tables, Parquet in object storage, manifests."""
