"""Generate the lab's tiny models, locally and deterministically.

No model hub is reachable from the lab, so the lab makes its own models. The default
family, ``llama``: a ``LlamaForCausalLM`` with hidden size 128, intermediate size 256,
2 layers, 4 attention heads and 4 KV heads (head_dim 32, the smallest vLLM's CPU
attention accepts). The second family, ``qwen2`` (``--family qwen2``; the lab's second
model, of a different architecture): a ``Qwen2ForCausalLM`` of the same width with 2 KV
heads (grouped-query attention), biases on the q/k/v projections, tied embeddings (no
``lm_head`` tensor) and rope theta 1e6. Both: random weights from a fixed seed (its own
per family) stored as bf16 safetensors, and a byte-level BPE tokenizer
trained here on text generated from a fixed word list (about 1.4k tokens: training
stops once every word is one token), wrapped in
``PreTrainedTokenizerFast`` with a ChatML-style chat template.

The same library versions give the same bytes on every run. A manifest
(``tiny-model.json``) records the generator's spec and the SHA-256 of every file; a
rerun whose spec matches and whose files still hash to the manifest changes nothing.
A directory that holds anything else is refused rather than overwritten.

Usage: ``python -m gpu_lab.tiny_model OUT_DIR [--family llama|qwen2] [--force]``
(``tests/lab`` on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

MANIFEST_NAME = "tiny-model.json"
GENERATOR_VERSION = 2
SEED = 20240607
VOCAB_TARGET = 2048
INIT_STD = 0.02

ARCHITECTURE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "head_dim": 32,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}

# The second family: what differs from the Llama above is what vLLM must load differently.
QWEN2_ARCHITECTURE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
}
FAMILIES = ("llama", "qwen2")

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, IM_START, IM_END]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The training text is generated from these words with a seeded RNG, so it is the
# same on every machine and Python version (random.Random(int) is stable).
_WORD_TEXT = """
the a an of to in on for with from by at as and or but not is are was were be been
this that these those it its we you they he she one two three four five six seven
eight nine ten many few more most some any each every all no yes hello world model
token tokens layer layers head heads hidden size cluster node nodes worker workers
gpu gpus memory cache batch request requests response stream server client endpoint
route service pod pods volume storage weights tensor pipeline parallel parallelism
ray vllm serve serving launch launcher stage stager plan planner layout schedule
network interface address port host secret key value query attention embedding
vector matrix multiply add sum mean norm scale shift rotate position sequence length
time latency throughput second minute hour day fast slow small large tiny big
quick brown fox jumps over lazy dog cat bird tree river mountain city road bridge
light dark red green blue yellow white black water fire earth air stone wood metal
read write open close start stop wait run walk talk think learn teach build test
check verify report count measure answer question chat message user assistant system
good bad new old first last next previous early late high low left right up down
"""
_WORDS = _WORD_TEXT.split()


def _corpus(lines: int = 4000) -> list[str]:
    rng = random.Random(SEED)
    out = []
    for _line in range(lines):
        words = [rng.choice(_WORDS) for _word in range(rng.randint(4, 16))]
        if rng.random() < 0.3:
            words.insert(rng.randint(0, len(words)), str(rng.randint(0, 9999)))
        sentence = " ".join(words)
        out.append(sentence[0].upper() + sentence[1:] + rng.choice([".", "?", "!", ","]))
    return out


def spec(family: str = "llama") -> dict:
    """What the generated model is made from; the manifest stores it for idempotence.

    Library versions come from package metadata, so checking an existing model does
    not pay for importing torch and transformers. The ``llama`` spec is the one this
    generator always wrote (no family key), so existing models stay current.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}, expected one of {list(FAMILIES)}")
    extra = {} if family == "llama" else {"family": family}
    return {
        **extra,
        "generator_version": GENERATOR_VERSION,
        "seed": _seed(family),
        "vocab_target": VOCAB_TARGET,
        "init_std": INIT_STD,
        "architecture": ARCHITECTURE if family == "llama" else QWEN2_ARCHITECTURE,
        "special_tokens": SPECIAL_TOKENS,
        "chat_template": CHAT_TEMPLATE,
        "libraries": {
            name: metadata.version(name).split("+")[0]
            for name in ("torch", "transformers", "tokenizers", "safetensors")
        },
    }


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=ARCHITECTURE["max_position_embeddings"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _seed(family: str) -> int:
    return SEED if family == "llama" else SEED + FAMILIES.index(family)


def _qwen2_config(tokenizer) -> dict:
    """config.json as transformers' Qwen2Config writes it."""
    arch = dict(QWEN2_ARCHITECTURE)
    rope_theta = arch.pop("rope_theta")
    layers = arch["num_hidden_layers"]
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        **arch,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "initializer_range": INIT_STD,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": layers,
        "layer_types": ["full_attention"] * layers,
        "rope_parameters": {"rope_theta": rope_theta, "rope_type": "default"},
        "use_cache": True,
        "dtype": "bfloat16",
    }


