"""The local platform's ``Provisioner``: the declared resources made real under the state directory.

* a **table** is a row of ``declared_tables`` in the tables database (``HOME/tables.sqlite3``, the
  file the chatbot's ``SqliteTables`` uses) with its keys, and one SQLite index per global secondary
  index on the declared key attributes of that table's items (``gsi__TABLE__INDEX``);
* a **vector index**, **site** or **bucket** is a directory (``HOME/kb/index``, ``HOME/sites/NAME``,
  ``HOME/buckets/NAME``) holding ``.declared.json``, its spec;
* a **config profile** must exist as its file in the repository (CD-06 ships its content), and a
  **service** or **model endpoint** must be a service of the environment in ``mangaassist.toml``
  (``mangaassist up`` runs it): those are checked, and an apply that cannot make them is an error.

What was provisioned is recorded in ``HOME/infra/provisioned.json`` (written atomically), so a
resource that was provisioned and has gone since is drift, not new.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from mangaassist.core.errors import ConfigError
from mangaassist.platform.infra import Present, ResourceSpec
from mangaassist.platform.local.tables import CATALOG as _CATALOG
from mangaassist.platform.local.tables import SCHEMA as ITEMS_SCHEMA
from mangaassist.platform.local.tables import index_name as _index_name
from mangaassist.platform.local.tables import json_path as _json_path
from mangaassist.platform.local.tables import sql_literal

DECLARED = ".declared.json"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class LocalProvisioner:
    def __init__(
        self, home: Path, root: Path, services: Collection[str], tables_path: Path | None = None
    ) -> None:
        self.home = home
        self.root = root
        self.services = set(services)
        self.tables_path = tables_path or home / "tables.sqlite3"
        self.record_path = home / "infra" / "provisioned.json"

    def close(self) -> None:
        pass

    # -- where each kind lives ---------------------------------------------------------------------

    def location(self, spec: ResourceSpec) -> Path | None:
        if spec.kind == "vector_indexes":
            return self.home / "kb" / "index" if spec.name == "knowledge" else self.home / "kb" / spec.name
        if spec.kind == "sites":
            return self.home / "sites" / spec.name
        if spec.kind == "buckets":
            return self.home / "buckets" / spec.name
        return None

    def _connect(self) -> sqlite3.Connection:
        self.tables_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.tables_path, timeout=10.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(ITEMS_SCHEMA)
        conn.execute(_CATALOG)
        return conn

    # -- the record ----------------------------------------------------------------------------------

    def _record(self) -> dict[str, str]:
        try:
            data = json.loads(self.record_path.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{self.record_path}: not JSON ({exc}); remove it to re-provision") from exc
        return {str(k): str(v) for k, v in data.items()}

    def _remember(self, spec: ResourceSpec) -> None:
        record = self._record()
        record[spec.key] = spec.digest
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.record_path.parent, prefix=".provisioned-")
        with os.fdopen(fd, "w") as out:
            json.dump(record, out, indent=2, sort_keys=True)
        os.replace(tmp, self.record_path)

    # -- Provisioner -----------------------------------------------------------------------------------

    def current(self, specs: list[ResourceSpec]) -> dict[str, Present]:
        record = self._record()
        out: dict[str, Present] = {}
        tables = {s.name for s in specs if s.kind == "tables"}
        found = self._tables(tables) if tables else {}
        for spec in specs:
            out[spec.key] = Present(self._properties(spec, found), spec.key in record)
        return out

    def _tables(self, names: set[str]) -> dict[str, dict[str, Any]]:
        conn = self._connect()
        try:
            rows = dict(conn.execute("SELECT name, spec FROM declared_tables").fetchall())
            indexes = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
            }
        finally:
            conn.close()
        out = {}
        for name in names & set(rows):
            spec = dict(json.loads(rows[name]))
            # an index dropped by hand is a table without that index (an update, reported as drift)
            spec["indexes"] = [i for i in spec.get("indexes", []) if _index_name(name, i["name"]) in indexes]
            out[name] = spec
        return out

    def _properties(self, spec: ResourceSpec, tables: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        if spec.kind == "tables":
            return tables.get(spec.name)
        where = self.location(spec)
        if where is not None:
            try:
                return dict(json.loads((where / DECLARED).read_text()))
            except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
                return None
        if spec.kind == "config_profiles":
            return dict(spec.properties) if (self.root / str(spec.properties["path"])).is_file() else None
        if spec.kind in ("services", "model_endpoints"):
            service = str(spec.properties.get("service", spec.name))
            return dict(spec.properties) if service in self.services else None
        raise ConfigError(f"the local provider has no resources of kind {spec.kind!r}")

    def apply(self, spec: ResourceSpec) -> str:
        if spec.kind == "tables":
            did = self._apply_table(spec)
        elif (where := self.location(spec)) is not None:
            existed = (where / DECLARED).exists()
            where.mkdir(parents=True, exist_ok=True)
            (where / DECLARED).write_text(json.dumps(spec.properties, indent=2, sort_keys=True) + "\n")
            did = f"{'updated' if existed else 'created'} {where}"
        elif spec.kind == "config_profiles":
            path = self.root / str(spec.properties["path"])
            if not path.is_file():
                raise ConfigError(
                    f"config profile {spec.name}: {path} does not exist (CD-06 ships a profile's content)"
                )
            did = f"checked {path}"
        elif spec.kind in ("services", "model_endpoints"):
            service = str(spec.properties.get("service", spec.name))
            if service not in self.services:
                raise ConfigError(
                    f"{spec.kind[:-1].replace('_', ' ')} {spec.name}: the environment has no service "
                    f"{service!r} in mangaassist.toml (has: {', '.join(sorted(self.services)) or 'none'})"
                )
            did = f"checked service {service} (mangaassist up runs it)"
        else:
            raise ConfigError(f"the local provider has no resources of kind {spec.kind!r}")
        self._remember(spec)
        return did

    def _apply_table(self, spec: ResourceSpec) -> str:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            existed = conn.execute("SELECT 1 FROM declared_tables WHERE name = ?", (spec.name,)).fetchone()
            wanted = {_index_name(spec.name, i["name"]): i for i in spec.properties.get("indexes", [])}
            prefix = f"gsi__{spec.name}__"
            have = {
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND substr(name, 1, ?) = ?",
                    (len(prefix), prefix),
                )
            }
            for gone in have - set(wanted):
                conn.execute(f"DROP INDEX IF EXISTS {_quote(gone)}")
            for name, index in wanted.items():
                columns = [_json_path(index["partition_key"])]
                if index.get("sort_key"):
                    columns.append(_json_path(index["sort_key"]))
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {_quote(name)} ON items (tbl, {', '.join(columns)}) "
                    f"WHERE tbl = {sql_literal(spec.name)}"
                )
            conn.execute(
                "INSERT INTO declared_tables (name, spec) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec",
                (spec.name, json.dumps(spec.properties, sort_keys=True)),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise ConfigError(f"cannot provision table {spec.name} in {self.tables_path}: {exc}") from exc
        finally:
            conn.close()
        return f"{'updated' if existed else 'created'} table {spec.name} ({len(wanted)} index(es))"
