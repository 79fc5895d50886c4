"""The one declaration of resources (``core.resources``): the repository's files load, and bad input
is refused with the file and the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.core.resources import (
    ENVIRONMENTS,
    environment,
    load_declaration,
    load_environments,
    physical_name,
)

ROOT = Path(__file__).parents[3]
RESOURCES = ROOT / "infra" / "resources.toml"
ENVS = ROOT / "infra" / "environments.toml"

TABLE = """
[tables.orders]
description = "orders"
attributes = {{ pk = "S", sk = "S" }}
partition_key = "pk"
sort_key = "{sort_key}"
"""


def _write(tmp_path: Path, text: str, name: str = "resources.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_repository_declaration_loads_and_names_what_the_code_uses() -> None:
    from mangaassist.chatbot.store import ORDERS, SESSIONS, TICKETS

    declaration = load_declaration(RESOURCES)
    assert {SESSIONS, ORDERS, TICKETS} <= set(declaration.tables)
    orders = declaration.table(ORDERS)
    assert (orders.partition_key, orders.sort_key) == ("pk", "sk")
    from mangaassist.core.configspec import PROFILES

    assert set(PROFILES) == set(declaration.config_profiles)
    assert all((ROOT / p.path).is_file() for p in declaration.config_profiles.values())
    envs = load_environments(ENVS)
    assert tuple(envs) == ENVIRONMENTS
    accounts = {e.account for e in envs.values()}
    assert len(accounts) == 3  # one account per environment
    assert physical_name("prod", "orders") == "mangaassist-prod-orders"


def test_a_key_attribute_missing_from_the_table_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, TABLE.format(sort_key="order_id"))
    with pytest.raises(ConfigError) as err:
        load_declaration(path)
    message = str(err.value)
    assert str(path) in message and "tables.orders" in message
    assert "sort_key: key attribute 'order_id' is not in attributes (pk, sk)" in message


def test_a_gsi_key_must_be_declared_too(tmp_path: Path) -> None:
    text = TABLE.format(sort_key="sk") + 'indexes = [{ name = "by-status", partition_key = "status" }]\n'
    with pytest.raises(ConfigError, match=r"indexes\.0\.partition_key: key attribute 'status'"):
        load_declaration(_write(tmp_path, text))


def test_a_name_too_short_for_aws_is_refused(tmp_path: Path) -> None:
    text = TABLE.format(sort_key="sk").replace("[tables.orders]", "[tables.ab]")
    with pytest.raises(ConfigError) as err:
        load_declaration(_write(tmp_path, text))
    assert "tables.ab" in str(err.value) and "pattern" in str(err.value)


def test_a_resource_declared_twice_is_refused(tmp_path: Path) -> None:
    twice_in_a_file = TABLE.format(sort_key="sk") * 2
    with pytest.raises(ConfigError, match=r"resources\.toml: .*(overwrite|line)"):
        load_declaration(_write(tmp_path, twice_in_a_file))
    two_kinds = TABLE.format(sort_key="sk") + '[buckets.orders]\ndescription = "x"\n'
    with pytest.raises(ConfigError, match="'orders' is declared twice: as tables and as buckets"):
        load_declaration(_write(tmp_path, two_kinds, "two.toml"))


def test_unknown_fields_and_bad_attribute_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tables\.orders\.partition_keys: Extra inputs"):
        load_declaration(_write(tmp_path, TABLE.format(sort_key="sk") + 'partition_keys = "pk"\n'))
    bad = (
        TABLE.format(sort_key="sk")
        .replace('pk = "S"', '"p k" = "S"')
        .replace('partition_key = "pk"', 'partition_key = "p k"')
    )
    with pytest.raises(ConfigError, match="an attribute name is letters"):
        load_declaration(_write(tmp_path, bad, "bad.toml"))


def test_environment_settings_are_typed_and_complete(tmp_path: Path) -> None:
    text = ENVS.read_text()
    with pytest.raises(ConfigError, match=r"prod\.account: String should match"):
        load_environments(_write(tmp_path, text.replace('"333333333333"', '"prod-account"'), "e1.toml"))
    with pytest.raises(ConfigError, match="missing prod"):
        load_environments(_write(tmp_path, text.split("[prod]")[0], "e2.toml"))
    with pytest.raises(ConfigError, match=r"unknown environment.*qa"):
        load_environments(_write(tmp_path, text + "\n[qa]\n", "e3.toml"))
    sizes = text.replace("chatbot_max_tasks = 12", "chatbot_max_tasks = 0")
    with pytest.raises(ConfigError, match=r"prod\.chatbot_max_tasks: Input should be greater than or equal"):
        load_environments(_write(tmp_path, sizes, "e4.toml"))
    # the minimum is each revision's replicas (mangaassist.toml) since the compute stack has no service
    gone = text.replace("chatbot_max_tasks = 12", "chatbot_tasks = 3\nchatbot_max_tasks = 12")
    with pytest.raises(ConfigError, match=r"prod\.chatbot_tasks: Extra inputs are not permitted"):
        load_environments(_write(tmp_path, gone, "e5.toml"))
    with pytest.raises(ConfigError, match="unknown environment 'qa'"):
        environment(load_environments(ENVS), "qa", ENVS)
