#!/usr/bin/python
# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Stage model weights onto a ReadWriteMany volume with the in-cluster stager Job."""

from __future__ import annotations

DOCUMENTATION = r"""
module: model_stage
short_description: Stage model weights onto a ReadWriteMany volume
description:
  - Creates or adopts the model PVC and refuses, before any write, a PVC or StorageClass
    that is not ReadWriteMany (every Ray pod mounts the volume). With O(pvc.nfs) it
    creates a static NFS PersistentVolume as in the seed. The bound volume's reclaim
    policy is set to O(pvc.reclaim_policy) (V(Retain) by default).
  - Runs the runtime image's C(gpu-stack-stage) as a Job (restricted-v2 friendly
    security context) for a Hugging Face Hub, S3, HTTP(S) or archive source, or for files
    the controller uploaded (C(source.type=local), see the C(model_storage) role, which
    uploads with kubernetes.core.k8s_cp). The stager resumes partial files, verifies
    digests, publishes atomically and writes a completion marker; a rerun whose marker
    matches does nothing.
  - Waits for the Job with progress and returns the stager's result with the marker.
  - Credentials become a Secret mounted as files (C(token), C(AWS_ACCESS_KEY_ID),
    C(AWS_SECRET_ACCESS_KEY)); they never reach arguments or logs. A source URL that
    carries a query string or user info (a presigned URL) goes into the same Secret and
    reaches the stager through C(secretKeyRef), and is masked in the module's output.
    The Secret is removed when the Job ends, whatever its outcome.
  - Each run has its own Job; a concurrent run of the same model waits for the stager's
    lock on the volume instead of replacing the other's transfer, and the PVC's record of
    staged models is updated with a resourceVersion precondition (retried on conflict).
  - With O(state=volume) only the volume is ensured and the module reports whether the
    source is already staged there (used before an upload).
version_added: 0.1.0
author:
  - llmops.gpu_stack maintainers (@llmops)
requirements:
  - kubernetes >= 37.0.2
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kubernetes.core.k8s_auth_options
options:
  namespace:
    description: Namespace of the PVC and the Job (created if missing).
    type: str
    required: true
  pvc:
    description: The model volume.
    type: dict
    required: true
    suboptions:
      name:
        description: PVC name.
        type: str
        required: true
      storage_class:
        description: StorageClass of a new PVC (the cluster default when omitted).
        type: str
      size:
        description: Requested size of a new PVC.
        type: str
        default: 100Gi
      reclaim_policy:
        description: Reclaim policy of the bound PersistentVolume.
        type: str
        choices: [Retain, Delete]
        default: Retain
      nfs:
        description: C(server) and C(path) of an NFS export for a static PV.
        type: dict
  model_dir:
    description: Directory of the model on the volume (relative), for example V(llama-3-8b).
    type: str
    required: true
  source:
    description:
      - Where the weights come from. C(type) is one of V(hub), V(s3), V(http), V(archive),
        V(local). C(hub) needs C(repo_id) (C(revision), C(endpoint), C(allow_patterns),
        C(ignore_patterns) optional); C(s3) needs C(bucket) (C(prefix), C(endpoint_url),
        C(region)); C(http) needs C(url) and C(manifest); C(archive) needs C(url)
        (C(archive_sha256), C(strip_components)); C(local) needs C(local_path), a directory
        on the controller.
    type: dict
    required: true
  credentials:
    description:
      - Secret values for the source, C(token), or C(AWS_ACCESS_KEY_ID) and
        C(AWS_SECRET_ACCESS_KEY). Never logged.
    type: dict
  image:
    description: The runtime image holding C(gpu-stack-stage).
    type: str
    default: registry.example.com/llmops/gpu-stack-runtime:0.1.0
  verify:
    description:
      - How a rerun decides that the staged files are intact. V(stat) compares each file's
        size and modification time with the completion marker (reads no data).
        V(digests) has the stager re-hash every published file against the marker's
        sha256, so same-size corruption is found and the damaged files are fetched again
        (for C(source.type=local) the files must be uploaded again, so O(state=volume)
        then reports C(transfer_expected)). It reads every byte, so use it after a suspected
        fault or on a schedule, not on every run.
    type: str
    choices: [stat, digests]
    default: stat
  upload_id:
    description:
      - For C(source.type=local), a name of this run's own upload directory under the
        model's upload area (1 to 32 lowercase letters, digits or C(-)), so concurrent runs
        of one model never upload into each other's files. Give the same value to the
        O(state=volume) call (which returns C(upload_dir)) and to the O(state=staged) call;
        the stager removes the directory after a successful run.
    type: str
  state:
    description: V(staged) runs the stager; V(volume) only ensures the volume and reports.
    type: str
    choices: [staged, volume]
    default: staged
  parallel:
    description: Parallel transfers of the stager.
    type: int
    default: 4
  timeout:
    description: Seconds to wait for the volume and for the Job.
    type: int
    default: 3600
attributes:
  check_mode:
    support: full
    details:
      - Writes are server-side dry runs; no Job runs. C(transfer_expected) says whether a
        transfer would happen, from what the volume records as staged.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Llama 3 8B from the Hub onto an NFS-backed volume
  llmops.gpu_stack.model_stage:
    namespace: llm
    pvc: {name: models, storage_class: nfs-csi, size: 200Gi}
    model_dir: llama-3-8b
    source:
      type: hub
      repo_id: meta-llama/Meta-Llama-3-8B-Instruct
      revision: 5f0b02c75b57c5855da9ae460ce51323ea669d8a
      allow_patterns: ["*.json", "*.safetensors", "tokenizer*"]
    credentials:
      token: "{{ vault_hf_token }}"
  register: staged
"""

