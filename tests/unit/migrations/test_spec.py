"""Migration files are validated against the declaration, every problem with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mangaassist.core.resources import load_declaration
from mangaassist.delivery.migrations.spec import MigrationError, find, load_all, load_migration

ROOT = Path(__file__).resolve().parents[3]
DECLARATION = load_declaration(ROOT / "infra" / "resources.toml")


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(MigrationError) as caught:
        load_migration(path, DECLARATION)
    return [str(p) for p in caught.value.problems]


def test_the_repository_migrations_are_valid_and_ordered() -> None:
    migrations = load_all(ROOT / "migrations", DECLARATION)
    assert [m.number for m in migrations] == sorted(m.number for m in migrations)
    assert {m.kind for m in migrations} >= {"add_attribute", "add_index", "add_ttl"}
    by_index = find(ROOT / "migrations", DECLARATION, "2")
    assert by_index.index == "by-customer-status" and by_index.added == ("customer_status",)
    assert len(by_index.digest) == 64


def test_an_undeclared_table_and_index_are_named_with_their_lines(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "0001_x.yaml",
        "description: d\ntable: invoices\nkind: add_attribute\nadd:\n  a: {fn: copy, from: b}\n"
        "backfill: {rate: 10}\n",
    )
    assert _problems(path) == [
        f"{path}:2: table: table 'invoices' is not declared in infra/resources.toml "
        "(declared: orders, sessions, tickets)"
    ]
    path = _file(
        tmp_path,
        "0002_y.yaml",
        "description: d\ntable: orders\nkind: add_index\nindex: by-nothing\n"
        "add:\n  customer_status: {fn: join, from: [pk, status]}\nbackfill: {rate: 10}\n",
    )
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:4: index: index 'by-nothing' is not declared for table orders")


def test_no_throttle_an_unknown_transform_and_a_key_are_refused_all_at_once(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "0003_z.yaml",
        "description: d\ntable: orders\nkind: add_attribute\nadd:\n  sk: {fn: copy, from: pk}\n"
        "  b: {fn: shout, from: a}\n  c: {fn: join}\n",
    )
    problems = _problems(path)
    assert any(p.startswith(f"{path}:6: add.b.fn: unknown transform 'shout'") for p in problems)
    assert any(p.startswith(f"{path}:7: add.c: join: name the source attribute(s)") for p in problems)
    assert any(p.startswith(f"{path}:5: add.sk: 'sk' is a key of table orders") for p in problems)
    assert any(p.startswith(f"{path}:1: backfill: a backfill needs a throttle") for p in problems)


def test_an_irreversible_contract_must_be_declared(tmp_path: Path) -> None:
    body = (
        "description: d\ntable: tickets\nkind: split_attribute\n"
        "split:\n  from: contact\n  into:\n    email: {fn: email_of}\n    phone: {fn: phone_of}\n"
        "backfill: {rate: 10}\n"
    )
    (problem,) = _problems(_file(tmp_path, "0004_split.yaml", body))
    assert "the contract removes contact for good: declare contract: {irreversible: true}" in problem
    ok = load_migration(
        _file(tmp_path, "0005_split.yaml", body + "contract: {irreversible: true}\n"), DECLARATION
    )
    assert ok.removes == ("contact",) and ok.irreversible and ok.added == ("email", "phone")
    assert dict(ok.adds)["email"].sources == ("contact",)


def test_bad_names_fields_durations_and_kinds(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "add-things.yaml",
        "description: d\ntable: orders\nkind: change_key\nbackfill: {rate: 0, segments: 100}\n"
        "rollback_window: {prod: soon, qa: 1h}\ncolour: blue\n",
    )
    problems = _problems(path)
    assert any("a migration file is named NNNN_name.yaml" in p for p in problems)
    assert any(p.startswith(f"{path}:1: to: to None: the new table") for p in problems)  # change_key
    assert any(p.startswith(f"{path}:1: key: expected key:") for p in problems)
    assert any(p.startswith(f"{path}:4: backfill.rate: rate 0") for p in problems)
    assert any(p.startswith(f"{path}:4: backfill.segments: segments 100") for p in problems)
    assert any(p.startswith(f"{path}:5: rollback_window.prod: 'soon' is not a duration") for p in problems)
    assert any(p.startswith(f"{path}:5: rollback_window.qa: unknown environment 'qa'") for p in problems)
    assert any(p.startswith(f"{path}:6: colour: unknown field 'colour'") for p in problems)


def test_two_files_with_one_number_are_refused(tmp_path: Path) -> None:
    body = (
        "description: d\ntable: orders\nkind: add_attribute\nadd:\n  a: {fn: copy, from: b}\n"
        "backfill: {rate: 10}\n"
    )
    _file(tmp_path, "0001_a.yaml", body)
    _file(tmp_path, "0001_b.yaml", body)
    with pytest.raises(MigrationError, match=r"number 0001 is also used by 0001_a\.yaml"):
        load_all(tmp_path, DECLARATION)


def test_change_key_names_a_declared_table_and_how_the_keys_derive(tmp_path: Path) -> None:
    body = (
        "description: d\ntable: tickets\nkind: change_key\nto: orders\n"
        "key:\n  pk: {fn: join, from: [status, pk]}\n  sk: {fn: copy, from: sk}\nbackfill: {rate: 10}\n"
    )
    (problem,) = _problems(_file(tmp_path, "0006_rekey.yaml", body))
    assert "the contract deletes the items of tickets for good" in problem
    ok = load_migration(
        _file(tmp_path, "0007_rekey.yaml", body + "contract: {irreversible: true}\n"), DECLARATION
    )
    assert ok.move is not None and ok.move.table == "orders"
    assert ok.move.key({"pk": "HT-1", "sk": "meta", "status": "open"}) == ("open#HT-1", "meta")
    assert ok.rule("expand").move == ok.move
    bad = body.replace("to: orders", "to: tickets").replace("sk: {fn: copy, from: sk}", "sk: {fn: nope}")
    problems = _problems(_file(tmp_path, "0008_rekey.yaml", bad + "contract: {irreversible: true}\n"))
    assert any(":4: to: to 'tickets': the new table" in p for p in problems)
    assert any(":7: key.sk.fn: unknown transform 'nope'" in p for p in problems)
