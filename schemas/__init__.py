"""Versioned table schemas, site-protocol rules and validation suites of the platform.

Everything here is data definition: the library reads it, nothing here holds logic.
"""
