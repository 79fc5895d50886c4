"""The providers of ``platform.tables.Tables`` that the contract suite runs against.

``sqlite``: ``SqliteTables`` on a real file, its indexes provisioned as CD-02 does
(``LocalProvisioner``). ``dynamodb``: ``DynamoTables`` on moto's server process (one for the whole
session, ``moto_endpoint``), each test with its own table prefix. Each provider fixture yields a
``Tables`` with the tables of ``CONTRACT_TABLES`` ready (``t`` plain, ``ix`` with the global
secondary index ``by-owner`` on ``owner`` (S) / ``rank`` (N)).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from mangaassist.platform.aws.tables_dynamodb import DynamoTables
from mangaassist.platform.infra import ResourceSpec
from mangaassist.platform.local.infra import LocalProvisioner
from mangaassist.platform.local.tables import SqliteTables
from mangaassist.platform.tables import Tables
from tests.moto_server import client, create_table, moto_server

CONTRACT_TABLES: dict[str, dict[str, object]] = {
    "t": {"attributes": {"pk": "S", "sk": "S"}, "partition_key": "pk", "sort_key": "sk", "indexes": []},
    "ix": {
        "attributes": {"pk": "S", "sk": "S", "owner": "S", "rank": "N"},
        "partition_key": "pk",
        "sort_key": "sk",
        "indexes": [{"name": "by-owner", "partition_key": "owner", "sort_key": "rank"}],
    },
}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One ``moto_server`` process for the session: its endpoint URL."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def dynamodb_client(moto_endpoint: str) -> Iterator[Any]:
    """A boto3 DynamoDB client on the session's moto server."""
    db = client(moto_endpoint)
    yield db
    db.close()


def _sqlite(tmp_path: Path) -> Iterator[Tables]:
    path = tmp_path / "tables.sqlite3"
    provisioner = LocalProvisioner(tmp_path / "home", tmp_path, (), tables_path=path)
    for name, props in CONTRACT_TABLES.items():
        provisioner.apply(ResourceSpec("tables", name, props))
    tables = SqliteTables(path)
    yield tables
    tables.close()


def _dynamodb(db: Any) -> Iterator[DynamoTables]:
    prefix = f"t{uuid4().hex[:8]}-"
    for name, spec in CONTRACT_TABLES.items():
        create_table(db, prefix + name, spec)
    tables = DynamoTables(db, table_prefix=prefix)
    yield tables
    tables.close()
    for name in CONTRACT_TABLES:  # keep the session's server small
        db.delete_table(TableName=prefix + name)


@pytest.fixture
def dynamo(dynamodb_client: Any) -> Iterator[DynamoTables]:
    """``DynamoTables`` on the session's moto server with ``CONTRACT_TABLES`` under a fresh prefix."""
    yield from _dynamodb(dynamodb_client)


@pytest.fixture(params=["sqlite", "dynamodb"])
def tables(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tables]:
    if request.param == "dynamodb":
        yield request.getfixturevalue("dynamo")
    else:
        yield from _sqlite(tmp_path)
