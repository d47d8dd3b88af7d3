"""`gpu-stack-stage`: the command a Kubernetes Job runs to stage a model onto a volume.

Every option can come from the environment (STAGE_<OPTION>, e.g. STAGE_REPO_ID); secrets
only from files (a mounted Secret) or the environment (secretKeyRef), never from
arguments. The last line on stdout is the result as JSON; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from gpu_stack_runtime import __version__
from gpu_stack_runtime.common.contract import STAGE_ENV_PREFIX, STAGE_SOURCES
from gpu_stack_runtime.stager.errors import ConfigError, CredentialsError, StageError
from gpu_stack_runtime.stager.publish import StagingArea
from gpu_stack_runtime.stager.stage import Options, Outcome, stage

log = logging.getLogger("gpu_stack_runtime.stager")

SOURCES = STAGE_SOURCES


def _env(name: str, *fallbacks: str, default=None):
    for key in (f"{STAGE_ENV_PREFIX}{name}", *fallbacks):
        if os.environ.get(key):
            return os.environ[key]
    return default


def _env_list(name: str) -> list[str]:
    value = _env(name)
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _env_flag(name: str) -> bool:
    return str(_env(name, default="")).lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpu-stack-stage", description=__doc__.split("\n\n", maxsplit=1)[0],
        epilog="Exit codes: 0 staged or already staged, 1 unexpected, 2 config, "
               "3 credentials, 4 not found, 5 no space, 6 integrity (local upload), "
               "7 source changed, 8 unsafe archive, 9 transfer failed, 10 busy.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--source", choices=SOURCES, default=_env("SOURCE"))
    p.add_argument("--dest", default=_env("DEST"), help="final model directory on the volume")
    p.add_argument("--jobs", type=int, default=int(_env("JOBS", default=4)))
    p.add_argument("--retries", type=int, default=int(_env("RETRIES", default=8)))
    p.add_argument("--timeout", type=float, default=float(_env("TIMEOUT", default=60)))
    p.add_argument("--progress-interval", type=float,
                   default=float(_env("PROGRESS_INTERVAL", default=10)))
    p.add_argument("--space-margin", type=int, default=int(_env("SPACE_MARGIN", default=64 << 20)))
    p.add_argument("--verify", action="store_true", default=_env_flag("VERIFY"),
                   help="re-hash the published files instead of trusting size and mtime")
    p.add_argument("--check", action="store_true", default=_env_flag("CHECK"),
                   help="report whether a transfer would happen; write nothing")
    p.add_argument("--replace-unmanaged", action="store_true",
                   default=_env_flag("REPLACE_UNMANAGED"))
    p.add_argument("--lock-wait", type=float, default=float(_env("LOCK_WAIT", default=0)),
                   help="seconds to wait for another stager of the same destination "
                        "(default 0: exit 10 at once)")
    p.add_argument("--result-file", default=_env("RESULT_FILE"))
    p.add_argument("--log-level", default=_env("LOG_LEVEL", default="INFO"))
    p.add_argument("--ca-file", default=_env("CA_FILE"))
    p.add_argument("--manifest", default=_env("MANIFEST"), help="sha256 manifest: path or URL")
    p.add_argument("--token-file", default=_env("TOKEN_FILE"),
                   help="bearer token file (hub, http, archive); env HF_TOKEN or "
                        "STAGE_HTTP_TOKEN otherwise")
    hub = p.add_argument_group("hub")
    hub.add_argument("--repo-id", default=_env("REPO_ID"))
    hub.add_argument("--revision", default=_env("REVISION", default="main"))
    hub.add_argument("--repo-type", choices=("model", "dataset"),
                     default=_env("REPO_TYPE", default="model"))
    hub.add_argument("--allow-pattern", action="append", default=_env_list("ALLOW_PATTERNS"))
    hub.add_argument("--ignore-pattern", action="append", default=_env_list("IGNORE_PATTERNS"))
    hub.add_argument("--endpoint", default=_env("ENDPOINT", "HF_ENDPOINT"))
    s3 = p.add_argument_group("s3")
    s3.add_argument("--bucket", default=_env("BUCKET"))
    s3.add_argument("--prefix", default=_env("PREFIX", default=""))
    s3.add_argument("--endpoint-url", default=_env("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                                                   "AWS_ENDPOINT_URL"))
    s3.add_argument("--region", default=_env("S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"))
    s3.add_argument("--s3-credentials-dir", default=_env("S3_CREDENTIALS_DIR"),
                    help="mounted Secret with files AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
                         "[, AWS_SESSION_TOKEN]")
    s3.add_argument("--s3-anonymous", action="store_true", default=_env_flag("S3_ANONYMOUS"))
    s3.add_argument("--s3-addressing-style", choices=("auto", "path", "virtual"),
                    default=_env("S3_ADDRESSING_STYLE", default="auto"))
    s3.add_argument("--no-etag-digest", action="store_true", default=_env_flag("NO_ETAG_DIGEST"),
                    help="never treat a single-part ETag as MD5 (KMS/SSE-C encrypted objects)")
    web = p.add_argument_group("http / archive")
    web.add_argument("--url", default=_env("URL"), help="base URL (http) or archive URL")
    web.add_argument("--archive-format", default=_env("ARCHIVE_FORMAT", default="auto"),
                     choices=("auto", "tar", "tar.gz", "tar.bz2", "tar.xz", "zip"))
    web.add_argument("--archive-sha256", default=_env("ARCHIVE_SHA256"))
    web.add_argument("--strip-components", type=int,
                     default=int(_env("STRIP_COMPONENTS", default=0)))
    web.add_argument("--unpacked-size", type=int, default=_env("UNPACKED_SIZE"),
                     help="expected unpacked bytes (free-space check of compressed tar)")
    local = p.add_argument_group("local")
    local.add_argument("--upload-dir", default=_env("UPLOAD_DIR"),
                       help="default: <dest parent>/.gpu-stack-staging/<name>.upload")
    return p


class _RedactSecrets(logging.Filter):
    """Defence in depth: mask any secret value that reaches a log record."""

    secrets: ClassVar[set[str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            for secret in sorted(self.secrets, key=len, reverse=True):  # longest first
                text = text.replace(secret, "***")
            record.msg, record.args = text, None
        return True


def read_secret(path: str, what: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise CredentialsError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    if not value:
        raise CredentialsError(f"the {what} file {path} is empty")
    _RedactSecrets.secrets.add(value)
    return value


def env_secret(name: str) -> str | None:
    value = os.environ.get(name, "").strip() or None
    if value:
        _RedactSecrets.secrets.add(value)
    return value


def hide_signed_urls(args: argparse.Namespace) -> None:
    """A URL with a query string or user info (a presigned URL, a password) is a secret:
    it and its query are masked in every log line and in the result."""
    for url in (getattr(args, "url", None), getattr(args, "manifest", None)):
        if not url or "://" not in url:
            continue
        parts = urlsplit(url)
        if parts.query or parts.username or parts.password:
            _RedactSecrets.secrets.add(url)
            if parts.query:
                _RedactSecrets.secrets.add(parts.query)
            if parts.password:
                _RedactSecrets.secrets.add(parts.password)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(_RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpx2", "httpcore", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _emit(result: dict, result_file: str | None) -> None:
    text = json.dumps(result, sort_keys=True)
    for secret in sorted(_RedactSecrets.secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    print(text, flush=True)
    if result_file:
        Path(result_file).write_text(text + "\n")


def run(args: argparse.Namespace) -> Outcome:
    from gpu_stack_runtime.stager.sources.factory import make_source  # heavy imports

    if not args.source:
        raise ConfigError("--source (STAGE_SOURCE) is required: one of " + ", ".join(SOURCES))
    if not args.dest:
        raise ConfigError("--dest (STAGE_DEST) is required")
    if args.jobs < 1 or args.retries < 0:
        raise ConfigError("--jobs must be >= 1 and --retries >= 0")
    opts = Options(jobs=args.jobs, retries=args.retries, progress_interval=args.progress_interval,
                   verify=args.verify, check=args.check, replace_unmanaged=args.replace_unmanaged,
                   space_margin=args.space_margin, lock_wait=args.lock_wait)
    area = StagingArea(Path(args.dest))
    if not area.dest.parent.is_dir():
        raise ConfigError(f"{area.dest.parent} does not exist (is the volume mounted?)")
    source = make_source(args, area, read_secret=read_secret, env_secret=env_secret)
    try:
        if args.source == "archive":
            from gpu_stack_runtime.stager.archive import stage_archive

            return stage_archive(source, area.dest, opts)
        outcome = stage(source, area.dest, opts)
        if args.source == "local" and args.upload_dir and not args.check:
            source.discard_upload()  # a run's own upload dir (--upload-dir) ends with it
        return outcome
    finally:
        source.close()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    hide_signed_urls(args)
    _setup_logging(args.log_level)
    try:
        outcome = run(args)
    except StageError as exc:
        log.error("staging failed (%s): %s", exc.kind, exc)
        _emit({"failed": True, "error": exc.kind, "message": str(exc),
               "exit_code": exc.exit_code}, args.result_file)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception:
        log.exception("unexpected error")
        return 1
    _emit(outcome.as_json(), args.result_file)
    return 0
