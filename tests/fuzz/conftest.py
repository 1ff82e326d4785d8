"""The fuzz suite reuses the relay's loopback harness and fakes (tests/relay) and the local session's fakes
(tests/local); those directories are on ``sys.path`` only when their own tests are collected, so add them."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _sub in ("relay", "local"):
    _path = str(_TESTS / _sub)
    if _path not in sys.path:
        sys.path.append(_path)
