#!/usr/bin/python
# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Write the objects the stage modules apply as a kustomize tree for Argo CD."""

from __future__ import annotations

DOCUMENTATION = r"""
module: gitops_export
short_description: Export the site's objects as a kustomize tree and an Argo CD Application
description:
  - Renders every object the stage modules apply, with their own rendering code (no second
    template set) - the GPU nodes' labels (C(nodes)), the OLM Namespace, OperatorGroup and
    Subscription of each operator and its instance from the CSV's examples (C(operators)),
    the namespace and the ReadWriteMany model volume (C(storage)), the ServiceAccount,
    RayClusters, Service, Route, NetworkPolicies and the hand-over ConfigMap (C(serving)).
  - Lays them out as a kustomize tree under O(dest) - C(base/) holds the stages given in
    O(base) rendered from those values (the collection's pinned operators), and
    C(overlays/<inventory>/) the inventory's own objects plus RFC 6902 patches where it
    changes a base object - and writes the Argo CD Application of the overlay to
    C(argocd/<inventory>.yaml).
  - Never writes a secret value - the Secrets the objects read are listed in the overlay's
    C(README.md) (O(secrets.mode=reference)) or stand as ExternalSecrets
    (O(secrets.mode=external_secret)).
  - Writes only files whose text changes (a rerun writes nothing) and removes the files it
    no longer renders under C(base/) and C(overlays/<inventory>/). Nothing else under
    O(dest) is touched. Check mode reports what would be written; C(--diff) shows it.
version_added: 0.1.0
author:
  - llmops.gpu_stack maintainers (@llmops)
requirements:
  - PyYAML
attributes:
  check_mode:
    support: full
    details: Renders and compares every file; writes and removes nothing.
  diff_mode:
    support: full
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  dest:
    description: The directory of the tree (a checkout of the Git repository Argo CD reads).
    type: path
    required: true
  inventory:
    description: The overlay's name, C(overlays/<inventory>) (one path segment).
    type: str
    required: true
  stages:
    description:
      - Stage name to the options its role passes the stage's module, for example
        C(serving) to the options of M(llmops.gpu_stack.ray_vllm_cluster) without the key.
      - Known stages are C(nodes), C(operators), C(storage), C(serving) (one model's options, or
        C(releases), a list of them), C(gateway) and C(monitoring) (their roles' values, each with
        C(serving), the serving stage's values, to find the models); an operator entry
        of C(operators.operators) is the options of M(llmops.gpu_stack.olm_operator) plus
        C(instance) (C(kind), C(namespace), C(overrides)) and C(examples), the CSV's
        C(alm-examples).
    type: dict
    required: true
  base:
    description: Stage name to the values of the shared base (usually the roles' defaults);
      only stages also in O(stages) are used.
    type: dict
    default: {}
  application:
    description: The Argo CD Application; omitted, none is written.
    type: dict
    suboptions:
      repo_url:
        description: The Git repository holding the tree.
        type: str
        required: true
      revision:
        description: The branch, tag or commit Argo CD syncs.
        type: str
        default: HEAD
      path:
        description: Where O(dest) lies inside the repository (empty - its root).
        type: str
        default: ""
      name:
        description: The Application's name (default C(gpu-stack-<inventory>)).
        type: str
      namespace:
        description: Argo CD's namespace.
        type: str
        default: openshift-gitops
      project:
        description: The Argo CD project.
        type: str
        default: default
      destination_server:
        description: The cluster's API URL (default the cluster Argo CD runs in).
        type: str
      destination_name:
        description: The cluster's name in Argo CD (instead of O(application.destination_server)).
        type: str
      destination_namespace:
        description: Namespace for objects that name none.
        type: str
        default: default
      automated:
        description: Sync automatically (with self-heal).
        type: bool
        default: false
      prune:
        description: With O(application.automated), delete what leaves the tree.
        type: bool
        default: false
  secrets:
    description: How the tree stands for the Secrets its objects read.
    type: dict
    default: {}
    suboptions:
      mode:
        description: V(reference) - none in the tree, the README lists them;
          V(external_secret) - an ExternalSecret for each.
        type: str
        choices: [reference, external_secret]
        default: reference
      store:
        description: The SecretStore or ClusterSecretStore (V(external_secret)).
        type: str
      store_kind:
        description: V(ClusterSecretStore) or V(SecretStore).
        type: str
        choices: [ClusterSecretStore, SecretStore]
        default: ClusterSecretStore
      remote_key_prefix:
        description: Prefix of the remote keys (C(<prefix>/<namespace>/<secret>)).
        type: str
        default: ""
      refresh_interval:
        description: How often the ExternalSecret refreshes.
        type: str
        default: 1h
notes:
  - The stager Job is not exported (each run has its own Job, removed when it ends). With
    V(Manual) approval, the operators' InstallPlans still need an approval (an admin, or
    M(llmops.gpu_stack.olm_operator) once).
"""

