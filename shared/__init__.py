"""The Shequ platform runtime: what every service imports, and no domain logic.

Installed as the package ``shequ`` from the repository's ``shared/`` folder.
Service code reaches the broker, the store, metrics and identity only through
the providers defined here, so the eventlet- and nameko-specific parts of the
platform stay in one place.
"""
