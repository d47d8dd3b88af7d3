# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The contract between the controller and the in-cluster runtime, written once.

The controller (``plugins/module_utils``) renders the stager Job and the serving pods;
the runtime (``gpu_stack_runtime``: ``gpu-stack-stage``, ``gpu-stack-launch``) runs in
them. What one side writes and the other reads lives here: the volume layout, the
completion marker, the environment names, the launcher's exit codes and the gateway's
key check.

This file exists twice, byte for byte: ``plugins/module_utils/common/contract.py``
(module_utils cannot import the runtime package) and
``images/runtime/gpu_stack_runtime/common/contract.py`` (the runtime image does not
ship module_utils). Edit one and copy it over the other; ``tests/unit/shared`` fails on
any byte of drift. Standard library only, no imports.
"""

from __future__ import annotations

# --- the model volume ---------------------------------------------------------------
# Where the model volume is mounted in the stager Job and in the serving pods.
MODEL_MOUNT = "/models"
# Beside the published model directories: <parent>/.gpu-stack-staging/<name>/ holds the
# files being staged, <name>.upload/ the uploads of the local source.
STAGING_AREA = ".gpu-stack-staging"
UPLOAD_SUFFIX = ".upload"

# --- the completion marker (written by the stager, read by the launcher) ------------
# A JSON object at the root of a published model directory; it exists exactly when the
# model is complete.
MARKER_NAME = ".gpu-stack-stage.json"
MARKER_FORMAT = 1
# Top-level keys the stager writes; the launcher reads "format" and "files".
MARKER_KEYS = (
    "format",
    "tool",
    "source",
    "revision",
    "source_key",
    "file_count",
    "total_bytes",
    "files",
    "staged_at",
    "duration_seconds",
)
# Added by archive sources only (size, etag, sha256_verified, links of the archive).
MARKER_OPTIONAL_KEYS = ("archive",)
# Keys of each entry of "files"; the launcher checks "path" and "size" by stat, then
# "sha256" by reading the file (same-size damage on the volume is refused at launch).
MARKER_FILE_KEYS = ("path", "size", "sha256", "digests", "verified", "mtime_ns", "etag")

# --- gpu-stack-stage: every option also comes from STAGE_<OPTION> -------------------
STAGE_ENV_PREFIX = "STAGE_"
STAGE_SOURCE = "STAGE_SOURCE"
STAGE_DEST = "STAGE_DEST"
STAGE_JOBS = "STAGE_JOBS"
STAGE_PROGRESS_INTERVAL = "STAGE_PROGRESS_INTERVAL"
STAGE_TOKEN_FILE = "STAGE_TOKEN_FILE"
STAGE_S3_CREDENTIALS_DIR = "STAGE_S3_CREDENTIALS_DIR"
STAGE_MANIFEST = "STAGE_MANIFEST"
STAGE_VERIFY = "STAGE_VERIFY"  # "1": re-hash the published files (same-size corruption)
STAGE_LOCK_WAIT = "STAGE_LOCK_WAIT"  # seconds to wait for another stager of the same model
STAGE_UPLOAD_DIR = "STAGE_UPLOAD_DIR"  # the local source's upload dir of this run
# The model_stage source options and the environment name the stager reads each from.
STAGE_SOURCE_ENV = {
    "repo_id": "STAGE_REPO_ID",
    "revision": "STAGE_REVISION",
    "endpoint": "STAGE_ENDPOINT",
    "bucket": "STAGE_BUCKET",
    "prefix": "STAGE_PREFIX",
    "endpoint_url": "STAGE_S3_ENDPOINT_URL",
    "region": "STAGE_S3_REGION",
    "url": "STAGE_URL",
    "manifest": "STAGE_MANIFEST",
    "archive_sha256": "STAGE_ARCHIVE_SHA256",
    "strip_components": "STAGE_STRIP_COMPONENTS",
    "allow_patterns": "STAGE_ALLOW_PATTERNS",
    "ignore_patterns": "STAGE_IGNORE_PATTERNS",
}
# The sources gpu-stack-stage knows (--source / STAGE_SOURCE).
STAGE_SOURCES = ("hub", "s3", "http", "archive", "local")

# --- gpu-stack-launch ----------------------------------------------------------------
# The pod's address, which the serving pods get from the downward API.
POD_IP_ENV = "POD_IP"
# The GPUs a launcher's Ray node offers where no KubeRay command says it (KServe's pods).
LAUNCH_NUM_GPUS_ENV = "GPU_STACK_NUM_GPUS"
# Exit codes that no restart can fix: the controller stops waiting when it sees one.
LAUNCH_EXIT_USAGE = 2  # bad options or environment: nothing was started
LAUNCH_EXIT_MODEL = 3  # the model directory is not ready to serve
LAUNCH_EXIT_GPUS = 4  # the Ray cluster did not hold the planned GPUs in time
LAUNCH_EXIT_RAY = 5  # Ray could not be started or died
LAUNCH_EXIT_SIGNAL_BASE = 128  # 128 + signal number, as a shell reports it
LAUNCH_EXIT_REASONS = {
    LAUNCH_EXIT_USAGE: "bad options",
    LAUNCH_EXIT_MODEL: "model directory not ready",
    LAUNCH_EXIT_GPUS: "GPUs missing",
    LAUNCH_EXIT_RAY: "Ray failed",
}

# --- the gateway (the generated LiteLLM configuration, the image's key check) -------
# The environment variable holding the gateway's master key, and the hook of the
# runtime package that LiteLLM calls to check a request's key (``custom_auth``).
GATEWAY_MASTER_KEY_ENV = "LITELLM_MASTER_KEY"
GATEWAY_AUTH_HOOK = "gpu_stack_runtime.gateway.auth.user_api_key_auth"


def upload_dir(dest: str) -> str:
    """Where the local source's files are uploaded for the model directory ``dest``.

    The staging area lies beside the destination, in its parent directory:
    ``/models/org/llama`` uploads to ``/models/org/.gpu-stack-staging/llama.upload``.
    """
    parent, _sep, name = dest.rstrip("/").rpartition("/")
    return f"{parent}/{STAGING_AREA}/{name}{UPLOAD_SUFFIX}"
