"""Field types that read JSON as JSON Schema does.

JSON has one number type: ``2.0`` is an integer to JSON Schema (and so to the OpenAPI document and every client
generated from it), though pydantic's strict ``int`` refuses it. :data:`JsonInt` takes an integral float as its
integer and still refuses ``true``, ``"2"`` and ``2.5``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(_integral)]
#: A :data:`JsonInt` from 0 to 2**32 - 1 (a seed). The bounds sit on the integer, before the validator: put on an
#: optional field (``JsonInt | None = Field(ge=0)``), pydantic writes them into the OpenAPI document as the unknown
#: keywords ``ge``/``le``, and clients (and the contract fuzzer) never see them.
JsonUInt32 = Annotated[int, Field(ge=0, le=2**32 - 1), BeforeValidator(_integral)]
