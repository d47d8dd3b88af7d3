"""Fixtures of the AWX tests: the controller configuration rendered by Ansible."""

from __future__ import annotations

import pytest
import yaml

from .controller import REPO, render


@pytest.fixture(scope="session")
def configuration() -> dict:
    return render()


@pytest.fixture(scope="session")
def role_options() -> dict:
    """Every role's options (meta/argument_specs.yml, entry point main), by name."""
    options = {}
    for spec in sorted(REPO.glob("roles/*/meta/argument_specs.yml")):
        options.update(yaml.safe_load(spec.read_text())["argument_specs"]["main"]["options"])
    return options
