"""The base of every stage config: frozen, unknown keys rejected, a stable fingerprint."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from trackemb.config.file import fingerprint


class StageConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def fingerprint(self) -> str:
        """Stable short hash of the config, used to key derived work (harvest, training)."""
        return fingerprint(self.model_dump(mode="json"))
