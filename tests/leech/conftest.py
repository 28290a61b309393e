from __future__ import annotations

import importlib

import pytest

IMPLEMENTATIONS = ["python", "native"]


def native_available() -> bool:
    try:
        importlib.import_module("lpm.leech.native")
    except ImportError:
        return False
    return True


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest) -> str:
    """Each leech test runs against the pure-Python and the native leech."""
    name: str = request.param
    if name == "native" and not native_available():
        pytest.skip("the native leech is not built")
    return name