def _config(tokenizer, family: str = "llama") -> dict:
    """config.json as transformers' LlamaConfig (or Qwen2Config) writes it (without
    importing it: the import alone costs seconds; the tests load the result with
    transformers)."""
    if family == "qwen2":
        return _qwen2_config(tokenizer)
    arch = dict(ARCHITECTURE)
    rope_theta = arch.pop("rope_theta")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **arch,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": INIT_STD,
        "pretraining_tp": 1,
        "rope_parameters": {"rope_theta": rope_theta, "rope_type": "default"},
        "use_cache": True,
        "dtype": "bfloat16",
    }


def _weight_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """LlamaForCausalLM's (or Qwen2ForCausalLM's) parameter names and shapes (HF layout:
    [out, in]); Qwen2 adds q/k/v biases, and a tied LM head has no tensor of its own."""
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q_out = config["num_attention_heads"] * head_dim
    kv_out = config["num_key_value_heads"] * head_dim
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (vocab, hidden)
    for i in range(config["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        shapes.update({
            f"{layer}.self_attn.q_proj.weight": (q_out, hidden),
            f"{layer}.self_attn.k_proj.weight": (kv_out, hidden),
            f"{layer}.self_attn.v_proj.weight": (kv_out, hidden),
            f"{layer}.self_attn.o_proj.weight": (hidden, q_out),
            f"{layer}.mlp.gate_proj.weight": (inter, hidden),
            f"{layer}.mlp.up_proj.weight": (inter, hidden),
            f"{layer}.mlp.down_proj.weight": (hidden, inter),
            f"{layer}.input_layernorm.weight": (hidden,),
            f"{layer}.post_attention_layernorm.weight": (hidden,),
        })
        if config["model_type"] == "qwen2":
            shapes.update({
                f"{layer}.self_attn.q_proj.bias": (q_out,),
                f"{layer}.self_attn.k_proj.bias": (kv_out,),
                f"{layer}.self_attn.v_proj.bias": (kv_out,),
            })
    return shapes


def _weights(config: dict, seed: int = SEED) -> dict:
    """Seeded random weights (norms at 1, biases at 0), in a fixed order, as bf16 tensors."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in sorted(_weight_shapes(config).items()):
        if name.endswith("norm.weight"):
            value = torch.ones(shape, dtype=torch.float32)
        elif name.endswith(".bias"):
            value = torch.zeros(shape, dtype=torch.float32)
        else:
            value = torch.randn(shape, generator=gen, dtype=torch.float32) * INIT_STD
        tensors[name] = value.to(torch.bfloat16).contiguous()
    return tensors


def _build(target: Path, family: str = "llama") -> None:
    from safetensors.torch import save_file

    tokenizer = _train_tokenizer()
    tokenizer.save_pretrained(target)
    config = _config(tokenizer, family)
    (target / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(_weights(config, _seed(family)), str(target / "model.safetensors"),
              metadata={"format": "pt"})
    target.chmod(0o755)
    for path in target.iterdir():
        path.chmod(0o644)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_hashes(directory: Path) -> dict[str, str]:
    return {
        p.name: _sha256(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST_NAME
    }


def is_current(out_dir: Path, expected_spec: dict | None = None) -> bool:
    """True when out_dir holds this generator's model, unchanged since it was written."""
    manifest_path = out_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("spec") != (expected_spec or spec()):
        return False
    return manifest.get("files") == _file_hashes(out_dir)


def generate(out_dir: str | os.PathLike, force: bool = False, family: str = "llama") -> dict:
    """Write the tiny model (of ``family``) to out_dir unless it is already there and matching.

    Returns {"changed": bool, "path": str, "files": {name: sha256}}. The model is built
    in a sibling temporary directory and moved into place, so an interrupted run never
    leaves a half-written model behind. Raises ValueError for a directory that holds
    something other than a model made by this generator (unless force is set).
    """
    out = Path(out_dir).absolute()
    wanted = spec(family)
    if is_current(out, wanted) and not force:
        return {"changed": False, "path": str(out), "files": _file_hashes(out)}
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file() and not force:
        raise ValueError(
            f"{out} is not empty and was not written by this generator (no {MANIFEST_NAME}); "
            "refusing to overwrite it (use --force)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _build(staging, family)
        files = _file_hashes(staging)
        manifest = {"spec": wanted, "files": files}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"changed": True, "path": str(out), "files": files}


def _replace_dir(new: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    new.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu_lab.tiny_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="directory to write the model to")
    parser.add_argument("--family", choices=FAMILIES, default="llama",
                        help="the architecture: llama (default) or qwen2 (the second model)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild even if the model is current; overwrite foreign content")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        result = generate(args.out_dir, force=args.force, family=args.family)
    except ValueError as exc:
        print(f"tiny_model: {exc}", file=sys.stderr)
        return 2
    state = "written" if result["changed"] else "already current"
    print(f"tiny model {state} at {result['path']} ({time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
