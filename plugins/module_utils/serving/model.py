# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The model as the planner sees it: architecture facts, dtype, quantization, max length.

API
---
``ModelSpec``: frozen dataclass (fields below) with the derived sizes the memory model
uses (``embedding_params``, ``lm_head_params``, ``params_per_layer``,
``weight_bytes_per_param``, ``dense_bytes_per_param``).

``model_from_options(options, presets) -> (ModelSpec, warnings)``
    Builds the spec from the module's ``model`` option (a dict): exactly one source
    among ``preset`` (a key of ``presets``), ``config_path`` (a Hugging Face
    ``config.json``, or the model directory holding it) or explicit architecture
    fields; then the serving overrides ``dtype``, ``quantization``,
    ``max_model_len`` and ``name`` apply to any source. Raises ``InvalidInputError``
    naming the problem.

``estimate_parameters(...)``: parameter count of a Llama-style decoder from its
architecture (used when ``parameters`` is not given, and to cross-check it).

Parameter accounting (Llama-style decoder, gated MLP):
  per layer = q,o: 2 x hidden x (heads x head_dim)
            + k,v: 2 x hidden x (kv_heads x head_dim)
            + MLP: 3 x hidden x intermediate x max(1, experts) (+ router hidden x experts)
            + 2 x hidden (norms)
  embedding = vocab x hidden; LM head = vocab x hidden unless tied.
When ``parameters`` is given it wins; the per-layer share is
``(parameters - embedding - LM head) / layers``.

