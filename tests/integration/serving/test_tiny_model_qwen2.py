"""The lab's second tiny model (``--family qwen2``): a different architecture that
transformers loads strictly (every tensor used, none missing) and that generates, and
whose config the collection's planner reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from serving_procs import base_env, run_python

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny-qwen"
    result = subprocess.run([sys.executable, "-m", "gpu_lab.tiny_model", str(out), "--family",
                             "qwen2"], env=base_env(), capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_transformers_loads_the_qwen2_model_strictly_and_it_generates(qwen_dir):
    found = run_python(f"""
        import json, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model, info = AutoModelForCausalLM.from_pretrained({str(qwen_dir)!r},
                                                           output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained({str(qwen_dir)!r})
        ids = tokenizer("hello world", return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        print(json.dumps({{"class": type(model).__name__,
                           "missing": sorted(info["missing_keys"]),
                           "unexpected": sorted(info["unexpected_keys"]),
                           "tied": model.lm_head.weight.data_ptr()
                                   == model.model.embed_tokens.weight.data_ptr(),
                           "new_tokens": out.shape[1] - ids.shape[1]}}))
    """)
    assert found == {"class": "Qwen2ForCausalLM", "missing": [], "unexpected": [],
                     "tied": True, "new_tokens": 4}


def test_the_planner_reads_its_config(qwen_dir):
    from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import (
        build_plan,
    )

    plan = build_plan({"config_path": str(qwen_dir), "dtype": "float16"},
                      {"nodes": 1, "gpus_per_node": 2, "gpu_memory_gib": 80})
    model = plan["model"]
    assert (model["num_kv_heads"], model["head_dim"], model["num_layers"]) == (2, 32, 2)
    config = json.loads((qwen_dir / "config.json").read_text())
    assert model["vocab_size"] == config["vocab_size"]
    assert plan["tensor_parallel_size"] == 1 and plan["replicas"] == 2
