"""``ModelRegistry`` on SageMaker Model Registry (CD-03): one model package group per model, one
versioned model package per version, aliases mapped onto approval status and customer metadata.

Where things are:

* the model ``intent`` is the model package group ``{group_prefix}intent``; a version is its
  versioned model package, and the version id is the package's ``ModelPackageVersion`` ("1", "2").
* ``register`` packs the package directory into a reproducible ``model.tar.gz`` (sorted names, no
  times or owners) and uploads it with the injected S3 client to
  ``s3://{bucket}/{prefix}{name}/{sha256 of the tar}/model.tar.gz``, next to
  ``registration.json`` (``{"metrics", "params", "tags"}``). Then ``CreateModelPackage`` with
  ``InferenceSpecification`` (the container ``image`` and that ``ModelDataUrl``), ``ModelMetrics``
  (``ModelQuality.Statistics`` = ``registration.json``, SageMaker's own way to point at metrics in
  S3), ``CustomerMetadataProperties`` ``package:sha256`` and ``ModelApprovalStatus`` =
  ``PendingManualApproval``. Metrics, params and tags live in the JSON file because customer
  metadata holds at most 50 entries of a restricted alphabet, fewer than an intent model reports.

Aliases (SageMaker has none). An alias held by a package is the customer metadata entry
``alias:<alias>`` whose value is when it was set (UTC, ISO 8601); if a crash between the two updates
of a move leaves two holders, the latest set wins. The approval status follows the aliases after
each move, so every SageMaker tool (the console, EventBridge rules on approval changes, "deploy the
latest Approved package") sees the same decision:

==================================================  ==========================
the package after the move                          ``ModelApprovalStatus``
==================================================  ==========================
holds ``champion`` or ``previous``                  ``Approved``
holds only ``candidate``                            ``PendingManualApproval``
holds nothing, having just lost ``candidate`` or     ``Rejected`` (a rejected candidate,
``champion``                                        or a rolled-back champion)
holds nothing, having just lost ``previous``        unchanged (it aged out)
==================================================  ==========================

A move changes the new holder first (``UpdateModelPackage`` with ``CustomerMetadataProperties`` and,
when it changes, ``ModelApprovalStatus`` with an ``ApprovalDescription`` naming the actor and the
reason), then the old holder (``CustomerMetadataPropertiesToRemove``). Promoting in either order
(``previous`` then ``champion``, or the reverse) ends in the same statuses.

History: SageMaker keeps only a package's latest ``ApprovalDescription`` and ``LastModifiedBy``, no
trail of moves. Every move is therefore also written to S3 as one object,
``{prefix}{name}/alias-moves/{time in ns}-{alias}.json`` = ``{at, actor, alias, version, previous,
reason}``; ``history`` lists them in order. Objects are never rewritten, so two writers cannot lose
each other's records.

Errors: an unknown model or version is ``NotFoundError``; a bad alias or name, or a package that is
not a directory, is ``ConfigError``; any other ``ClientError`` is ``SageMakerError`` naming the
operation and AWS's code.

Status: tested with botocore's ``Stubber`` on the SageMaker client (exact requests) and moto's S3
(``tests/unit/platform/test_model_registry_sagemaker.py``), and with the same assertions as
``MlflowModelRegistry`` on moto's server (``tests/contract/test_model_registry_contract.py``); it
has not run against a real account.
Finding an alias lists and describes the group's packages (one ``DescribeModelPackage`` each), which
is fine for tens of versions, not thousands.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.platform.aws.compute_sagemaker import SageMakerError, is_not_found
from mangaassist.platform.model_registry import ALIASES, ModelVersion

ALIAS_KEY = "alias:"
DIGEST_KEY = "package:sha256"
APPROVED, PENDING, REJECTED = "Approved", "PendingManualApproval", "Rejected"
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def _check_alias(alias: str) -> None:
    if alias not in ALIASES:
        raise ConfigError(f"alias {alias!r}: expected one of {', '.join(ALIASES)}")


def package_tar(package: Path) -> bytes:
    """The directory as a gzip'd tar whose bytes depend only on the files' names and contents."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path in sorted(p for p in package.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(path.relative_to(package).as_posix())
            data = path.read_bytes()
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def status_after(aliases: set[str], lost: str | None, current: str) -> str:
    """The approval status a package gets from the aliases it holds after a move (see the table)."""
    if aliases & {"champion", "previous"}:
        return APPROVED
    if "candidate" in aliases:
        return PENDING
    if lost in {"candidate", "champion"}:
        return REJECTED
    return current


