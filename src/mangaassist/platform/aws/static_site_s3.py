"""``StaticSite`` on S3 behind CloudFront (CD-05, production provider). Clients are injected (boto3).

The bucket is ``[environments.NAME.aws] site_bucket`` (CD-02's ``mangaassist-ENV-widget``), the
distribution ``site_distribution_id``. Layout of the bucket:

==============================  =======================================================================
``assets/...``                  hashed assets, one object per path, never overwritten or deleted on
                                deploy (``public, max-age=31536000, immutable``; metadata ``sha256``)
``releases/<id>/<entry file>``  each release's entry files (``no-cache``)
``releases/<id>.json``          the release's manifest (path -> sha256 and size, upload time), written
                                last: a release whose manifest exists has every file stored
``channels/<channel>.json``     the channel's pointer: ``release``, ``history`` (every move) and
                                ``invalidations``; written with ``If-Match`` on the ETag read (or
                                ``If-None-Match: *`` when new), so two writers cannot both win
``<entry file>``,               what the distribution serves: the live release's entry files of the
``previews/<b>/<entry file>``   environment's channel (the bucket's root) and of each preview channel
==============================  =======================================================================

``upload`` puts the assets that are missing first (``head_object`` says which exist; one stored
with another ``sha256`` is a ``StaticSiteError``), then the entry files under ``releases/<id>/``,
then the manifest. ``point`` checks every asset of the release is stored, copies its entry files to
the channel's prefix (``manifest.json``, then the others, ``index.html`` last; an old entry file the
new release lacks is deleted only afterwards: never delete-then-upload) and then writes the
channel's document. S3 has no multi-object transaction: during the copies (milliseconds) a
browser may get the new ``loader.js`` with the old ``index.html``, which works because every asset
of both releases is stored; the channel's document (``current``) moves last, in one conditional
write. ``invalidate`` is one CloudFront ``CreateInvalidation`` with the paths given (on a preview
channel, prefixed with ``/previews/<branch>``). ``gc`` deletes releases retention no longer keeps and
assets no kept release names, older than ``gc_grace_s`` (an upload in progress has no manifest yet).

The distribution's two CloudFront Functions live in CD-02's edge stack
(``infra/mangaassist_infra/functions``): the viewer request maps ``/previews/<b>/assets/...`` to
``/assets/...`` and a directory URL to its ``index.html``; the viewer response turns an entry
copy's ``x-amz-meta-release`` into ``X-MangaAssist-Release``, which ``verify`` polls.

Status: the provider contract suite (``tests/integration/static_site``) runs against moto's server
process; it has not run against a real account yet.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.platform.static_site import (
    ASSET_CACHE_CONTROL,
    ENTRY_CACHE_CONTROL,
    PREVIEW_PREFIX,
    RETAINED_RELEASES,
    Collected,
    Invalidation,
    PointerChange,
    ReleaseFile,
    ReleaseInfo,
    StaticSiteError,
    Upload,
    check_branch,
    check_channel,
    check_invalidation_paths,
    check_release,
    content_type,
    file_digest,
    is_asset,
    now_iso,
    preview_channel,
    release_id_of,
    retained_ids,
)

_MISSING = ("404", "NoSuchKey", "NotFound")
_COPY_ORDER = {"manifest.json": 0, "index.html": 3, "loader.js": 2}


def _entry_order(path: str) -> tuple[int, str]:
    return _COPY_ORDER.get(path, 1), path


class S3StaticSite:
    """``StaticSite`` in an S3 bucket served by a CloudFront distribution."""

    def __init__(
        self,
        s3: Any,
        cloudfront: Any,
        *,
        bucket: str,
        distribution_id: str,
        environment: str,
        site_url: str | None = None,
        gc_grace_s: float = 3600.0,
    ) -> None:
        self.s3 = s3
        self.cloudfront = cloudfront
        self.bucket = bucket
        self.distribution_id = distribution_id
        self.environment = check_channel(environment)
        self._site_url = site_url
        self.gc_grace_s = gc_grace_s

    def close(self) -> None:
        return None  # the clients are the factory's

    # -- S3 helpers -------------------------------------------------------------------------------

    def _call(self, operation: str, key: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.s3, operation)(Bucket=self.bucket, **({"Key": key} if key else {}), **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise NotFoundError(f"s3://{self.bucket}/{key}: not found") from None
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise StaticSiteError(
                    f"s3://{self.bucket}/{key} changed meanwhile (another deploy?): read it again"
                ) from None
            if code == "NoSuchBucket":
                raise ConfigError(
                    f"the site's bucket {self.bucket} does not exist (CD-02 makes it)"
                ) from None
            raise StaticSiteError(f"S3 {operation} s3://{self.bucket}/{key}: {code}: {exc}") from None
        except BotoCoreError as exc:
            raise StaticSiteError(f"S3 {operation} s3://{self.bucket}/{key}: {exc}") from None

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self._call("head_object", key)
        except NotFoundError:
            return None
        return head

    def _get(self, key: str) -> tuple[bytes, str]:
        got = self._call("get_object", key)
        return got["Body"].read(), str(got["ETag"])

    def _keys(self, prefix: str, delimiter: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix}
            if delimiter:
                kwargs["Delimiter"] = delimiter
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list_objects_v2", "", **kwargs)
            out.extend(page.get("Contents", []))
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            answer = self._call("delete_objects", "", Delete={"Objects": [{"Key": k} for k in chunk]})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise StaticSiteError(
                    f"S3 delete {first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    # -- layout -----------------------------------------------------------------------------------

    def _channel(self, channel: str) -> str:
        check_channel(channel)
        if channel != self.environment and not channel.startswith(PREVIEW_PREFIX):
            raise ConfigError(
                f"channel {channel!r}: this site serves environment {self.environment} "
                f"(channels: {self.environment}, preview/<branch>)"
            )
        return channel

    @staticmethod
    def _prefix(channel: str) -> str:
        """Where a channel's entry files are served from: the root, or ``previews/<branch>/``."""
        return f"previews/{channel[len(PREVIEW_PREFIX) :]}/" if channel.startswith(PREVIEW_PREFIX) else ""

    @staticmethod
    def _manifest_key(release_id: str) -> str:
        if not release_id.startswith("r-") or not release_id[2:].isalnum():
            raise NotFoundError(f"no release {release_id!r}")
        return f"releases/{release_id}.json"

    @staticmethod
    def _file_key(release_id: str, path: str) -> str:
        return path if is_asset(path) else f"releases/{release_id}/{path}"

    def _doc(self, channel: str) -> tuple[dict[str, Any], str | None]:
        try:
            raw, etag = self._get(f"channels/{channel}.json")
        except NotFoundError:
            return {"channel": channel, "release": None, "history": [], "invalidations": []}, None
        return json.loads(raw), etag

    def _save(self, channel: str, doc: dict[str, Any], etag: str | None) -> None:
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        self._call(
            "put_object",
            f"channels/{channel}.json",
            Body=json.dumps(doc, indent=1).encode(),
            ContentType="application/json",
            CacheControl=ENTRY_CACHE_CONTROL,
            **condition,
        )

    # -- StaticSite -------------------------------------------------------------------------------

    def upload(self, files: Mapping[str, bytes]) -> Upload:
        check_release(files)
        digests = {path: file_digest(bytes(data)) for path, data in files.items()}
        rid = release_id_of(digests)
        if self._head(self._manifest_key(rid)) is not None:
            return Upload(rid, (), tuple(sorted(files)))
        uploaded: list[str] = []
        skipped: list[str] = []
        for path in sorted(p for p in files if is_asset(p)):
            head = self._head(path)
            if head is not None:
                stored = head.get("Metadata", {}).get("sha256")
                if stored != digests[path]:
                    raise StaticSiteError(
                        f"asset {path} is stored with other content (sha256 {stored}): a hashed asset "
                        "never changes (name it by its content)"
                    )
                skipped.append(path)
                continue
            self._put(path, files[path], digests[path], ASSET_CACHE_CONTROL)
            uploaded.append(path)
        for path in sorted(p for p in files if not is_asset(p)):
            self._put(self._file_key(rid, path), files[path], digests[path], ENTRY_CACHE_CONTROL)
            uploaded.append(path)
        manifest = {
            "release": rid,
            "created_at": now_iso(),
            "created_ns": time.time_ns(),
            "files": {p: {"sha256": digests[p], "size": len(files[p])} for p in sorted(files)},
        }
        self._call(
            "put_object",
            self._manifest_key(rid),
            Body=json.dumps(manifest, indent=1).encode(),
            ContentType="application/json",
        )
        return Upload(rid, tuple(sorted(uploaded)), tuple(skipped))

    def _put(self, key: str, data: bytes, sha: str, cache_control: str) -> None:
        self._call(
            "put_object",
            key,
            Body=bytes(data),
            ContentType=content_type(key),
            CacheControl=cache_control,
            Metadata={"sha256": sha},
        )

    def _load(self, release_id: str) -> tuple[int, ReleaseInfo]:
        raw = json.loads(self._get(self._manifest_key(release_id))[0])
        files = tuple(
            ReleaseFile(path, str(m["sha256"]), int(m["size"])) for path, m in sorted(raw["files"].items())
        )
        return int(raw["created_ns"]), ReleaseInfo(release_id, files, str(raw["created_at"]))

    def point(self, channel: str, release_id: str, *, reason: str) -> PointerChange:
        self._channel(channel)
        try:
            info = self.release(release_id)
        except NotFoundError:
            raise StaticSiteError(f"cannot point {channel} at {release_id}: it is not uploaded") from None
        missing = [f.path for f in info.assets if self._head(f.path) is None]
        if missing:
            raise StaticSiteError(f"release {release_id} lacks stored assets: {', '.join(missing)}")
        doc, etag = self._doc(channel)
        if doc["release"] == release_id and doc["history"]:
            return self._move(channel, doc["history"][-1])
        prefix = self._prefix(channel)
        entries = sorted((f for f in info.entry_files), key=lambda f: _entry_order(f.path))
        for f in entries:
            self._call(
                "copy_object",
                prefix + f.path,
                CopySource={"Bucket": self.bucket, "Key": self._file_key(release_id, f.path)},
                MetadataDirective="REPLACE",
                ContentType=content_type(f.path),
                CacheControl=ENTRY_CACHE_CONTROL,
                Metadata={"sha256": f.sha256, "release": release_id},
            )
        previous = doc["release"]
        if previous:
            new_paths = {f.path for f in entries}
            with_prev = self._load(previous)[1] if self._head(self._manifest_key(previous)) else None
            stale = [
                prefix + f.path
                for f in (with_prev.entry_files if with_prev else ())
                if f.path not in new_paths
            ]
            if stale:
                self._delete(stale)
        move = {
            "seq": len(doc["history"]) + 1,
            "release": release_id,
            "previous": previous,
            "at": now_iso(),
            "reason": reason,
        }
        doc["release"] = release_id
        doc["history"].append(move)
        self._save(channel, doc, etag)
        return self._move(channel, move)

    @staticmethod
    def _move(channel: str, raw: Mapping[str, Any]) -> PointerChange:
        return PointerChange(
            channel, raw["release"], raw["previous"], raw["at"], raw["reason"], int(raw["seq"])
        )

    def current(self, channel: str) -> str | None:
        self._channel(channel)
        release = self._doc(channel)[0]["release"]
        return None if release is None else str(release)

    def history(self, channel: str) -> list[PointerChange]:
        self._channel(channel)
        return [self._move(channel, m) for m in self._doc(channel)[0]["history"]]

    def release(self, release_id: str) -> ReleaseInfo:
        return self._load(release_id)[1]

    def _stored(self) -> list[tuple[int, ReleaseInfo]]:
        out = []
        for obj in self._keys("releases/", delimiter="/"):
            key = str(obj["Key"])
            if key.endswith(".json"):
                out.append(self._load(key[len("releases/") : -len(".json")]))
        return sorted(out, key=lambda pair: (pair[0], pair[1].release_id))

    def releases(self) -> list[ReleaseInfo]:
        return [info for _, info in self._stored()]

    def read(self, release_id: str, path: str) -> bytes:
        found = self.release(release_id).file(path)
        if found is None:
            raise NotFoundError(f"release {release_id} has no file {path}")
        return self._get(self._file_key(release_id, path))[0]

    def invalidate(self, channel: str, paths: list[str]) -> Invalidation:
        self._channel(channel)
        given = check_invalidation_paths(paths)
        prefix = "/" + self._prefix(channel).rstrip("/") if self._prefix(channel) else ""
        cdn_paths = [prefix + p for p in given]
        try:
            made = self.cloudfront.create_invalidation(
                DistributionId=self.distribution_id,
                InvalidationBatch={
                    "Paths": {"Quantity": len(cdn_paths), "Items": cdn_paths},
                    "CallerReference": f"mangaassist-{uuid.uuid4().hex}",
                },
            )["Invalidation"]
        except (ClientError, BotoCoreError) as exc:
            raise StaticSiteError(
                f"CloudFront create_invalidation on {self.distribution_id} ({', '.join(cdn_paths)}): {exc}"
            ) from None
        created = made.get("CreateTime")
        at = (
            created.astimezone(UTC).isoformat(timespec="milliseconds")
            if isinstance(created, datetime)
            else now_iso()
        )
        record = Invalidation(str(made["Id"]), channel, given, at)
        for attempt in range(3):  # the record joins the channel's document (a conditional write)
            doc, etag = self._doc(channel)
            doc["invalidations"].append({"id": record.id, "paths": list(given), "at": record.at})
            try:
                self._save(channel, doc, etag)
                break
            except StaticSiteError:
                if attempt == 2:
                    raise
        return record

    def invalidations(self, channel: str) -> list[Invalidation]:
        self._channel(channel)
        return [
            Invalidation(str(i["id"]), channel, tuple(i["paths"]), str(i["at"]))
            for i in self._doc(channel)[0]["invalidations"]
        ]

    def _channels(self) -> list[str]:
        return sorted(
            str(o["Key"])[len("channels/") : -len(".json")]
            for o in self._keys("channels/")
            if str(o["Key"]).endswith(".json")
        )

    def previews(self) -> list[str]:
        return [
            channel[len(PREVIEW_PREFIX) :]
            for channel in self._channels()
            if channel.startswith(PREVIEW_PREFIX) and self._doc(channel)[0]["release"] is not None
        ]

    def delete_preview(self, branch: str) -> bool:
        channel = preview_channel(check_branch(branch))
        doc, etag = self._doc(channel)
        if etag is None:
            return False
        served = [str(o["Key"]) for o in self._keys(self._prefix(channel))]
        if served:
            self._delete(served)
        self._call("delete_object", f"channels/{channel}.json")
        return doc["release"] is not None

    def retained(self, keep: int = RETAINED_RELEASES) -> set[str]:
        uploads = [info.release_id for _, info in reversed(self._stored())]
        pointed = {c: [m["release"] for m in self._doc(c)[0]["history"]] for c in self._channels()}
        return retained_ids(uploads, pointed, keep) & set(uploads)

    def gc(self, keep: int = RETAINED_RELEASES) -> Collected:
        if keep < 1:
            raise ConfigError(f"gc keep={keep}: at least 1 (the live releases are always kept)")
        stored = self._stored()
        kept = self.retained(keep)
        used = {f.path for _, info in stored if info.release_id in kept for f in info.assets}
        cutoff = time.time() - self.gc_grace_s
        dropped: list[str] = []
        doomed: list[str] = []
        for _, info in stored:
            if info.release_id not in kept:
                dropped.append(info.release_id)
                doomed.append(self._manifest_key(info.release_id))  # the manifest first: then it is gone
                doomed.extend(self._file_key(info.release_id, f.path) for f in info.entry_files)
        for obj in self._keys("assets/"):
            if str(obj["Key"]) not in used and obj["LastModified"].timestamp() <= cutoff:
                doomed.append(str(obj["Key"]))
        self._delete(doomed)
        return Collected(tuple(dropped), len(doomed) - len(dropped))

    def url(self, channel: str) -> str:
        self._channel(channel)
        if self._site_url is None:
            try:
                got = self.cloudfront.get_distribution(Id=self.distribution_id)
            except (ClientError, BotoCoreError) as exc:
                raise StaticSiteError(f"CloudFront get_distribution {self.distribution_id}: {exc}") from None
            self._site_url = f"https://{got['Distribution']['DomainName']}"
        return f"{self._site_url.rstrip('/')}/{self._prefix(channel)}"
