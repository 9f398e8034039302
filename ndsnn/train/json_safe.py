"""Standard JSON for everything a run writes: NaN and infinities, which Python's json module writes as bare
`NaN` / `Infinity` (not JSON), become null, so that any JSON reader can read metrics and summaries."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every float that is not finite replaced by None (in dicts, lists and tuples too)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    """json.dumps of `value` with non-finite numbers as null; never writes NaN or Infinity."""
    import json

    return json.dumps(finite(value), allow_nan=False, **options)
