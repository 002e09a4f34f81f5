"""The grid's authorisation table (``access.yaml``), for the pure modules that derive from it.

The runtime loads the same file for the route checks (``shequ.policy``);
the domain reads it here to build its object-level read table
(``domain.READ_RULES``), the rates' and the SLA board's readers, so there is
one table and nothing to keep in step by hand.
"""

from __future__ import annotations

from pathlib import Path

from shequ.policy import FILE_NAME, Policy, load_policy

TABLE: Policy = load_policy("grid", Path(__file__).with_name(FILE_NAME))
