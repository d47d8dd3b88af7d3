# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Several models on one GPU fleet: each model's layout, replicas, nodes and backend.

API
---
``plan_fleet(models, hardware, targets=None, layout=None, topology=None) -> dict``
    ``models``: a list of entries ``{name, model, model_dir, backend, replicas, gpus,
    targets, layout}`` (``None`` = not given; ``model`` is the one-model planner's
    ``model`` option, ``targets`` / ``layout`` override the fleet-wide ones key by key).
    Returns ``{"plans": [...], "fleet": {...}}``; each plan entry is
    ``{name, model_dir, backend, backend_reason, plan, nodes}`` (``nodes``: list of
    ``{node, gpus}``, node positions in the fleet). Raises ``InvalidInputError`` naming
    the model and its shortfall when the fleet is too small.

``plan_single(model, hardware, targets=None, layout=None, topology=None) -> dict``
    The same result for the one-model form (the module's ``model`` option): a one-entry
    list named ``model.name``, else the plan's model name.

Rules
-----
- A model's replica shape (TP x PP, nodes per replica) is the one-model planner's
  smallest layout on the whole fleet (``plan.py`` / ``planner.py``). A model that fits
  no layout is refused with the planner's message (GiB per GPU or KV tokens short),
  prefixed by the model's name.
- A replica takes ``gpus_per_replica / nodes_per_replica`` GPUs on each of
  ``nodes_per_replica`` distinct nodes. Minimum replicas: ``replicas``, else
  ``gpus // gpus_per_replica``, else 1. They are placed first, the widest replicas
  first (most nodes, then most GPUs per node; list order breaks ties), each on the nodes
  with the fewest free GPUs that still hold it (best fit, lowest index first).
- The GPUs still free go, one replica at a time in list order, to the models that gave
  neither ``replicas`` nor ``gpus``. One such model alone gets what the one-model planner
  gives it: its plan is the one-model plan unchanged.
- Backend ``auto``: ``deployment`` when a replica is one pod on one node (PP 1 and
  TP <= GPUs per node), else ``ray``. ``deployment`` for a replica spanning nodes is
  refused (one pod per replica cannot span nodes). ``kserve`` is only ever asked for
  (KServe gives each of a replica's PP pods TP GPUs on one node, so TP above a node's
  GPUs is refused).
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.inputs import (
    hardware_from_options,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

BACKENDS = ("auto", "ray", "deployment", "kserve")
_KV_PAIR = ("kv_cache_tokens", "concurrent_sequences")


def _given(options: dict | None) -> dict:
    return {key: value for key, value in (options or {}).items() if value is not None}


def _merge(base: dict | None, own: dict | None, exclusive: tuple = ()) -> dict:
    """``own``'s given keys over ``base``'s; a key of an exclusive pair drops the other."""
    merged, mine = _given(base), _given(own)
    if exclusive and set(exclusive) & set(mine):
        for key in exclusive:
            merged.pop(key, None)
    merged.update(mine)
    return merged


def _positive(entry: dict, key: str):
    value = entry.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidInputError(
            f"model {entry.get('name')!r}: {key} must be a whole number >= 1, got {value!r}"
        )
    return value


def _check_entries(models: list) -> None:
    if not models:
        raise InvalidInputError("models: give at least one model")
    names, dirs = set(), set()
    for position, entry in enumerate(models):
        name = entry.get("name")
        if not name or not isinstance(name, str):
            raise InvalidInputError(f"models[{position}]: name (the served model name) is required")
        model_dir = entry.get("model_dir") or name
        if name in names:
            raise InvalidInputError(f"models: the name {name!r} is given twice")
        if model_dir in dirs:
            raise InvalidInputError(
                f"models: two models use the directory {model_dir!r} on the volume"
            )
        names.add(name)
        dirs.add(model_dir)
        if not isinstance(entry.get("model"), dict):
            raise InvalidInputError(
                f"model {name!r}: model (the planner inputs: preset, config_path or fields) "
                "is required"
            )
        if (entry.get("backend") or "auto") not in BACKENDS:
            raise InvalidInputError(
                f"model {name!r}: backend {entry['backend']!r} is not one of {list(BACKENDS)}"
            )
        if _positive(entry, "replicas") is not None and _positive(entry, "gpus") is not None:
            raise InvalidInputError(f"model {name!r}: give replicas or gpus, not both")


def _backend(name: str, wanted: str, plan: dict, gpus_per_node: int) -> tuple[str, str]:
    tp, pp = plan["tensor_parallel_size"], plan["pipeline_parallel_size"]
    one_node = plan["nodes_per_replica"] == 1
    shape = f"TP {tp} x PP {pp} over {plan['nodes_per_replica']} node(s)"
    if wanted == "deployment" and not one_node:
        raise InvalidInputError(
            f"model {name!r}: backend deployment runs one pod per replica on one node, but a "
            f"replica needs {shape}; use backend ray (or auto)"
        )
    if wanted == "kserve" and tp > gpus_per_node:
        raise InvalidInputError(
            f"model {name!r}: backend kserve gives each pod of a replica TP GPUs on one node, "
            f"but a replica needs {shape} with {gpus_per_node} GPU(s) per node; use backend "
            "ray (or auto)"
        )
    if wanted != "auto":
        return wanted, f"backend {wanted} as given ({shape})"
    if one_node and pp == 1 and tp <= gpus_per_node:
        return "deployment", f"auto: a replica ({shape}) fits one node, no Ray needed"
    return "ray", f"auto: a replica ({shape}) spans nodes or pipeline stages, Ray runs it"


class _Nodes:
    """Free GPUs per node, and best-fit placement of one replica."""

    def __init__(self, nodes: int, gpus_per_node: int):
        self.free = [gpus_per_node] * nodes

    def place(self, nodes_per_replica: int, gpus_per_pod: int) -> list[int] | None:
        fitting = [i for i, free in enumerate(self.free) if free >= gpus_per_pod]
        if len(fitting) < nodes_per_replica:
            return None
        chosen = sorted(fitting, key=lambda i: (self.free[i], i))[:nodes_per_replica]
        for node in chosen:
            self.free[node] -= gpus_per_pod
        return sorted(chosen)


def _shortfall(entry: dict, shape: dict, missing: int, nodes: _Nodes, placed: list):
    """The refusal for a model whose ``missing`` replicas find no room."""
    per_pod, spans = shape["gpus_per_pod"], shape["nodes_per_replica"]
    need = missing * shape["gpus_per_replica"]
    free = sum(nodes.free)
    others = ", ".join(placed) or "no other model"
    where = f"{spans} node(s) with {per_pod} free GPU(s) each"
    if need > free:
        short = f"short by {need - free} GPU(s)"
    else:
        short = f"the {free} free GPU(s) are spread too thin (free per node: {nodes.free})"
    return InvalidInputError(
        f"model {entry['name']!r} does not fit the fleet: {missing} more replica(s) of TP "
        f"{shape['tp']} x PP {shape['pp']} need {need} GPU(s) on {where}, {free} are free "
        f"after {others}; {short}",
        model=entry["name"],
        gpus_short=max(need - free, 0),
        gpus_needed=need,
        gpus_free=free,
    )


def _inputs(entry: dict, targets, layout) -> tuple[dict, dict]:
    """The model's targets and layout: its own keys over the fleet-wide ones."""
    return _merge(targets, entry.get("targets"), _KV_PAIR), _merge(layout, entry.get("layout"))


def _shape(entry: dict, fleet_hw, hardware, targets, layout, topology) -> dict:
    """The model's replica shape (the one-model plan), minimum replicas and backend."""
    try:
        plan = build_plan(entry["model"], hardware, *_inputs(entry, targets, layout), topology)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"model {entry['name']!r}: {exc.msg}", model=entry["name"], **exc.details
        ) from exc
    gpr, npr = plan["gpus_per_replica"], plan["nodes_per_replica"]
    share = entry.get("gpus")
    if share is not None and share < gpr:
        raise InvalidInputError(
            f"model {entry['name']!r}: its share of {share} GPU(s) is below the {gpr} one replica "
            f"needs (TP {plan['tensor_parallel_size']} x PP {plan['pipeline_parallel_size']}); "
            f"short by {gpr - share} GPU(s)",
            model=entry["name"], gpus_short=gpr - share,
        )
    minimum = entry.get("replicas") or (share // gpr if share else 1)
    fill = entry.get("replicas") is None and share is None
    backend = _backend(entry["name"], entry.get("backend") or "auto", plan, fleet_hw.gpus_per_node)
    return {
        "plan": plan, "backend": backend,
        "tp": plan["tensor_parallel_size"], "pp": plan["pipeline_parallel_size"],
        "gpus_per_replica": gpr, "nodes_per_replica": npr, "gpus_per_pod": gpr // npr,
        "minimum": minimum, "fill": fill, "placements": [],
    }


def _allocate(models: list, shapes: list, nodes: _Nodes) -> None:
    order = sorted(range(len(models)),
                   key=lambda i: (-shapes[i]["nodes_per_replica"], -shapes[i]["gpus_per_pod"], i))
    placed = []
    for i in order:
        shape = shapes[i]
        for count in range(shape["minimum"]):
            where = nodes.place(shape["nodes_per_replica"], shape["gpus_per_pod"])
            if where is None:
                raise _shortfall(models[i], shape, shape["minimum"] - count, nodes, placed)
            shape["placements"].append(where)
        placed.append(repr(models[i]["name"]))
    growing = [i for i in range(len(models)) if shapes[i]["fill"]]
    while growing:
        for i in list(growing):
            where = nodes.place(shapes[i]["nodes_per_replica"], shapes[i]["gpus_per_pod"])
            if where is None:
                growing.remove(i)
            else:
                shapes[i]["placements"].append(where)


def _node_use(shape: dict) -> list[dict]:
    use: dict = {}
    for placement in shape["placements"]:
        for node in placement:
            use[node] = use.get(node, 0) + shape["gpus_per_pod"]
    return [{"node": node, "gpus": gpus} for node, gpus in sorted(use.items())]


def _fleet(hardware, plans: list, nodes: _Nodes) -> dict:
    total = hardware.total_gpus
    used = total - sum(nodes.free)
    summary = [
        f"fleet: {len(plans)} model(s) on {hardware.nodes} nodes x {hardware.gpus_per_node} "
        f"GPUs, {used} of {total} GPUs used"
    ]
    for entry in plans:
        plan = entry["plan"]
        summary.append(
            f"{entry['name']}: {entry['backend']}, TP {plan['tensor_parallel_size']} x PP "
            f"{plan['pipeline_parallel_size']} x {plan['replicas']} replica(s), "
            f"{plan['gpus_used']} GPU(s) on node(s) "
            + ", ".join(str(use["node"]) for use in entry["nodes"])
        )
    warnings = [f"{total - used} of {total} GPUs stay idle"] if used < total else []
    summary += [f"warning: {warning}" for warning in warnings]
    return {"nodes": hardware.nodes, "gpus_per_node": hardware.gpus_per_node, "total_gpus": total,
            "gpus_used": used, "gpus_idle": total - used,
            "per_node": [hardware.gpus_per_node - free for free in nodes.free],
            "warnings": warnings, "summary": summary}


def plan_fleet(models, hardware, targets=None, layout=None, topology=None) -> dict:
    """Plan every model of ``models`` on the fleet ``hardware`` (see the module docstring)."""
    _check_entries(models)
    fleet_hw = hardware_from_options(hardware)
    shapes = [_shape(entry, fleet_hw, hardware, targets, layout, topology) for entry in models]
    nodes = _Nodes(fleet_hw.nodes, fleet_hw.gpus_per_node)
    _allocate(models, shapes, nodes)
    alone = len(models) == 1 and shapes[0]["fill"]
    plans = []
    for entry, shape in zip(models, shapes, strict=True):
        replicas = len(shape["placements"])
        plan = shape["plan"]
        if not (alone and replicas == plan["replicas"]):
            plan = build_plan(entry["model"], hardware, *_inputs(entry, targets, layout), topology,
                              replicas=replicas)
        backend, reason = shape["backend"]
        plans.append({
            "name": entry["name"], "model_dir": entry.get("model_dir") or entry["name"],
            "backend": backend, "backend_reason": reason, "plan": plan, "nodes": _node_use(shape),
        })
    return {"plans": plans, "fleet": _fleet(fleet_hw, plans, nodes)}


def plan_single(model, hardware, targets=None, layout=None, topology=None) -> dict:
    """The one-model form: ``model`` as a one-entry list, named ``model.name`` or, left
    out, after the plan's model (preset or config); refusals read as they always have."""
    alone = build_plan(model, hardware, targets, layout, topology)  # refusals as before
    name = (model or {}).get("name") or alone["model"]["name"]
    return plan_fleet([{"name": name, "model": model}], hardware, targets, layout, topology)
