"""What CloudWatch Logs does with an embedded-metric-format line (a test double of its extraction,
used by the EMF tests): validate the document as the specification says, and turn it into the
``MetricDatum`` list ``PutMetricData`` takes, one datum per (metric, dimension set)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


class InvalidEmf(ValueError):
    """A line CloudWatch would not extract metrics from."""


def extract(line: str) -> list[dict[str, Any]]:
    doc = json.loads(line)
    meta = doc.get("_aws")
    if not isinstance(meta, dict) or not isinstance(meta.get("Timestamp"), int):
        raise InvalidEmf("_aws.Timestamp (milliseconds) is required")
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        raise InvalidEmf("_aws.CloudWatchMetrics must be a non-empty array")
    at = datetime.fromtimestamp(meta["Timestamp"] / 1000, UTC)
    data: list[dict[str, Any]] = []
    for directive in directives:
        if set(directive) != {"Namespace", "Dimensions", "Metrics"}:
            raise InvalidEmf(f"directive members {sorted(directive)}")
        if len(directive["Metrics"]) > 100:
            raise InvalidEmf("at most 100 metrics per directive")
        for names in directive["Dimensions"]:
            if len(names) > 30 or any(not isinstance(doc.get(n), str) for n in names):
                raise InvalidEmf(f"dimension set {names}: each must be a string member of the root")
            for metric in directive["Metrics"]:
                value = doc.get(metric["Name"])
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InvalidEmf(f"metric {metric['Name']}: a numeric member of the root is required")
                data.append(
                    {
                        "namespace": directive["Namespace"],
                        "datum": {
                            "MetricName": metric["Name"],
                            "Dimensions": [{"Name": n, "Value": doc[n]} for n in names],
                            "Value": float(value),
                            "Unit": metric.get("Unit", "None"),
                            "Timestamp": at,
                        },
                    }
                )
    return data
