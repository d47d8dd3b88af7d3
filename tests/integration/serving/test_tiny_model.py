"""The lab's tiny model: the right architecture, loadable, deterministic, idempotent."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from serving_procs import base_env, run_python

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _generate(out, *extra):
    return subprocess.run([sys.executable, "-m", "gpu_lab.tiny_model", str(out), *extra],
                          env=base_env(), capture_output=True, text=True, timeout=300,
                          check=False)


def _snapshot(directory):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


def test_architecture_and_files(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"],
            config["num_attention_heads"], config["num_key_value_heads"],
            config["head_dim"]) == (128, 256, 2, 4, 4, 32)
    found = run_python(f"""
        import json
        from safetensors import safe_open
        with safe_open({str(tiny_model_dir / "model.safetensors")!r}, "pt") as weights:
            names = list(weights.keys())
            dtypes = sorted({{str(weights.get_tensor(k).dtype) for k in names}})
            vocab = weights.get_tensor("model.embed_tokens.weight").shape[0]
        print(json.dumps({{"dtypes": dtypes, "vocab": vocab}}))
    """)
    assert found == {"dtypes": ["torch.bfloat16"], "vocab": config["vocab_size"]}
    assert (tiny_model_dir / "chat_template.jinja").is_file()


def test_transformers_loads_it_strictly_and_it_generates(tiny_model_dir):
    found = run_python(f"""
        import json, torch
        from transformers import AutoTokenizer, LlamaForCausalLM
        model, info = LlamaForCausalLM.from_pretrained({str(tiny_model_dir)!r},
                                                       output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained({str(tiny_model_dir)!r})
        ids = tokenizer("hello world", return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        print(json.dumps({{"missing": sorted(info["missing_keys"]),
                           "unexpected": sorted(info["unexpected_keys"]),
                           "roundtrip": tokenizer.decode(ids[0], skip_special_tokens=True),
                           "new_tokens": out.shape[1] - ids.shape[1]}}))
    """)
    assert found == {"missing": [], "unexpected": [], "roundtrip": "hello world",
                     "new_tokens": 4}


def test_rerun_on_a_current_model_changes_nothing(tiny_model_dir):
    before = _snapshot(tiny_model_dir)
    result = _generate(tiny_model_dir)
    assert result.returncode == 0, result.stderr
    assert "already current" in result.stdout
    assert _snapshot(tiny_model_dir) == before


def test_a_damaged_copy_is_rebuilt_byte_for_byte(tiny_model_dir, tmp_path):
    """Deterministic: a fresh build of the damaged copy equals the session's model."""
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "tokenizer.json").write_text("{}")
    result = _generate(copy)
    assert result.returncode == 0, result.stderr
    assert "written" in result.stdout
    assert {n: b for n, (b, _mtime) in _snapshot(copy).items()} == \
        {n: b for n, (b, _mtime) in _snapshot(tiny_model_dir).items()}


def test_a_foreign_directory_is_refused_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    result = _generate(tmp_path)
    assert result.returncode == 2
    assert "refusing to overwrite" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
