"""End-to-end level: the whole platform on real servers, driven through the front door."""

import pytest

pytestmark = pytest.mark.e2e
