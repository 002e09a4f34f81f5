"""Integration level: runtime pieces against the real RabbitMQ and SecantusDB.

The servers come from the session fixture ``servers`` in the root conftest;
each test uses its own database names so tests cannot see each other's data.
"""
