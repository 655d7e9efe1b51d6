"""Fixtures of the taskgen tests: the replay endpoint on loopback."""

from __future__ import annotations

import pytest
from replay_server import ReplayServer


@pytest.fixture
def server():
    with ReplayServer() as s:
        yield s
