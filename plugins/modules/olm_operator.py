#!/usr/bin/python
# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Install an operator through OLM, approving only the pinned CSV."""

from __future__ import annotations

DOCUMENTATION = r"""
module: olm_operator
short_description: Install an operator through OLM with a pinned, approved CSV
description:
  - Reads the package's PackageManifest first and refuses, before any write, an unknown
    package, a package from another catalog, a channel the package does not have and a
    pinned O(starting_csv) that is not in the channel. Without O(channel), the package's
    default channel is used.
  - Creates the namespace, an OperatorGroup (own, single or all namespaces; an existing
    compatible one is reused, an incompatible one is a conflict) and the Subscription,
    all with server-side apply (field manager C(llmops.gpu_stack), strict validation).
  - With V(Manual) approval it approves only the InstallPlan of the target CSV - the
    pinned one on a fresh install, the installed one afterwards - never a newer one,
    unless O(upgrade=true) asks for the channel head. A plan that holds other CSVs
    besides the target (another version, a dependency) is never approved; the task
    fails naming them, and a person reviews and approves that plan.
  - Waits for the CSV to reach C(Succeeded) and its CRDs to be C(Established) (custom
    resources applied earlier fail), and returns the CSV name, version and the parsed
    C(alm-examples). A CSV in phase C(Failed) fails the task with its reason.
version_added: 0.1.0
author:
  - llmops.gpu_stack maintainers (@llmops)
requirements:
  - kubernetes >= 37.0.2
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kubernetes.core.k8s_auth_options
options:
  package:
    description: The OLM package name, for example V(gpu-operator-certified).
    type: str
    required: true
  namespace:
    description: Namespace of the Subscription (created if missing).
    type: str
    required: true
  catalog:
    description: The CatalogSource the package comes from, for example V(certified-operators).
    type: str
    required: true
  catalog_namespace:
    description: Namespace of the CatalogSource.
    type: str
    default: openshift-marketplace
  channel:
    description: Subscription channel; the package's default channel when omitted.
    type: str
  starting_csv:
    description: The CSV to install (pin). Without it the channel head is installed.
    type: str
  approval:
    description: InstallPlan approval. V(Manual) with a pinned CSV is the recommended setting.
    type: str
    choices: [Manual, Automatic]
    default: Manual
  install_mode:
    description: What the OperatorGroup targets.
    type: str
    choices: [OwnNamespace, SingleNamespace, AllNamespaces]
    default: OwnNamespace
  target_namespace:
    description: The namespace watched with O(install_mode=SingleNamespace).
    type: str
  upgrade:
    description: Approve the channel head InstallPlan when newer than the installed CSV.
    type: bool
    default: false
  wait_timeout:
    description: Seconds to wait for the CSV and its CRDs.
    type: int
    default: 900
attributes:
  check_mode:
    support: full
    details: Writes are sent as server-side dry runs; returns the CSV that would be installed.
  diff_mode:
    support: full
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: NVIDIA GPU Operator, pinned, Manual approval
  llmops.gpu_stack.olm_operator:
    package: gpu-operator-certified
    namespace: nvidia-gpu-operator
    catalog: certified-operators
    channel: v25.3
    starting_csv: gpu-operator-certified.v25.3.0
  register: gpu_operator

- name: Build a ClusterPolicy from the CSV's example
  ansible.builtin.debug:
    var: gpu_operator.alm_examples | selectattr('kind', 'equalto', 'ClusterPolicy') | first
"""

RETURN = r"""
csv:
  description: The CSV installed (or, in check mode, that would be installed).
  returned: always
  type: str
  sample: gpu-operator-certified.v25.3.0
version:
  description: Its version.
  returned: always
  type: str
channel:
  description: The channel subscribed to.
  returned: always
  type: str
alm_examples:
  description: The CSV's C(alm-examples), parsed (empty in check mode).
  returned: always
  type: list
  elements: dict
crds:
  description: The CSV's CRDs, all Established.
  returned: success
  type: list
  elements: str
approved_install_plans:
  description: InstallPlans this run approved.
  returned: success
  type: list
  elements: str
unapproved_install_plans:
  description: Pending InstallPlans left alone because they install another CSV.
  returned: success
  type: list
  elements: str
changed_objects:
  description: Objects created or changed (Kind/name).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import GpuStackError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import olm_runner
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import (
    HAS_K8S,
    K8S_IMPORT_ERROR,
    K8sClient,
    k8s_argument_spec,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.olm import OperatorSpec

_SPEC_KEYS = ("package", "namespace", "catalog", "catalog_namespace", "channel", "starting_csv",
              "approval", "install_mode", "target_namespace", "upgrade")


def _argument_spec() -> dict:
    spec = k8s_argument_spec()
    spec.update(
        package={"type": "str", "required": True},
        namespace={"type": "str", "required": True},
        catalog={"type": "str", "required": True},
        catalog_namespace={"type": "str", "default": "openshift-marketplace"},
        channel={"type": "str"},
        starting_csv={"type": "str"},
        approval={"type": "str", "choices": ["Manual", "Automatic"], "default": "Manual"},
        install_mode={"type": "str", "default": "OwnNamespace",
                      "choices": ["OwnNamespace", "SingleNamespace", "AllNamespaces"]},
        target_namespace={"type": "str"},
        upgrade={"type": "bool", "default": False},
        wait_timeout={"type": "int", "default": 900},
    )
    return spec


def _request(module) -> olm_runner.Request:
    p = module.params
    return olm_runner.Request(operator=OperatorSpec(**{k: p[k] for k in _SPEC_KEYS}),
                              wait_timeout=p["wait_timeout"], check_mode=module.check_mode,
                              progress=lambda status, elapsed: module.log(
                                  f"+{elapsed:.0f}s {status.progress}"))


def main():
    module = AnsibleModule(argument_spec=_argument_spec(), supports_check_mode=True,
                           required_if=[("install_mode", "SingleNamespace",
                                         ("target_namespace",))])
    if not HAS_K8S:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=K8S_IMPORT_ERROR)
    try:
        result = olm_runner.run(K8sClient.from_params(module.params), _request(module))
    except GpuStackError as exc:
        module.fail_json(**exc.fail_kwargs())
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