EXAMPLES = r"""
- name: Export the site of inventories/site-a
  llmops.gpu_stack.gitops_export:
    dest: gpu-site  # a checkout of the Git repository
    inventory: site-a
    stages:
      storage:
        namespace: llm
        pvc: {name: models, storage_class: nfs-csi, size: 10Gi}
    application:
      repo_url: https://git.example.com/platform/gpu-site.git
"""

RETURN = r"""
written:
  description: Files written (or, in check mode, that would be), relative to O(dest).
  returned: always
  type: list
  elements: str
removed:
  description: Files removed (no longer rendered).
  returned: always
  type: list
  elements: str
files:
  description: Every file of the export.
  returned: always
  type: list
  elements: str
overlay:
  description: The overlay's path, relative to O(dest).
  returned: always
  type: str
application:
  description: The Application's file, relative to O(dest) (null without O(application)).
  returned: always
  type: str
secrets:
  description: The Secrets (namespace/name) the site provides; never their values.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import GpuStackError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gitops import export
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gitops.tree import HAS_YAML


def _argument_spec() -> dict:
    application = {
        "repo_url": {"type": "str", "required": True},
        "revision": {"type": "str", "default": "HEAD"},
        "path": {"type": "str", "default": ""},
        "name": {"type": "str"},
        "namespace": {"type": "str", "default": "openshift-gitops"},
        "project": {"type": "str", "default": "default"},
        "destination_server": {"type": "str"},
        "destination_name": {"type": "str"},
        "destination_namespace": {"type": "str", "default": "default"},
        "automated": {"type": "bool", "default": False},
        "prune": {"type": "bool", "default": False},
    }
    secrets = {
        "mode": {"type": "str", "choices": ["reference", "external_secret"],
                 "default": "reference"},
        "store": {"type": "str"},
        "store_kind": {"type": "str", "choices": ["ClusterSecretStore", "SecretStore"],
                       "default": "ClusterSecretStore"},
        "remote_key_prefix": {"type": "str", "default": "", "no_log": False},
        "refresh_interval": {"type": "str", "default": "1h"},
    }
    return {
        "dest": {"type": "path", "required": True},
        "inventory": {"type": "str", "required": True},
        "stages": {"type": "dict", "required": True},
        "base": {"type": "dict", "default": {}},
        "application": {"type": "dict", "options": application,
                        "mutually_exclusive": [("destination_server", "destination_name")]},
        "secrets": {"type": "dict", "default": {}, "options": secrets, "no_log": False},
    }


def main():
    module = AnsibleModule(argument_spec=_argument_spec(), supports_check_mode=True)
    if not HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"))
    p = module.params
    request = export.Request(dest=p["dest"], inventory=p["inventory"], stages=p["stages"],
                             base=p["base"], application=p["application"],
                             secrets=p["secrets"] or {}, check_mode=module.check_mode)
    try:
        result = export.run(request)
    except GpuStackError as exc:
        module.fail_json(**exc.fail_kwargs())
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
