"""Canonical JSON and its digest: the bytes that snapshots and audit entries hash and sign.

Sorted keys, no whitespace, UTF-8: the same value always gives the same bytes, on any machine.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
