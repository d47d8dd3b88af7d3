"""The roles take what the controller's credentials inject.

- Each custom credential type injects into names the collection reads: extra vars that
  are role options, environment variables that the example inventory or a role option
  reads.
- The ESXi role takes vCenter from VMWARE_* (what the built-in VMware vCenter credential
  sets) when esxi_gpu_passthrough_vcenter leaves it out, and stops before calling
  vCenter, naming what is missing, when neither gives it. Its modules are seen reaching
  the host, port and user the environment gives: a listener here records the connection.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from .controller import MAIN_TOOLCHAIN_ONLY, REPO, tasks_of

BIN = Path(sys.executable).parent


@MAIN_TOOLCHAIN_ONLY
def test_custom_credential_types_inject_what_the_collection_reads(configuration,
                                                                  role_options):
    inventory = "\n".join(p.read_text() for p in
                          sorted((REPO / "inventories/example").rglob("*.yml")))
    env_readers = {"HF_TOKEN": "lookup('ansible.builtin.env', 'HF_TOKEN')" in inventory,
                   # model_storage_credentials takes the S3 keys by these very names
                   **{key: key in role_options["model_storage_credentials"]["options"]
                      for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}}
    types = tasks_of(configuration, "awx.awx.credential_type")
    assert {t["name"] for t in types} == {"Hugging Face token", "S3 keys", "LLM API key"}
    for kind in types:
        injectors = kind["injectors"]
        fields = {f["id"] for f in kind["inputs"]["fields"]}
        for target in injectors:
            for name, template in injectors[target].items():
                assert template.strip("{} ") in fields, (kind["name"], name, template)
                if target == "extra_vars":
                    assert name in role_options, (kind["name"], name)
                else:
                    assert env_readers.get(name), (kind["name"], name)


def _play(tmp_path: Path, env: dict, vcenter: dict) -> subprocess.CompletedProcess:
    inventory = {"all": {"children": {"esxi_hosts": {"hosts": {
        "esxi-0": {"esxi_worker_vm": "worker-0"}}}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "tasks": [{"ansible.builtin.include_role": {
            "name": "llmops.gpu_stack.esxi_gpu_passthrough", "tasks_from": "main.yml"},
            "vars": {"esxi_gpu_passthrough_vcenter": vcenter,
                     "esxi_gpu_passthrough_drain": False}}]}]))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VMWARE_", "ANSIBLE_"))}
    clean.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                 ANSIBLE_HOME=str(tmp_path / "home"), **env)
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
                           str(tmp_path / "play.yml")], cwd=REPO, env=clean,
                          capture_output=True, text=True, timeout=300, check=False)


def test_esxi_role_without_vcenter_stops_first_and_names_what_is_missing(tmp_path):
    done = _play(tmp_path, {"VMWARE_USER": "svc"}, {})
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "vCenter connection incomplete, missing hostname, password" in out, out[-3000:]
    assert "Read GPUs of the mapped hosts" not in out  # nothing reached for vCenter


@pytest.fixture
def listener():
    """A TCP port that records the first connection made to it, then closes it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    seen = []

    def _accept():
        try:
            conn, _addr = server.accept()
            seen.append(conn.recv(4096))
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=_accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    server.close()
    thread.join(timeout=5)


def test_esxi_role_takes_vcenter_from_the_environment(tmp_path, listener):
    port, seen = listener
    env = {"VMWARE_HOST": "127.0.0.1", "VMWARE_PORT": str(port), "VMWARE_USER": "svc-env",
           "VMWARE_PASSWORD": "from-the-credential", "VMWARE_VALIDATE_CERTS": "false"}
    done = _play(tmp_path, env, {})  # the role gets no vCenter option at all
    out = done.stdout + done.stderr
    # the module connected to what the environment names (the listener saw it) and its
    # error names the user it came as; the password never shows
    assert seen and seen[0], out[-3000:]
    assert f"127.0.0.1:{port} as svc-env" in out, out[-3000:]
    assert "from-the-credential" not in out
