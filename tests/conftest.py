"""Shared pytest plugins: the lab's fixtures."""

pytest_plugins = ["gpu_lab.fixtures.vsphere"]
