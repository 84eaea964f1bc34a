"""JSON Schemas of the YAML files people write (``sites.yaml``, calibration sheets), generated
from the pydantic models that validate them and shipped in ``schemas/`` for editors and scripts.

One way to build, locate and rewrite such a file; a test per schema compares the shipped file
with :meth:`PackagedSchema.generated`, so the file cannot drift from the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel

__all__ = ["PackagedSchema"]


@dataclass(frozen=True)
class PackagedSchema:
    """The JSON Schema of ``model``, titled ``title``, shipped as ``schemas/<file_name>``."""

    model: type[BaseModel]
    title: str
    file_name: str

    def generated(self) -> dict[str, object]:
        """The schema as the model defines it now."""
        schema = self.model.model_json_schema()
        schema["title"] = self.title
        return schema

    def path(self) -> Path:
        """Where the shipped file is (inside the installed ``schemas`` package)."""
        return Path(str(files("concordose.schemas").joinpath(self.file_name)))

    def write(self) -> None:
        """Rewrite the shipped file from the model (maintenance: after changing the model)."""
        self.path().write_text(json.dumps(self.generated(), indent=2) + "\n", encoding="utf-8")
