# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Connection options of every vSphere module (module_utils/vsphere/connection.py)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  hostname:
    description:
      - vCenter host name or IP address.
      - Falls back to E(VMWARE_HOST).
    type: str
  port:
    description:
      - vCenter HTTPS port. Falls back to E(VMWARE_PORT).
    type: int
    default: 443
  username:
    description:
      - vCenter user. Falls back to E(VMWARE_USER).
    type: str
    aliases: [user]
  password:
    description:
      - vCenter password. Falls back to E(VMWARE_PASSWORD). Never logged.
    type: str
    aliases: [pass, pwd]
  validate_certs:
    description:
      - Verify the vCenter TLS certificate. Keep this on; give O(ca_path) for a private CA.
      - Falls back to E(VMWARE_VALIDATE_CERTS).
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA(s) that signed the vCenter certificate, used instead of the
        system trust store. Falls back to E(VMWARE_CA_PATH).
    type: path
  request_timeout:
    description:
      - Seconds to wait for one vCenter API call.
    type: int
    default: 60
requirements:
  - pyvmomi >= 9.1.1.0
"""
