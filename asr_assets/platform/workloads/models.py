"""The workload manifest (`workload.yaml`): what the platform needs to run a team's batch workload.

A workload is `name:version`. Its manifest says how to start it (a command run in the workload's
folder, or a container image on Kubernetes), which model it loads, what it reads, the Arrow
schema of the table it writes, and what it needs (CPU, memory, GPU, shard size, timeout). The
platform validates the output of every shard against that schema before committing it.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
SEMVER_PATTERN = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
#: Columns every workload output carries, so the platform can check that no input was dropped
#: and count failures by reason without knowing the workload.
CONTRACT_COLUMNS = {"key": pa.string(), "status": pa.string(), "reason_code": pa.string()}

_PRIMITIVES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "double": pa.float64(),
    "date32": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


class ManifestError(ValueError):
    """A workload manifest that cannot be used; the message names the file and the field."""


def parse_arrow_type(text: str) -> pa.DataType:
    """`string`, `float32`, `list<T>`, `struct<name: T, ...>` (nested) to an Arrow type."""
    value, rest = _parse_type(text.strip())
    if rest.strip():
        raise ValueError(f"unexpected {rest.strip()!r} after type in {text!r}")
    return value


def _parse_type(text: str) -> tuple[pa.DataType, str]:
    match = re.match(r"\s*([a-z0-9_]+)\s*", text)
    if not match:
        raise ValueError(f"expected a type name at {text!r}")
    name, rest = match.group(1), text[match.end() :]
    if name in _PRIMITIVES:
        return _PRIMITIVES[name], rest
    if name not in ("list", "struct") or not rest.startswith("<"):
        raise ValueError(f"unknown type {name!r} (known: {', '.join(_PRIMITIVES)}, list, struct)")
    rest = rest[1:]
    if name == "list":
        item, rest = _parse_type(rest)
        rest = rest.lstrip()
        if not rest.startswith(">"):
            raise ValueError("list<...> is not closed")
        return pa.list_(item), rest[1:]
    fields: list[pa.Field] = []
    while True:
        field_match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*", rest)
        if not field_match:
            raise ValueError(f"expected `name: type` in struct at {rest!r}")
        field_type, rest = _parse_type(rest[field_match.end() :])
        fields.append(pa.field(field_match.group(1), field_type))
        rest = rest.lstrip()
        if rest.startswith(","):
            rest = rest[1:]
            continue
        if rest.startswith(">"):
            return pa.struct(fields), rest[1:]
        raise ValueError("struct<...> is not closed")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputKind(StrEnum):
    PREFIX = "prefix"  # every audio object under a prefix
    MANIFEST = "manifest"  # a JSONL/Parquet list of audio keys plus per-file fields


class WorkloadInput(_Strict):
    kinds: Annotated[list[InputKind], Field(min_length=1)]
    #: Per-file fields a manifest must give (name -> Arrow type), e.g. `expected_text: string`.
    fields: dict[str, str] = Field(default_factory=dict)
    #: File name suffixes listed from a prefix (lower case); others are ignored.
    extensions: list[str] = Field(
        default_factory=lambda: [".wav", ".flac", ".ogg", ".mp3", ".opus"]
    )

    @field_validator("fields")
    @classmethod
    def _known_types(cls, value: dict[str, str]) -> dict[str, str]:
        for name, type_text in value.items():
            if name == "key":
                raise ValueError("`key` is always present; do not list it as a field")
            parse_arrow_type(type_text)
        return value


class WorkloadResources(_Strict):
    cpu: str = "1"
    memory: str = "2Gi"
    gpu: Annotated[int, Field(ge=0, le=16)] = 0


class WorkloadModel(_Strict):
    """A Hugging Face CTC model directory (relative to the repo root or absolute) or a URI."""

    uri: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class OutputColumn(_Strict):
    name: str
    type: str
    description: str = ""

    @field_validator("type")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_arrow_type(value)
        return value


class WorkloadManifest(_Strict):
    name: str
    version: str
    description: str
    owner_team: str
    #: Command run in the workload's folder; a leading `python` means this interpreter.
    command: Annotated[list[str], Field(min_length=1)]
    image: str | None = Field(default=None, description="container image for Kubernetes")
    model: WorkloadModel | None = None
    input: WorkloadInput
    output: Annotated[list[OutputColumn], Field(min_length=1)]
    resources: WorkloadResources = Field(default_factory=WorkloadResources)
    shard_size: Annotated[int, Field(ge=1, le=100_000)] = 100
    timeout_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] = 3600.0
    #: Folder the manifest was loaded from (set by the registry, not written in the file).
    folder: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError("name must be lower-case letters, digits and '-', 2-63 chars")
        return value

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER_PATTERN.fullmatch(value):
            raise ValueError("version must be semantic MAJOR.MINOR.PATCH, e.g. 1.0.0")
        return value

    @model_validator(mode="after")
    def _contract_columns(self) -> Self:
        names = [column.name for column in self.output]
        if len(names) != len(set(names)):
            raise ValueError("output column names must be unique")
        declared = {column.name: parse_arrow_type(column.type) for column in self.output}
        for name, arrow_type in CONTRACT_COLUMNS.items():
            if declared.get(name) != arrow_type:
                raise ValueError(f"output must have column `{name}` of type {arrow_type}")
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        major, minor, patch = self.version.split(".")
        return int(major), int(minor), int(patch)

    def output_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, parse_arrow_type(c.type)) for c in self.output])

    def field_types(self) -> dict[str, pa.DataType]:
        return {name: parse_arrow_type(text) for name, text in self.input.fields.items()}

    def model_path(self, repo_root: Path) -> str | None:
        """The model as the workload process should see it: an absolute path or a URI."""
        if self.model is None:
            return None
        if "://" in self.model.uri:
            return self.model.uri
        path = Path(self.model.uri)
        return str(path if path.is_absolute() else (repo_root / path).resolve())