class SageMakerModelRegistry:
    """``sagemaker`` and ``s3`` are boto3 clients (tests pass stubbed or moto ones).

    ``bucket`` / ``prefix``: where packages, registration files and alias moves go. ``image``: the
    inference container of every package (``InferenceSpecification``). ``group_prefix`` keeps the
    environments' groups apart.
    """

    def __init__(
        self,
        sagemaker: Any,
        s3: Any,
        *,
        bucket: str,
        image: str,
        prefix: str = "model-registry/",
        group_prefix: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sm = sagemaker
        self.s3 = s3
        self.bucket = bucket
        self.image = image
        self.prefix = prefix
        self.group_prefix = group_prefix
        self._clock = clock
        self._group_arns: dict[str, str] = {}

    # ------------------------------------------------------------------ helpers

    def group(self, name: str) -> str:
        group = f"{self.group_prefix}{name}"
        if not _NAME.match(group):
            raise ConfigError(
                f"model name {name!r}: model package group {group!r} must be 1-63 letters, digits and '-'"
            )
        return group

    def _call(self, client: Any, op: str, **params: Any) -> Any:
        try:
            return getattr(client, op)(**params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            detail = f"{op}: {err.get('Code', '?')}: {err.get('Message', exc)}"
            if is_not_found(exc) or err.get("Code") in {"NoSuchKey", "404"}:
                raise NotFoundError(detail) from None
            raise SageMakerError(detail) from None

    def _group_arn(self, name: str) -> str:
        if name not in self._group_arns:
            try:
                found = self._call(
                    self.sm, "describe_model_package_group", ModelPackageGroupName=self.group(name)
                )
            except NotFoundError:
                raise NotFoundError(f"no model {name!r} (model package group {self.group(name)})") from None
            self._group_arns[name] = str(found["ModelPackageGroupArn"])
        return self._group_arns[name]

    def _package_arn(self, name: str, version: str) -> str:
        group_arn = self._group_arn(name)
        return f"{group_arn.replace(':model-package-group/', ':model-package/')}/{version}"

    def _describe(self, name: str, version: str) -> dict[str, Any]:
        if not str(version).isdigit():
            raise NotFoundError(f"model {name} has no version {version!r} (versions are 1, 2, ...)")
        package_arn = self._package_arn(name, str(version))  # NotFoundError names a missing model
        try:
            found: dict[str, Any] = self._call(
                self.sm, "describe_model_package", ModelPackageName=package_arn
            )
        except NotFoundError:
            raise NotFoundError(f"model {name} has no version {version}") from None
        return found

    def _describe_all(self, name: str) -> list[dict[str, Any]]:
        try:
            self._group_arn(name)
        except NotFoundError:
            return []
        arns: list[str] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {
                "ModelPackageGroupName": self.group(name),
                "ModelPackageType": "Versioned",
                "SortBy": "CreationTime",
                "SortOrder": "Ascending",
                "MaxResults": 100,
            }
            if token:
                params["NextToken"] = token
            page = self._call(self.sm, "list_model_packages", **params)
            arns += [str(p["ModelPackageArn"]) for p in page.get("ModelPackageSummaryList", [])]
            token = page.get("NextToken")
            if not token:
                break
        found = [self._call(self.sm, "describe_model_package", ModelPackageName=arn) for arn in arns]
        return sorted(found, key=lambda d: int(d.get("ModelPackageVersion", 0)))

    def _registration(self, described: dict[str, Any]) -> dict[str, Any]:
        uri = described.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {}).get("S3Uri")
        if not uri:
            return {}
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        body = self._call(self.s3, "get_object", Bucket=bucket, Key=key)["Body"].read()
        data: dict[str, Any] = json.loads(body)
        return data

    def _to_version(self, name: str, described: dict[str, Any]) -> ModelVersion:
        reg = self._registration(described)
        containers = described.get("InferenceSpecification", {}).get("Containers", [{}])
        meta = described.get("CustomerMetadataProperties", {})
        aliases = sorted((k[len(ALIAS_KEY) :] for k in meta if k.startswith(ALIAS_KEY)), key=ALIASES.index)
        created = described["CreationTime"]
        return ModelVersion(
            name=name,
            version=str(described["ModelPackageVersion"]),
            source=str(containers[0].get("ModelDataUrl", "")),
            created_at=created.astimezone(UTC).isoformat(timespec="seconds"),
            metrics={k: float(v) for k, v in reg.get("metrics", {}).items()},
            params={k: str(v) for k, v in reg.get("params", {}).items()},
            tags={
                **{k: str(v) for k, v in reg.get("tags", {}).items()},
                "sagemaker.approval_status": str(described.get("ModelApprovalStatus", "")),
            },
            aliases=tuple(aliases),
        )

    def _holder(self, name: str, alias: str) -> dict[str, Any] | None:
        key = f"{ALIAS_KEY}{alias}"
        holders = [d for d in self._describe_all(name) if key in d.get("CustomerMetadataProperties", {})]
        return max(holders, key=lambda d: str(d["CustomerMetadataProperties"][key]), default=None)

    def _update(
        self, described: dict[str, Any], *, add: str | None, remove: str | None, actor: str, reason: str
    ) -> None:
        meta = described.get("CustomerMetadataProperties", {})
        held = {k[len(ALIAS_KEY) :] for k in meta if k.startswith(ALIAS_KEY)}
        if add:
            held.add(add)
        if remove:
            held.discard(remove)
        current = str(described.get("ModelApprovalStatus", PENDING))
        new = status_after(held, remove, current)
        params: dict[str, Any] = {"ModelPackageArn": described["ModelPackageArn"]}
        if add:
            params["CustomerMetadataProperties"] = {f"{ALIAS_KEY}{add}": self._now().isoformat()}
        if remove:
            params["CustomerMetadataPropertiesToRemove"] = [f"{ALIAS_KEY}{remove}"]
        if new != current:
            what = f"{add} set" if add else f"{remove} removed"
            params["ModelApprovalStatus"] = new
            params["ApprovalDescription"] = f"{what} by {actor}: {reason}"[:1024]
        self._call(self.sm, "update_model_package", **params)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _record(
        self, name: str, alias: str, version: str | None, previous: str | None, actor: str, reason: str
    ) -> None:
        now = self._now()
        move = {
            "at": now.isoformat(timespec="seconds"),
            "actor": actor,
            "alias": alias,
            "version": version,
            "previous": previous,
            "reason": reason[:1000],
        }
        key = f"{self.prefix}{name}/alias-moves/{int(now.timestamp() * 1e9):020d}-{alias}.json"
        self._call(
            self.s3, "put_object", Bucket=self.bucket, Key=key, Body=json.dumps(move).encode(),
            ContentType="application/json",
        )  # fmt: skip

    # ------------------------------------------------------------------ ModelRegistry

    def register(
        self,
        name: str,
        package: Path,
        *,
        metrics: dict[str, float],
        params: dict[str, str],
        tags: dict[str, str] | None = None,
    ) -> ModelVersion:
        """Upload the package and its registration, create the group if needed, then the package."""
        group = self.group(name)
        if not package.is_dir():
            raise ConfigError(f"{package}: not a model package directory")
        try:
            self._group_arn(name)
        except NotFoundError:
            created = self._call(
                self.sm,
                "create_model_package_group",
                ModelPackageGroupName=group,
                ModelPackageGroupDescription=f"MangaAssist model {name}",
            )
            self._group_arns[name] = str(created["ModelPackageGroupArn"])
        data = package_tar(package)
        digest = hashlib.sha256(data).hexdigest()
        base = f"{self.prefix}{name}/{digest}"
        registration = {
            "metrics": {k: float(v) for k, v in sorted(metrics.items())},
            "params": {k: str(v) for k, v in sorted(params.items())},
            "tags": dict(sorted((tags or {}).items())),
        }
        self._call(self.s3, "put_object", Bucket=self.bucket, Key=f"{base}/model.tar.gz", Body=data)
        self._call(
            self.s3, "put_object", Bucket=self.bucket, Key=f"{base}/registration.json",
            Body=json.dumps(registration, indent=1).encode(), ContentType="application/json",
        )  # fmt: skip
        created = self._call(
            self.sm,
            "create_model_package",
            ModelPackageGroupName=group,
            ModelPackageDescription=f"{name} package sha256 {digest}",
            InferenceSpecification={
                "Containers": [
                    {"Image": self.image, "ModelDataUrl": f"s3://{self.bucket}/{base}/model.tar.gz"}
                ],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            ModelMetrics={
                "ModelQuality": {
                    "Statistics": {
                        "ContentType": "application/json",
                        "S3Uri": f"s3://{self.bucket}/{base}/registration.json",
                    }
                }
            },
            CustomerMetadataProperties={DIGEST_KEY: digest},
            ModelApprovalStatus=PENDING,
        )
        version = str(created["ModelPackageArn"]).rsplit("/", 1)[1]
        return self.get(name, version)

    def get(self, name: str, version: str) -> ModelVersion:
        return self._to_version(name, self._describe(name, version))

    def versions(self, name: str) -> list[ModelVersion]:
        return [self._to_version(name, d) for d in self._describe_all(name)]

    def alias(self, name: str, alias: str) -> ModelVersion | None:
        _check_alias(alias)
        holder = self._holder(name, alias)
        return None if holder is None else self._to_version(name, holder)

    def set_alias(self, name: str, alias: str, version: str, *, actor: str, reason: str = "") -> None:
        _check_alias(alias)
        target = self._describe(name, version)  # NotFoundError before anything moves
        holder = self._holder(name, alias)
        if holder is None or holder["ModelPackageArn"] != target["ModelPackageArn"]:
            self._update(target, add=alias, remove=None, actor=actor, reason=reason)
            if holder is not None:
                self._update(holder, add=None, remove=alias, actor=actor, reason=reason)
        previous = None if holder is None else str(holder["ModelPackageVersion"])
        self._record(name, alias, str(target["ModelPackageVersion"]), previous, actor, reason)

    def delete_alias(self, name: str, alias: str, *, actor: str, reason: str = "") -> None:
        _check_alias(alias)
        holder = self._holder(name, alias)
        if holder is None:
            return
        self._update(holder, add=None, remove=alias, actor=actor, reason=reason)
        self._record(name, alias, None, str(holder["ModelPackageVersion"]), actor, reason)

    def download(self, name: str, version: str, dest: Path) -> Path:
        """The package at ``dest/<name>-v<version>`` (reused if there: versions never change)."""
        found = self.get(name, version)
        target = dest / f"{name}-v{found.version}"
        if target.is_dir():
            return target
        bucket, key = found.source.removeprefix("s3://").split("/", 1)
        body = self._call(self.s3, "get_object", Bucket=bucket, Key=key)["Body"].read()
        dest.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=dest))
        try:
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
                tar.extractall(scratch / "package", filter="data")
            try:
                (scratch / "package").replace(target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target

    def history(self, name: str) -> list[dict[str, Any]]:
        moves_prefix = f"{self.prefix}{name}/alias-moves/"
        keys: list[str] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": moves_prefix}
            if token:
                params["ContinuationToken"] = token
            page = self._call(self.s3, "list_objects_v2", **params)
            keys += [str(o["Key"]) for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                break
        out: list[dict[str, Any]] = []
        for key in sorted(keys):
            body = self._call(self.s3, "get_object", Bucket=self.bucket, Key=key)["Body"].read()
            out.append(json.loads(body))
        return out
