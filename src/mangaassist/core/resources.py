"""The one declaration of MangaAssist's resources, and each environment's settings. No IO beyond
reading the two files.

``infra/resources.toml`` names every table (keys, indexes, stream, TTL), vector index, site, config
profile, bucket, service and model endpoint once. The CDK app (``infra/app.py``) builds its stacks
from it, the local provider provisions from it (``mangaassist deploy infra --env dev``), and the
code reads names from it: a resource has one logical name everywhere, and one physical name per
environment (``physical_name``).

``infra/environments.toml`` holds, per environment, what differs: account, region, sizes,
retention, the owner tag. Both files are validated as a whole before anything is synthesized or
applied; an error names the file and the field (``tables.orders.sort_key``).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mangaassist.core.errors import ConfigError

ENVIRONMENTS: tuple[str, ...] = ("dev", "staging", "prod")
"""Every environment has one CDK stage; none refers to another."""
STATEFUL_TYPES: frozenset[str] = frozenset(
    {
        "AWS::DynamoDB::Table",
        "AWS::DynamoDB::GlobalTable",
        "AWS::S3::Bucket",
        "AWS::OpenSearchService::Domain",
        "AWS::Elasticsearch::Domain",
        "AWS::Cognito::UserPool",
        "AWS::Logs::LogGroup",
        "AWS::RDS::DBInstance",
        "AWS::RDS::DBCluster",
        "AWS::EFS::FileSystem",
        "AWS::KMS::Key",
        "AWS::SageMaker::ModelPackageGroup",
    }
)
"""Resource types that hold data: replacing or deleting one loses it (or orphans
it). CD-02 refuses such a change unless overridden."""
PREFIX = "mangaassist"
NAME = re.compile(r"^[a-z][a-z0-9-]{2,38}[a-z0-9]$")
"""Logical names: 4 to 40 characters, lowercase, digits and dashes (valid in every AWS name that
gets them: tables, buckets, domains, AppConfig profiles, log groups)."""

ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
Name = Annotated[str, Field(pattern=NAME.pattern)]
AttributeType = Literal["S", "N", "B"]
StreamView = Literal["NEW_AND_OLD_IMAGES", "NEW_IMAGE", "OLD_IMAGE", "KEYS_ONLY"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Index(_Strict):
    """A global secondary index."""

    name: Name
    partition_key: str
    sort_key: str | None = None
    projection: Literal["ALL", "KEYS_ONLY"] = "ALL"


class Table(_Strict):
    description: str
    attributes: dict[str, AttributeType]
    """Every key attribute of the table and its indexes, with its DynamoDB type."""
    partition_key: str
    sort_key: str | None = None
    indexes: list[Index] = []
    stream: StreamView | None = None
    ttl_attribute: str | None = None

    @model_validator(mode="after")
    def _keys_are_declared(self) -> Table:
        for attribute in self.attributes:
            if not ATTRIBUTE.match(attribute):
                raise ValueError(
                    f"attributes.{attribute}: an attribute name is letters, digits and underscores, "
                    "starting with a letter or underscore"
                )
        keys: list[tuple[str, str | None]] = [
            ("partition_key", self.partition_key),
            ("sort_key", self.sort_key),
        ]
        for i, index in enumerate(self.indexes):
            keys += [
                (f"indexes.{i}.partition_key", index.partition_key),
                (f"indexes.{i}.sort_key", index.sort_key),
            ]
        for where, key in keys:
            if key is not None and key not in self.attributes:
                raise ValueError(
                    f"{where}: key attribute {key!r} is not in attributes "
                    f"({', '.join(sorted(self.attributes)) or 'none'})"
                )
        names = [i.name for i in self.indexes]
        if len(set(names)) != len(names):
            raise ValueError(f"indexes: an index name is used twice ({', '.join(names)})")
        return self


class VectorIndex(_Strict):
    description: str
    dimensions: int = Field(ge=1, le=16000)


class Site(_Strict):
    description: str
    index_document: str = "index.html"


class ConfigProfile(_Strict):
    description: str
    path: str
    """The profile's file in the repository (``config/NAME.yaml``)."""


class Bucket(_Strict):
    description: str


class Service(_Strict):
    description: str
    port: int = Field(ge=1, le=65535)
    health_path: str = "/healthz"


class ModelEndpoint(_Strict):
    description: str
    service: str
    """The local platform's service that serves it (``intent-model``)."""


