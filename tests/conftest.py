"""Shared pytest setup: the lab's fixture modules are plugins."""

pytest_plugins = ["gpu_lab.fixtures.vsphere", "gpu_lab.fixtures.k8s"]
