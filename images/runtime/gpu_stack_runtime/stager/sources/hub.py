"""Hugging Face Hub: list through huggingface_hub's API, download with our own ranged GETs.

The listing (`repo_info(files_metadata=True)`, i.e. GET /api/{models|datasets}/<repo>/
revision/<rev>?blobs=true) resolves the revision to a commit sha and gives every file's
size and digest: sha256 for LFS files, the git blob sha1 otherwise. Downloads go to
`<endpoint>/<repo>/resolve/<commit>/<file>` (hf_hub_url) through our resumable transfer:
huggingface_hub 1.x/2.x has no hf_transfer any more, Xet downloads can hang, and its
partial downloads do not resume on NFS.
"""

from __future__ import annotations

from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import filter_repo_objects

from gpu_stack_runtime.stager.errors import (
    CredentialsError,
    SourceNotFoundError,
    StageError,
    TransientError,
)
from gpu_stack_runtime.stager.model import Listing, RemoteFile
from gpu_stack_runtime.stager.retry import retry_call
from gpu_stack_runtime.stager.sources._http import HttpClient, redact_url
from gpu_stack_runtime.stager.sources.base import Source


def _network_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's transport failures (huggingface_hub 2.x: httpx2, 1.x: httpx)."""
    found: list[type[BaseException]] = []
    try:
        import httpx2
    except ImportError:
        pass
    else:
        found.append(httpx2.TransportError)
    try:
        import httpx
    except ImportError:
        pass
    else:
        found.append(httpx.TransportError)
    return tuple(found)


# Failures to reach the Hub, worth retrying; classified by type, never by module name.
NETWORK_ERRORS = _network_errors()


class HubSource(Source):
    kind = "hub"

    def __init__(self, repo_id: str, *, revision: str, repo_type: str = "model",
                 allow_patterns=None, ignore_patterns=None, endpoint: str | None = None,
                 token: str | None = None, client: HttpClient, retries: int = 8,
                 timeout: float = 60.0):
        self._repo_id = repo_id
        self._revision = revision
        self._repo_type = repo_type
        self._allow = list(allow_patterns or []) or None
        self._ignore = list(ignore_patterns or []) or None
        self._endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self._has_token = bool(token)
        # token=False: never fall back to a token stored on the machine.
        self._api = HfApi(endpoint=self._endpoint, token=token or False,
                          library_name="gpu-stack-stage")
        self._client = client
        self._retries = retries
        self._timeout = timeout

    def describe(self) -> dict:
        return {"type": self.kind, "repo_id": self._repo_id, "repo_type": self._repo_type,
                "revision": self._revision, "endpoint": redact_url(self._endpoint),
                "allow_patterns": self._allow, "ignore_patterns": self._ignore}

    def list(self) -> Listing:
        info = retry_call(self._repo_info, retries=self._retries,
                          what=f"list {self._repo_id}@{self._revision}")
        siblings = list(filter_repo_objects(info.siblings or [], allow_patterns=self._allow,
                                            ignore_patterns=self._ignore,
                                            key=lambda s: s.rfilename))
        if not siblings:
            raise SourceNotFoundError(f"{self._repo_id}@{self._revision}: no file matches the "
                                      f"allow/ignore patterns")
        files = []
        for s in siblings:
            if s.size is None:
                raise StageError(f"{s.rfilename}: the hub returned no size for this file")
            if s.lfs is not None:
                digests = {"sha256": s.lfs.sha256}
            elif s.blob_id:
                digests = {"git-sha1": s.blob_id}
            else:
                digests = {}
            url = hf_hub_url(self._repo_id, s.rfilename, repo_type=self._repo_type,
                             revision=info.sha, endpoint=self._endpoint)
            files.append(RemoteFile(s.rfilename, s.size, digests, None, url))
        return Listing(files, info.sha)

    def _repo_info(self):
        what = f"{self._repo_type} {self._repo_id}"
        try:
            return self._api.repo_info(self._repo_id, repo_type=self._repo_type,
                                       revision=self._revision, files_metadata=True,
                                       timeout=self._timeout)
        except RevisionNotFoundError as exc:
            raise SourceNotFoundError(f"{what}: revision {self._revision!r} not found") from exc
        except GatedRepoError as exc:
            raise CredentialsError(f"{what} is gated: the token has no access to it") from exc
        except RepositoryNotFoundError as exc:
            status = getattr(exc.response, "status_code", None)
            if status == 401 and not self._has_token:
                # The Hub answers 401 for private and missing repos alike.
                raise CredentialsError(f"{what}: not found or private, and no token was given "
                                       "(--token-file or HF_TOKEN)") from exc
            raise SourceNotFoundError(f"{what} not found (or the token has no access)") from exc
        except HfHubHTTPError as exc:
            status = getattr(exc.response, "status_code", None)
            if status in (401, 403):
                raise CredentialsError(f"{what}: access refused (HTTP {status})") from exc
            if status is not None and (status >= 500 or status == 429):
                raise TransientError(f"{what}: HTTP {status}") from exc
            raise SourceNotFoundError(f"{what}: HTTP {status}") from exc
        except NETWORK_ERRORS as exc:
            raise TransientError(f"{what}: {exc.__class__.__name__}") from exc

    def open(self, rf: RemoteFile, offset: int, etag: str | None = None):
        # The commit pins the content; the final digest check catches anything else.
        return self._client.open_range(rf.ref, offset, size=rf.size, etag=None)

    def close(self) -> None:
        self._client.close()
