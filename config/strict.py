"""The base of every config model: unknown keys refused, values frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

HHMM_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