RETURN = r"""
transfer_expected:
  description: Whether staging moves data (in check mode, the prediction).
  returned: always
  type: bool
result:
  description: The stager's result (C(changed), C(dest), C(reason), C(transfer_bytes), C(marker)).
  returned: when O(state=staged) and not in check mode
  type: dict
pvc:
  description: The PVC name, its volume and the reclaim policy.
  returned: always
  type: dict
upload_dir:
  description: Where a local source's files must be uploaded (in the PVC's mount at /models).
  returned: when C(source.type=local)
  type: str
msg:
  description: One line saying what this run did to the model (or would do, in check mode).
  returned: always
  type: str
  sample: "staged model on PVC models: 3 files, 1024 bytes, 1024 bytes fetched (was: not staged)"
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import GpuStackError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import staging, staging_runner
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import (
    HAS_K8S,
    K8S_IMPORT_ERROR,
    K8sClient,
    k8s_argument_spec,
)


def _request(module) -> staging_runner.Request:
    p = module.params
    return staging_runner.Request(
        namespace=p["namespace"], pvc=p["pvc"], model_dir=p["model_dir"], source=p["source"],
        credentials=p["credentials"] or {}, image=p["image"], state=p["state"],
        verify=p["verify"], upload_id=p["upload_id"],
        parallel=p["parallel"], timeout=p["timeout"], check_mode=module.check_mode,
        progress=lambda status, elapsed: module.log(f"+{elapsed:.0f}s {status.progress}"))


def _argument_spec() -> dict:
    spec = k8s_argument_spec()
    spec.update(
        namespace={"type": "str", "required": True},
        pvc={"type": "dict", "required": True, "options": {
            "name": {"type": "str", "required": True},
            "storage_class": {"type": "str"},
            "size": {"type": "str", "default": "100Gi"},
            "reclaim_policy": {"type": "str", "choices": ["Retain", "Delete"],
                               "default": "Retain"},
            "nfs": {"type": "dict"}}},
        model_dir={"type": "str", "required": True},
        source={"type": "dict", "required": True},
        credentials={"type": "dict", "no_log": True},
        image={"type": "str", "default": "registry.example.com/llmops/gpu-stack-runtime:0.1.0"},
        state={"type": "str", "choices": ["staged", "volume"], "default": "staged"},
        verify={"type": "str", "choices": ["stat", "digests"], "default": "stat"},
        upload_id={"type": "str"},
        parallel={"type": "int", "default": 4},
        timeout={"type": "int", "default": 3600},
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=_argument_spec(), supports_check_mode=True)
    if not HAS_K8S:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=K8S_IMPORT_ERROR)
    # a presigned URL is a secret: masked wherever it would appear in the output
    module.no_log_values.update(staging.secret_urls(module.params["source"] or {}).values())
    try:
        result = staging_runner.run(K8sClient.from_params(module.params), _request(module))
    except GpuStackError as exc:
        module.fail_json(**exc.fail_kwargs())
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
