"""Field types that read JSON as JSON Schema does.

JSON has one number type: ``2.0`` is an integer to JSON Schema (and so to the OpenAPI document and every client
generated from it), though pydantic's strict ``int`` refuses it. :data:`JsonInt` takes an integral float as its
integer and still refuses ``true``, ``"2"`` and ``2.5``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(_integral)]
