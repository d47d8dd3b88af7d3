"""Build the source the command line asks for; every input is checked here, before a write."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from gpu_stack_runtime import __version__
from gpu_stack_runtime.stager.errors import ConfigError
from gpu_stack_runtime.stager.model import load_manifest
from gpu_stack_runtime.stager.retry import retry_call
from gpu_stack_runtime.stager.sources._http import HttpClient

_S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def _require(args, *names: str) -> None:
    missing = [n for n in names if not getattr(args, n.replace("-", "_"))]
    if missing:
        flags = ", ".join(f"--{n} (STAGE_{n.upper().replace('-', '_')})" for n in missing)
        raise ConfigError(f"--source {args.source} needs {flags}")


def _client(args, token: str | None) -> HttpClient:
    headers = {"User-Agent": f"gpu-stack-stage/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if args.ca_file and not Path(args.ca_file).is_file():
        raise ConfigError(f"--ca-file {args.ca_file} does not exist")
    return HttpClient(headers=headers, timeout=args.timeout, ca_file=args.ca_file,
                      pool_size=args.jobs + 2)


def _manifest_text(args, client: HttpClient | None, required: bool) -> str | None:
    if not args.manifest:
        if required:
            raise ConfigError(f"--source {args.source} needs --manifest (STAGE_MANIFEST)")
        return None
    if args.manifest.startswith(("http://", "https://")):
        if client is None:
            raise ConfigError("--manifest must be a file for this source")
        data = retry_call(lambda: client.get_bytes(args.manifest), retries=args.retries,
                          what="fetch manifest")
        return data.decode("utf-8")
    try:
        return Path(args.manifest).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read --manifest {args.manifest}: {exc.strerror}") from exc


def _token(args, env_name: str, read_secret, env_secret) -> str | None:
    if args.token_file:
        return read_secret(args.token_file, "token")
    return env_secret(env_name)


def _s3_credentials(args, read_secret, env_secret) -> dict:
    names = {"AWS_ACCESS_KEY_ID": "aws_access_key_id",
             "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
             "AWS_SESSION_TOKEN": "aws_session_token"}
    creds = {}
    if args.s3_credentials_dir:
        base = Path(args.s3_credentials_dir)
        if not base.is_dir():
            raise ConfigError(f"--s3-credentials-dir {base} is not a directory")
        for key in _S3_KEYS:
            if (base / key).exists():
                creds[names[key]] = read_secret(str(base / key), key)
    else:
        for key in _S3_KEYS:
            value = env_secret(key)
            if value:
                creds[names[key]] = value
    if creds and not {"aws_access_key_id", "aws_secret_access_key"} <= creds.keys():
        raise ConfigError("S3 credentials need both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    return creds


def _load(module: str, name: str):
    """Import a source whose SDK is an optional dependency, with a clear error if absent."""
    try:
        mod = importlib.import_module(f"gpu_stack_runtime.stager.sources.{module}")
    except ImportError as exc:
        raise ConfigError(f"the {module} source needs {exc.name}: install "
                          "llmops-gpu-stack-runtime[stager]") from exc
    return getattr(mod, name)


def make_source(args, area, *, read_secret, env_secret):
    kind = args.source
    if kind == "hub":
        _require(args, "repo-id")
        token = _token(args, "HF_TOKEN", read_secret, env_secret)
        HubSource = _load("hub", "HubSource")
        return HubSource(args.repo_id, revision=args.revision, repo_type=args.repo_type,
                         allow_patterns=args.allow_pattern, ignore_patterns=args.ignore_pattern,
                         endpoint=args.endpoint, token=token, client=_client(args, token),
                         retries=args.retries, timeout=args.timeout)
    if kind == "s3":
        _require(args, "bucket")
        creds = {} if args.s3_anonymous else _s3_credentials(args, read_secret, env_secret)
        S3Source = _load("s3", "S3Source")
        text = _manifest_text(args, None, required=False)
        manifest = load_manifest(text, args.manifest) if text else None
        return S3Source(args.bucket, args.prefix, endpoint_url=args.endpoint_url,
                        region=args.region, credentials=creds, anonymous=args.s3_anonymous,
                        addressing_style=args.s3_addressing_style, manifest=manifest,
                        manifest_text=text, etag_digest=not args.no_etag_digest,
                        jobs=args.jobs, timeout=args.timeout, retries=args.retries)
    if kind == "http":
        from gpu_stack_runtime.stager.sources.http import HttpFilesSource

        _require(args, "url")
        client = _client(args, _token(args, "STAGE_HTTP_TOKEN", read_secret, env_secret))
        text = _manifest_text(args, client, required=True)
        return HttpFilesSource(args.url, text, args.manifest, client, retries=args.retries)
    if kind == "archive":
        from gpu_stack_runtime.stager.archive import ArchiveSource

        _require(args, "url")
        client = _client(args, _token(args, "STAGE_HTTP_TOKEN", read_secret, env_secret))
        text = _manifest_text(args, client, required=False)
        return ArchiveSource(args.url, client, fmt=args.archive_format,
                             archive_sha256=args.archive_sha256,
                             strip_components=args.strip_components,
                             unpacked_size=args.unpacked_size,
                             manifest=load_manifest(text, args.manifest) if text else None,
                             manifest_text=text, retries=args.retries)
    if kind == "local":
        from gpu_stack_runtime.stager.sources.local import LocalSource

        upload = Path(args.upload_dir) if args.upload_dir else area.upload_dir
        text = _manifest_text(args, None, required=True)
        return LocalSource(Path(os.path.abspath(upload)), area.staging, text, args.manifest)
    raise ConfigError(f"unknown source {kind!r}")
