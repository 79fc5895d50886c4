"""``links`` in ``mangaassist.toml``: a service's workers get another service's router URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.platform.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]


def test_the_dev_chatbot_is_linked_to_the_intent_model_service(tmp_path: Path) -> None:
    dev = load_settings("dev", ROOT / "mangaassist.toml", home=tmp_path)
    assert dev.services["chatbot"].links == {"MANGAASSIST_INTENT_URL": "intent-model"}
    model = dev.services["intent-model"]
    assert model.app == "mangaassist.chatbot.model_server:create_app"
    assert model.router_port == 8081 and model.replicas == 1
    assert model.env["MANGAASSIST_TORCH_THREADS"] == "1"
    ports = {s.router_port for s in dev.services.values()} | {dev.control_port}
    assert len(ports) == len(dev.services) + 1  # no two listeners on one port


@pytest.mark.parametrize("target", ["nowhere", "a"])
def test_a_link_to_no_other_service_is_refused_with_its_place(tmp_path: Path, target: str) -> None:
    config = tmp_path / "mangaassist.toml"
    config.write_text(
        "[environments.t.services.a]\napp = 'm:f'\nrouter_port = 0\n"
        f"[environments.t.services.a.links]\nURL = '{target}'\n"
        "[environments.t.services.b]\napp = 'm:f'\nrouter_port = 0\n"
    )
    expected = rf"services\.a\.links\.URL: '{target}' is not another service.*have: b"
    with pytest.raises(ConfigError, match=expected):
        load_settings("t", config)
