"""Where the lab keeps its state and how it is shaped (environment overrides included).

- ``GPU_LAB_HOME``: the lab's state directory (default ``.lab/`` in the repository).
- ``GPU_LAB_CRDS``: the upstream CRDs (default ``../shared/crds`` beside the repository).
- ``GPU_LAB_OCP_VERSION``: the OpenShift version the cluster reports (default below).
- ``GPU_LAB_WORKERS``: number of worker nodes ``ocp-worker-0..N-1`` (default 8).
- ``GPU_LAB_CACHE``: where parsed CRDs are cached (default ``$GPU_LAB_HOME/k8s/crd-cache``).
- ``GPU_LAB_TIME_SCALE``: factor on simulated delays (probes, pulls, installs); 1.0 is
  real seconds, tests use less.
- ``GPU_LAB_ROUTER_PORT``: the router's HTTPS port (default: a free one, then kept).
- ``GPU_LAB_PROBE_TICK``: the shortest period (s) real probes' thresholds count
  (default 1.0; controllers/probes.py): raise it to give slow real processes the
  startup windows of a real cluster.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OCP_VERSION = "4.19.10"  # listed for Open Data Hub 3.0 (gpu_operators_serving_platform_ocp)
# OpenShift minor -> Kubernetes version it ships.
_KUBE_FOR_OCP = {14: "1.27.16", 15: "1.28.15", 16: "1.29.14", 17: "1.30.13", 18: "1.31.8",
                 19: "1.32.5", 20: "1.33.3"}


_ENV = {"ocp_version": "GPU_LAB_OCP_VERSION", "workers": "GPU_LAB_WORKERS",
        "time_scale": "GPU_LAB_TIME_SCALE", "router_port": "GPU_LAB_ROUTER_PORT",
        "probe_tick": "GPU_LAB_PROBE_TICK"}


def default_home() -> Path:
    return Path(os.environ.get("GPU_LAB_HOME") or REPO_ROOT / ".lab")


def default_crds() -> Path:
    return Path(os.environ.get("GPU_LAB_CRDS") or REPO_ROOT.parent / "shared" / "crds")


def kube_version_for(ocp_version: str) -> str:
    try:
        minor = int(ocp_version.split(".")[1])
    except (IndexError, ValueError) as exc:
        raise ValueError(f"not an OpenShift version: {ocp_version!r}") from exc
    return "v" + _KUBE_FOR_OCP.get(minor, _KUBE_FOR_OCP[max(_KUBE_FOR_OCP)])


@dataclass
class LabSettings:
    home: Path = field(default_factory=default_home)
    crds: Path = field(default_factory=default_crds)
    ocp_version: str = field(
        default_factory=lambda: os.environ.get("GPU_LAB_OCP_VERSION", DEFAULT_OCP_VERSION))
    workers: int = field(default_factory=lambda: int(os.environ.get("GPU_LAB_WORKERS", "8")))
    control_planes: int = 3
    time_scale: float = field(
        default_factory=lambda: float(os.environ.get("GPU_LAB_TIME_SCALE", "1.0")))
    probe_tick: float = field(
        default_factory=lambda: float(os.environ.get("GPU_LAB_PROBE_TICK", "1.0")))
    port: int = 0
    router_port: int = field(
        default_factory=lambda: int(os.environ.get("GPU_LAB_ROUTER_PORT", "0")))
    cache_dir: Path | None = field(
        default_factory=lambda: Path(os.environ["GPU_LAB_CACHE"])
        if os.environ.get("GPU_LAB_CACHE") else None)
    cluster_name: str = "ocp"
    base_domain: str = "gpu-lab.local"

    @property
    def kube_version(self) -> str:
        return kube_version_for(self.ocp_version)

    @property
    def kube_minor(self) -> int:
        return int(self.kube_version.split(".")[1])

    @property
    def apps_domain(self) -> str:
        return f"apps.{self.cluster_name}.{self.base_domain}"

    @property
    def k8s_dir(self) -> Path:
        return self.home / "k8s"

    @property
    def crd_cache(self) -> Path:
        """Parsed upstream CRDs (shareable between labs: keyed by file size and mtime)."""
        return self.cache_dir or self.k8s_dir / "crd-cache"

    @property
    def router_file(self) -> Path:
        """``{"url", "ca", "appsDomain"}`` of the running router (router.py)."""
        return self.home / "router.json"

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    @property
    def vsphere_file(self) -> Path:
        return self.home / "vsphere.json"

    def save(self) -> None:
        """Remember the shape (and port) so ``gpu-lab up`` after ``down`` is the same lab."""
        self.k8s_dir.mkdir(parents=True, exist_ok=True)
        data = {k: v for k, v in asdict(self).items()
                if k not in ("home", "crds", "cache_dir")}
        (self.k8s_dir / "settings.json").write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, home: Path | None = None, **overrides: Any) -> LabSettings:
        overrides = {k: v for k, v in overrides.items() if v is not None}
        settings = cls(home=home) if home else cls()
        saved = settings.k8s_dir / "settings.json"
        if saved.exists():
            for key, value in json.loads(saved.read_text()).items():
                env_set = bool(os.environ.get(_ENV.get(key, "")))
                if hasattr(settings, key) and key not in overrides and not env_set:
                    setattr(settings, key, value)
        for key, value in overrides.items():
            if value is not None:
                setattr(settings, key, value)
        kube_version_for(settings.ocp_version)
        return settings