Bytes per parameter: float32 4, bfloat16/float16 2, int8 1, fp8 1, awq/gptq 4-bit
0.52 (4 bits plus group-128 fp16 scales and zeros). Quantization applies to the
decoder layers; embedding and LM head stay in the activation dtype, as vLLM keeps them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
QUANT_BYTES = {"int8": 1.0, "fp8": 1.0, "awq": 0.52, "gptq": 0.52}
ARCH_FIELDS = (
    "num_layers",
    "num_attention_heads",
    "num_kv_heads",
    "hidden_size",
    "head_dim",
    "vocab_size",
    "intermediate_size",
    "num_experts",
    "num_experts_per_token",
    "tie_word_embeddings",
)
SERVING_FIELDS = ("dtype", "quantization", "max_model_len", "name")
# config.json key(s) for each of our fields, first match wins.
_CONFIG_KEYS = {
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head"),
    "num_kv_heads": ("num_key_value_heads", "num_kv_heads", "n_head_kv"),
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "head_dim": ("head_dim",),
    "vocab_size": ("vocab_size",),
    "intermediate_size": ("moe_intermediate_size", "intermediate_size", "ffn_dim", "n_inner"),
    "num_experts": ("num_local_experts", "num_experts", "n_routed_experts"),
    "num_experts_per_token": ("num_experts_per_tok",),
    "tie_word_embeddings": ("tie_word_embeddings",),
    "max_model_len": ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"),
    "dtype": ("torch_dtype", "dtype"),
}


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and serving facts of one model."""

    name: str
    source: str
    parameters: float
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    hidden_size: int
    head_dim: int
    vocab_size: int
    intermediate_size: int
    num_experts: int
    num_experts_per_token: int
    tie_word_embeddings: bool
    dtype: str
    quantization: str | None
    max_model_len: int
    weight_bits: float | None = None

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def params_per_layer(self) -> float:
        return (self.parameters - self.embedding_params - self.lm_head_params) / self.num_layers

    @property
    def dense_bytes_per_param(self) -> float:
        return DTYPE_BYTES[self.dtype]

    @property
    def weight_bytes_per_param(self) -> float:
        if self.weight_bits is not None:
            return self.weight_bits / 8
        if self.quantization:
            return QUANT_BYTES[self.quantization]
        return self.dense_bytes_per_param

    @property
    def ffn_width_per_token(self) -> int:
        """MLP width a token passes through (MoE: the routed experts only)."""
        return self.intermediate_size * max(1, self.num_experts_per_token)


def estimate_parameters(
    num_layers: int,
    hidden_size: int,
    num_attention_heads: int,
    num_kv_heads: int,
    head_dim: int,
    vocab_size: int,
    intermediate_size: int,
    num_experts: int = 0,
    tie_word_embeddings: bool = False,
) -> int:
    """Parameter count of a Llama-style decoder (see the module docstring)."""
    attention = 2 * hidden_size * num_attention_heads * head_dim
    attention += 2 * hidden_size * num_kv_heads * head_dim
    mlp = 3 * hidden_size * intermediate_size * max(1, num_experts)
    router = hidden_size * num_experts if num_experts > 1 else 0
    per_layer = attention + mlp + router + 2 * hidden_size
    embeddings = vocab_size * hidden_size * (1 if tie_word_embeddings else 2)
    return num_layers * per_layer + embeddings + hidden_size


def load_config(path: str) -> dict:
    """Read a Hugging Face ``config.json`` (or ``<dir>/config.json``)."""
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError as exc:
        raise InvalidInputError(f"model.config_path: no such file: {path}", path=path) from exc
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            f"model.config_path: cannot read {path} as JSON: {exc}", path=path
        ) from exc
    if not isinstance(config, dict):
        raise InvalidInputError(f"model.config_path: {path} is not a JSON object", path=path)
    return config


def fields_from_config(config: dict) -> dict:
    """Our field names from a ``config.json`` dict (nested ``text_config`` merged in)."""
    if isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}
    fields = {}
    for field, keys in _CONFIG_KEYS.items():
        for key in keys:
            if config.get(key) is not None:
                fields[field] = config[key]
                break
    if config.get("multi_query") and "num_kv_heads" not in fields:
        fields["num_kv_heads"] = 1
    quant = config.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower()
    if method in ("awq", "gptq", "fp8"):
        fields["quantization"] = method
    elif method:
        fields["quantization"] = "int8" if quant.get("bits") == 8 else method
    if quant.get("bits") and method in ("awq", "gptq"):
        fields["weight_bits"] = float(quant["bits"]) + 0.16
    archs = config.get("architectures") or []
    fields["name"] = config.get("_name_or_path") or (archs[0] if archs else "model")
    return fields


def _positive_int(fields: dict, key: str, required: bool = True) -> int:
    value = fields.get(key)
    if value is None:
        if required:
            raise InvalidInputError(f"model.{key} is required (not given, not in the config)")
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise InvalidInputError(f"model.{key} must be a whole number, got {value!r}")
    if value < 1:
        raise InvalidInputError(f"model.{key} must be at least 1, got {value}")
    return int(value)


def _dtype(value) -> str:
    dtype = DTYPE_ALIASES.get(str(value).lower(), str(value).lower())
    if dtype not in DTYPE_BYTES:
        raise InvalidInputError(
            f"model.dtype {value!r} is not supported; use one of {sorted(DTYPE_BYTES)}"
        )
    return dtype


def build_spec(fields: dict, source: str) -> tuple[ModelSpec, list[str]]:
    """Validate merged fields and build the spec; returns (spec, warnings)."""
    warnings = []
    layers = _positive_int(fields, "num_layers")
    heads = _positive_int(fields, "num_attention_heads")
    hidden = _positive_int(fields, "hidden_size")
    kv_heads = _positive_int(fields, "num_kv_heads", required=False) or heads
    if heads % kv_heads:
        raise InvalidInputError(
            f"model.num_kv_heads {kv_heads} must divide num_attention_heads {heads}"
        )
    head_dim = _positive_int(fields, "head_dim", required=False) or hidden // heads
    if head_dim < 1:
        raise InvalidInputError(f"model.hidden_size {hidden} is smaller than the {heads} heads")
    vocab = _positive_int(fields, "vocab_size", required=False)
    inter = _positive_int(fields, "intermediate_size", required=False)
    experts = _positive_int(fields, "num_experts", required=False)
    per_token = _positive_int(fields, "num_experts_per_token", required=False)
    if experts > 1 and not per_token:
        raise InvalidInputError("model.num_experts_per_token is required for an MoE model")
    if per_token > max(1, experts):
        raise InvalidInputError(
            f"model.num_experts_per_token {per_token} exceeds num_experts {experts}"
        )
    tied = bool(fields.get("tie_word_embeddings", False))
    estimate = None
    if vocab and inter:
        estimate = estimate_parameters(
            layers, hidden, heads, kv_heads, head_dim, vocab, inter, experts, tied
        )
    parameters = fields.get("parameters")
    if parameters is None:
        if estimate is None:
            raise InvalidInputError(
                "model.parameters is required unless vocab_size and intermediate_size "
                "are given (to count them)"
            )
        parameters = float(estimate)
    elif isinstance(parameters, bool) or not isinstance(parameters, (int, float)):
        raise InvalidInputError(f"model.parameters must be a number, got {parameters!r}")
    elif parameters <= 0:
        raise InvalidInputError(f"model.parameters must be a positive number, got {parameters!r}")
    elif estimate and abs(parameters - estimate) > 0.25 * parameters:
        warnings.append(
            f"model.parameters {parameters / 1e9:.2f}B differs from the {estimate / 1e9:.2f}B "
            "counted from the architecture by more than 25%; using model.parameters"
        )
    embeddings = vocab * hidden * (1 if tied else 2)
    if parameters <= embeddings:
        raise InvalidInputError(
            f"model.parameters {parameters:.0f} leaves nothing for the layers after "
            f"{embeddings} embedding parameters"
        )
    quant = fields.get("quantization")
    quant = None if quant in (None, "", "none") else str(quant).lower()
    if quant is not None and quant not in QUANT_BYTES:
        raise InvalidInputError(
            f"model.quantization {quant!r} is not supported; use one of "
            f"{sorted(QUANT_BYTES)} or none (model.quantization overrides a config.json)"
        )
    dtype = _dtype(fields.get("dtype", "bfloat16"))
    if dtype == "float32" and not fields.get("dtype_explicit"):
        dtype = "bfloat16"
        warnings.append("the checkpoint is float32; vLLM serves it as bfloat16 (set model.dtype)")
    spec = ModelSpec(
        name=str(fields.get("name") or "model"),
        source=source,
        parameters=float(parameters),
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        hidden_size=hidden,
        head_dim=head_dim,
        vocab_size=vocab,
        intermediate_size=inter or 4 * hidden,
        num_experts=experts,
        num_experts_per_token=per_token,
        tie_word_embeddings=tied,
        dtype=dtype,
        quantization=quant,
        max_model_len=_positive_int(fields, "max_model_len"),
        weight_bits=fields.get("weight_bits") if quant in ("awq", "gptq") else None,
    )
    return spec, warnings


def model_from_options(options: dict, presets: dict) -> tuple[ModelSpec, list[str]]:
    """Build a ``ModelSpec`` from the ``model`` option (see the module docstring)."""
    options = {key: value for key, value in (options or {}).items() if value is not None}
    arch_given = sorted(key for key in ARCH_FIELDS if key in options)
    sources = [key for key in ("preset", "config_path") if key in options]
    if len(sources) > 1:
        raise InvalidInputError("model: give preset or config_path, not both")
    if sources and arch_given:
        raise InvalidInputError(
            f"model: architecture fields {arch_given} cannot be combined with {sources[0]}"
        )
    if "preset" in options and "parameters" in options:
        raise InvalidInputError("model: parameters cannot be combined with preset")
    if "preset" in options:
        name = options["preset"]
        if name not in presets:
            raise InvalidInputError(
                f"model.preset {name!r} is unknown; known presets: {', '.join(sorted(presets))}",
                known_presets=sorted(presets),
            )
        fields, source = dict(presets[name]), f"preset:{name}"
        fields.setdefault("name", name)
    elif "config_path" in options:
        fields, source = fields_from_config(load_config(options["config_path"])), "config.json"
    elif arch_given or "parameters" in options:
        fields, source = {}, "explicit"
    else:
        raise InvalidInputError("model: give one of preset, config_path or the architecture fields")
    for key in (*ARCH_FIELDS, "parameters", *SERVING_FIELDS):
        if key in options:
            fields[key] = options[key]
    if "dtype" in options:
        fields["dtype_explicit"] = True
    if "quantization" in options:
        fields.pop("weight_bits", None)
    return build_spec(fields, source)
