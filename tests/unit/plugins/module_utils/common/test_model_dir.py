"""common/model_dir.check_model_dir: the one check of a directory on the model volume."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.model_dir import (
    check_model_dir,
)


@pytest.mark.parametrize("value", ["tiny-llama", "org/Llama-3.1-8B_Instruct", "a/b/c", "v1.0"])
def test_plain_relative_paths_pass_unchanged(value):
    assert check_model_dir(value) == value


@pytest.mark.parametrize(("value", "message"), [
    ("tiny llama", r"may only hold letters, digits.*' '"),
    ("tiny ../../other", r"found ' '"),
    ("../other", r"'\.\.' segment"),
    ("org/../../etc", r"'\.\.' segment"),
    ("org/./m", r"'\.' .*segment"),
    ("/models/tiny", "no leading /"),
    ("org//m", "empty"),
    ("org/m/", "empty"),
    ("m;rm -rf x", "found ' ', ';'"),
    ("$(id)", r"'\$', '\(', '\)'"),
    ("m\nx", r"'\\n'"),
    ("modèle", "'è'"),
    ("org/.gpu-stack-staging", "reserved name"),
    ("", "empty or not a string"),
    (None, "empty or not a string"),
    ("a" * 256, "longer than 255"),
])
def test_unsafe_values_are_refused_naming_the_option(value, message):
    with pytest.raises(InvalidInputError, match=message) as err:
        check_model_dir(value, option="ray_vllm_model_dir")
    assert err.value.msg.startswith("ray_vllm_model_dir must be a relative path on the model")
    assert err.value.details == {"option": "ray_vllm_model_dir"}
