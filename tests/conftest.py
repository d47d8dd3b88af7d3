"""Shared pytest setup: fixture modules of the lab are plugins."""

pytest_plugins = ["gpu_lab.fixtures.k8s"]
