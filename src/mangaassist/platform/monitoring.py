"""``RuleHost``: where an environment's alerting rules live and the server that evaluates them (CD-08).

The CD-08 pipeline writes the rule files ``mangaassist monitor build`` generated into ``rules_dir``,
asks the server to reload, and checks from ``groups()`` (Prometheus's ``/api/v1/rules``) that every
group loaded with no evaluation error. Local provider: ``platform/local/monitoring.LocalRuleHost``
(the Prometheus the control plane runs). On AWS the alarms are CloudWatch's, shipped by CD-02's
``monitoring`` stack; there is no rule host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class RuleHost(Protocol):
    rules_dir: Path
    dashboards_dir: Path

    def url(self) -> str | None:
        """The rule server's URL when it runs and is ready, else None."""
        ...

    def reload(self) -> None:
        """Make the server re-read its rule files (nothing when it does not run)."""
        ...

    def groups(self) -> list[dict[str, Any]]:
        """The loaded rule groups with their health (Prometheus's ``/api/v1/rules`` data)."""
        ...
