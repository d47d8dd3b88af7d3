"""S3-compatible object storage through boto3: list a prefix, ranged GETs with If-Match.

An object's ETag is its MD5 only for single-part uploads without KMS/SSE-C encryption
(no `-N` suffix): only then is it used as a digest. Otherwise the object is verified
against a manifest if one is given, and its ETag still pins the version (If-Match).
"""

from __future__ import annotations

import hashlib
import http.client
import re

import boto3
import urllib3.exceptions
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from gpu_stack_runtime.stager.errors import (
    CredentialsError,
    SourceChangedError,
    SourceNotFoundError,
    StageError,
    TransientError,
)
from gpu_stack_runtime.stager.model import Listing, RemoteFile, safe_relpath
from gpu_stack_runtime.stager.retry import retry_call
from gpu_stack_runtime.stager.sources._http import redact_url
from gpu_stack_runtime.stager.sources.base import Source, Stream

_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
               "ExpiredToken", "InvalidToken", "AllAccessDisabled"}
_MISSING_CODES = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}


def _map_error(exc: Exception, what: str, *, missing=SourceNotFoundError) -> Exception:
    if isinstance(exc, NoCredentialsError):
        return CredentialsError(f"{what}: no S3 credentials")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _AUTH_CODES or status in (401, 403):
            return CredentialsError(f"{what}: access refused ({code or status})")
        if code in ("PreconditionFailed", "InvalidRange") or status in (412, 416):
            return SourceChangedError(f"{what}: the object changed ({code or status})")
        if code in _MISSING_CODES or status == 404:
            return missing(f"{what}: not found ({code or status})")
        if status >= 500 or code in ("SlowDown", "RequestTimeout", "InternalError"):
            return TransientError(f"{what}: {code or status}")
        return StageError(f"{what}: {code or status}")
    return TransientError(f"{what}: {exc.__class__.__name__}")


class _S3Stream(Stream):
    def __init__(self, body, start: int, etag: str | None, what: str):
        self._body = body
        self.start = start
        self.etag = etag
        self._what = what

    def chunks(self, size: int):
        try:
            while True:
                data = self._body.read(size)
                if not data:
                    return
                yield data
        except (BotoCoreError, OSError) as exc:
            raise TransientError(f"{self._what}: {exc.__class__.__name__}") from exc
        except (urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
            # urllib3's ProtocolError and friends, and http.client's IncompleteRead, raised
            # under botocore while the body streams: a broken transfer, worth retrying.
            raise TransientError(f"{self._what}: {exc.__class__.__name__}") from exc

    def close(self) -> None:
        self._body.close()


class S3Source(Source):
    kind = "s3"

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, credentials: dict | None = None,
                 anonymous: bool = False, addressing_style: str = "auto",
                 manifest: dict | None = None, manifest_text: str | None = None,
                 etag_digest: bool = True, jobs: int = 4, timeout: float = 60.0,
                 retries: int = 8):
        self._bucket = bucket
        self._prefix = prefix.lstrip("/")
        if self._prefix and not self._prefix.endswith("/"):
            self._prefix += "/"
        self._endpoint = endpoint_url
        self._manifest = manifest
        self._manifest_sha = (hashlib.sha256(manifest_text.encode()).hexdigest()
                              if manifest_text else None)
        self._etag_digest = etag_digest
        self._retries = retries
        session = boto3.session.Session(region_name=region or "us-east-1", **(credentials or {}))
        if not anonymous and session.get_credentials() is None:
            raise CredentialsError(
                "no S3 credentials: mount a Secret with AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (--s3-credentials-dir) or set them in the environment, "
                "or pass --s3-anonymous for a public bucket")
        config = Config(signature_version=UNSIGNED if anonymous else None,
                        max_pool_connections=jobs + 4, connect_timeout=min(timeout, 15),
                        read_timeout=timeout, retries={"mode": "standard", "max_attempts": 3},
                        s3={"addressing_style": addressing_style})
        self._s3 = session.client("s3", endpoint_url=endpoint_url, config=config)

    def describe(self) -> dict:
        return {"type": self.kind, "bucket": self._bucket, "prefix": self._prefix,
                "endpoint": redact_url(self._endpoint) if self._endpoint else None,
                "manifest_sha256": self._manifest_sha}

    def list(self) -> Listing:
        objects = retry_call(self._list_objects, retries=self._retries,
                             what=f"list s3://{self._bucket}/{self._prefix}")
        where = f"s3://{self._bucket}/{self._prefix}"
        if not objects:
            raise SourceNotFoundError(f"{where}: no objects")
        if self._manifest is not None:
            missing = sorted(set(self._manifest) - set(objects))
            if missing:
                raise SourceNotFoundError(f"{where}: manifest files missing: {', '.join(missing)}")
            objects = {k: v for k, v in objects.items() if k in self._manifest}
        files = []
        for rel, (key, size, etag) in sorted(objects.items()):
            digests = {}
            if self._manifest is not None:
                entry = self._manifest[rel]
                if entry["size"] is not None and entry["size"] != size:
                    raise SourceChangedError(f"{where}{rel}: {size} bytes, manifest says "
                                             f"{entry['size']}")
                digests["sha256"] = entry["sha256"]
            match = _MD5_ETAG.match(etag or "")
            if match and self._etag_digest:
                digests["md5"] = match.group(1).lower()
            files.append(RemoteFile(rel, size, digests, etag, key))
        return Listing(files, None)

    def _list_objects(self) -> dict:
        what = f"list s3://{self._bucket}/{self._prefix}"
        out = {}
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/"):
                        continue
                    rel = safe_relpath(key[len(self._prefix):])
                    out[rel] = (key, obj["Size"], obj.get("ETag"))
        except (ClientError, BotoCoreError) as exc:
            raise _map_error(exc, what) from exc
        return out

    def open(self, rf: RemoteFile, offset: int, etag: str | None = None):
        what = f"s3://{self._bucket}/{rf.ref}"
        kwargs = {"Bucket": self._bucket, "Key": rf.ref}
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        if rf.etag:
            kwargs["IfMatch"] = rf.etag
        try:
            resp = self._s3.get_object(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _map_error(exc, what, missing=SourceChangedError) from exc
        start = 0
        if "ContentRange" in resp:
            start = int(resp["ContentRange"].split(" ")[1].split("-")[0])
            total = int(resp["ContentRange"].rsplit("/", 1)[1])
            if total != rf.size:
                resp["Body"].close()
                raise SourceChangedError(f"{what}: size is now {total}, listed {rf.size}")
        elif resp.get("ContentLength") != rf.size:
            resp["Body"].close()
            raise SourceChangedError(f"{what}: size is now {resp.get('ContentLength')}, "
                                     f"listed {rf.size}")
        return _S3Stream(resp["Body"], start, resp.get("ETag"), what)
