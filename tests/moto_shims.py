"""moto's server (``moto.server.main``) given AWS's meaning for what moto 5.2.6 lacks and the tests need.

* **Lambda function URL configs per alias.** moto ignores ``Qualifier`` on ``Create``/``Get``/
  ``Update``/``DeleteFunctionUrlConfig`` (one URL per function); AWS keeps one per alias (the
  ``Qualifier`` is the alias's name; without one it is the unqualified function's). With a
  qualifier, the config is kept here per function and alias: the alias must exist
  (``ResourceNotFoundException``), a second create is ``ResourceConflictException``, reading,
  updating or deleting a missing one is ``ResourceNotFoundException``, and ``FunctionArn`` is the
  alias's ARN. Calls without a qualifier are moto's own. Function URLs are still not served over
  HTTP (moto runs no function). ``tests/contract/test_aws_lambda.py`` has a test that fails once
  moto honours the qualifier itself, so this part can go.

Run by ``tests/moto_server.py`` as ``python -P moto_shims.py -H HOST -p PORT`` (``-P``: this
directory is not put on ``sys.path``, so nothing here shadows what moto imports).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from moto.awslambda.exceptions import LambdaClientError
from moto.awslambda.models import FunctionUrlConfig, LambdaFunction
from moto.awslambda.responses import LambdaResponse
from moto.awslambda.utils import make_function_arn

_URLS_BY_ALIAS = "_shim_url_configs_by_alias"
_OPERATIONS = (
    "create_function_url_config",
    "get_function_url_config",
    "update_function_url_config",
    "delete_function_url_config",
)


def _not_found(name: str, alias: str) -> LambdaClientError:
    message = f"The resource you requested does not exist: function URL of {name}:{alias}"
    return LambdaClientError("ResourceNotFoundException", message)


def _urls(response: LambdaResponse, alias: str) -> tuple[LambdaFunction, dict[str, FunctionUrlConfig]]:
    """The function named in the request path and its URL configs by alias (``alias`` must exist)."""
    name = unquote(response.path.split("/")[-2])
    response.backend.get_alias(alias, name)  # ResourceNotFoundException when there is no such alias
    function = response.backend.get_function(name)
    urls: dict[str, FunctionUrlConfig] = function.__dict__.setdefault(_URLS_BY_ALIAS, {})
    return function, urls


def _alias_arn(function: LambdaFunction, alias: str) -> str:
    return f"{make_function_arn(function.region, function.account_id, function.function_name)}:{alias}"


def _as_json(function: LambdaFunction, alias: str, config: FunctionUrlConfig) -> str:
    return json.dumps({**config.to_dict(), "FunctionArn": _alias_arn(function, alias)})


def _create(response: LambdaResponse, alias: str) -> Any:
    function, urls = _urls(response, alias)
    if alias in urls:
        raise LambdaClientError(
            "ResourceConflictException",
            f"Failed to create function url config for [functionArn = {_alias_arn(function, alias)}]. "
            "Error message:  FunctionUrlConfig exists for this Lambda function",
        )
    urls[alias] = FunctionUrlConfig(function=function, config=response.json_body)
    return 201, {"status": 201}, _as_json(function, alias, urls[alias])


def _get(response: LambdaResponse, alias: str) -> Any:
    function, urls = _urls(response, alias)
    if alias not in urls:
        raise _not_found(function.function_name, alias)
    return 200, {"status": 200}, _as_json(function, alias, urls[alias])


def _update(response: LambdaResponse, alias: str) -> Any:
    function, urls = _urls(response, alias)
    if alias not in urls:
        raise _not_found(function.function_name, alias)
    urls[alias].update(response.json_body)
    return 200, {"status": 200}, _as_json(function, alias, urls[alias])


def _delete(response: LambdaResponse, alias: str) -> Any:
    function, urls = _urls(response, alias)
    if urls.pop(alias, None) is None:
        raise _not_found(function.function_name, alias)
    return 204, {"status": 204}, "{}"


def _qualified(operation: str, by_alias: Callable[[LambdaResponse, str], Any]) -> Callable[..., Any]:
    moto_own = getattr(LambdaResponse, operation)

    def handler(self: LambdaResponse) -> Any:
        alias = self.querystring.get("Qualifier", [None])[0]
        return moto_own(self) if alias is None else by_alias(self, alias)

    handler.__name__ = operation
    return handler


def apply() -> None:
    """Patch moto's Lambda responses in this process (idempotent)."""
    if getattr(LambdaResponse, "_shimmed_url_qualifier", False):
        return
    for operation, by_alias in zip(_OPERATIONS, (_create, _get, _update, _delete), strict=True):
        setattr(LambdaResponse, operation, _qualified(operation, by_alias))
    LambdaResponse._shimmed_url_qualifier = True  # type: ignore[attr-defined]


if __name__ == "__main__":
    from moto.server import main

    apply()
    sys.exit(main(sys.argv[1:]))