class Declaration(_Strict):
    """Everything ``infra/resources.toml`` declares."""

    tables: dict[Name, Table] = {}
    vector_indexes: dict[Name, VectorIndex] = {}
    sites: dict[Name, Site] = {}
    config_profiles: dict[Name, ConfigProfile] = {}
    buckets: dict[Name, Bucket] = {}
    services: dict[Name, Service] = {}
    model_endpoints: dict[Name, ModelEndpoint] = {}

    @model_validator(mode="after")
    def _one_name_one_resource(self) -> Declaration:
        seen: dict[str, str] = {}
        for kind, items in self.kinds().items():
            for name in items:
                if name in seen:
                    raise ValueError(f"{name!r} is declared twice: as {seen[name]} and as {kind}")
                seen[name] = kind
        return self

    def kinds(self) -> dict[str, dict[str, Any]]:
        return {
            "tables": self.tables,
            "vector_indexes": self.vector_indexes,
            "sites": self.sites,
            "config_profiles": self.config_profiles,
            "buckets": self.buckets,
            "services": self.services,
            "model_endpoints": self.model_endpoints,
        }

    def table(self, name: str) -> Table:
        try:
            return self.tables[name]
        except KeyError:
            raise ConfigError(f"no table {name!r} is declared in infra/resources.toml") from None


class Environment(_Strict):
    """What differs between environments (``infra/environments.toml``, one table each)."""

    account: str = Field(pattern=r"^\d{12}$")
    region: str = Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
    owner: str = Field(min_length=1)
    """The ``owner`` tag on everything."""
    chatbot_max_tasks: int = Field(ge=1, le=200)
    """The most Fargate tasks a chatbot revision scales to (the compute stack's ``MaxTasks`` output,
    ``[environments.ENV.aws] max_tasks``); the API's throttle is sized by it (edge stack). The
    minimum is the revision's replicas (``mangaassist.toml``)."""
    task_cpu: Literal[256, 512, 1024, 2048, 4096]
    """CPU units of a chatbot task (the ``TaskCpu`` output, ``[environments.ENV.aws] task_cpu``)."""
    task_memory_mib: int = Field(ge=512, le=30720)
    """Memory of a chatbot task (the ``TaskMemoryMib`` output, ``[environments.ENV.aws] task_memory_mib``)."""
    burst_lambda_memory_mib: int = Field(ge=128, le=10240)
    opensearch_instance_type: str
    opensearch_instances: int = Field(ge=1, le=20)
    opensearch_volume_gib: int = Field(ge=10, le=3000)
    model_instance_type: str = Field(pattern=r"^ml\.")
    log_retention_days: Literal[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653]
    point_in_time_recovery: bool = True
    availability_zones: int = Field(ge=1, le=3)


def physical_name(environment: str, name: str) -> str:
    """The AWS name of a declared resource in ``environment``: ``mangaassist-ENV-NAME``."""
    return f"{PREFIX}-{environment}-{name}"


def _load(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib names the line: a resource declared twice in one file is "Cannot overwrite a value"
        raise ConfigError(f"{path}: {exc}") from None


def _explain(path: Path, exc: ValidationError, prefix: str = "") -> ConfigError:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in (*([prefix] if prefix else []), *err["loc"]))
        message = err["msg"].removeprefix("Value error, ")
        inner = re.match(r"^([A-Za-z0-9_.]+): (.*)$", message) if err["type"] == "value_error" else None
        if inner:  # a model validator names the field inside the model it checked
            where, message = f"{where}.{inner.group(1)}" if where else inner.group(1), inner.group(2)
        lines.append(f"{path}: {where or '(top)'}: {message}")
    return ConfigError("\n".join(lines))


def load_declaration(path: Path) -> Declaration:
    """``infra/resources.toml``, validated; a ConfigError naming the file and the field otherwise."""
    data = _load(path)
    try:
        return Declaration.model_validate(data)
    except ValidationError as exc:
        raise _explain(path, exc) from None


def load_environments(path: Path) -> dict[str, Environment]:
    """``infra/environments.toml``: exactly ``ENVIRONMENTS``, each validated."""
    data = _load(path)
    unknown = sorted(set(data) - set(ENVIRONMENTS))
    missing = [e for e in ENVIRONMENTS if e not in data]
    if unknown or missing:
        parts = [f"unknown environment(s) {', '.join(unknown)}"] if unknown else []
        parts += [f"missing {', '.join(missing)}"] if missing else []
        raise ConfigError(f"{path}: {'; '.join(parts)} (expected exactly {', '.join(ENVIRONMENTS)})")
    out = {}
    for name in ENVIRONMENTS:
        try:
            out[name] = Environment.model_validate(data[name])
        except ValidationError as exc:
            raise _explain(path, exc, name) from None
    return out


def environment(environments: dict[str, Environment], name: str, path: Path) -> Environment:
    try:
        return environments[name]
    except KeyError:
        raise ConfigError(
            f"unknown environment {name!r}: {path} declares {', '.join(environments)}"
        ) from None
