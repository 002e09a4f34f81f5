"""Contract level: what the platform publishes to other bureaus, checked without servers.

The committed AsyncAPI document and catalogue page must be what the registry
generates now, the document must be valid AsyncAPI 3.0, and no released event
version may change in a way its consumers could trip over.
"""
