"""Networks: EGNN (E(3)-equivariant) and e3nn (E(3)- or, with symmetry="so3", SE(3)-equivariant:
chirality-aware) for molecules, and a Cα transformer (backbones)."""
from .backbone_transformer import BackboneTransformer
from .egnn import EGNN
from .embeddings import sinusoidal_embedding


def _e3conformer():
    """e3nn's import costs ~1.5 s per process (it loads torch._dynamo): only the runs that use it pay."""
    from .equivariant import E3Conformer

    return E3Conformer


class _Models(dict):
    """name -> network class; the e3nn network is imported on first use."""

    def __getitem__(self, name):
        value = super().__getitem__(name)
        return value() if value is _e3conformer else value


MODELS = _Models({"egnn": EGNN, "e3nn": _e3conformer, "backbone-transformer": BackboneTransformer})


def __getattr__(name):  # `from qdiff.models import E3Conformer` keeps working, lazily
    if name == "E3Conformer":
        return _e3conformer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(name: str, **kwargs):
    """A network by name with its size settings; ValueError naming the valid names otherwise."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"model {name!r}: bad settings {sorted(kwargs)} ({err})") from None


def model_from_spec(spec: dict):
    """`build_model` from a config mapping {"name": ..., **settings}."""
    return build_model(spec["name"], **{k: v for k, v in spec.items() if k != "name"})


def compile_network(model, backend=True):
    """torch.compile(model); `backend` True means inductor, "reduce-overhead" inductor with CUDA-graph
    replay (torch.compile's mode of that name), else a backend name or a backend callable.

    Networks with `static_shapes` (the e3nn network, also inside DistributedDataParallel) get their
    graphs padded to size buckets, and only their message passing, which sees nothing but the
    graph's shapes, is compiled, without dynamic shapes: one compiled graph per (nodes, edges)
    bucket and none after every bucket has been seen (the network logs each new bucket); the
    recompile limit is raised to cover a run's buckets; `model` itself is returned. Others (atom
    counts change with every batch) compile whole, with dynamic shapes. Parameters stay shared
    with `model` (save its state_dict)."""
    import torch

    mode = None
    if backend == "reduce-overhead":  # inductor with CUDA-graph replay (static shapes make it pay off)
        backend, mode = "inductor", "reduce-overhead"
    if backend is True or backend == "inductor":
        backend = "inductor"
    elif not callable(backend) and (not isinstance(backend, str) or not backend):
        raise ValueError(f"compile: expected true, false or a torch.compile backend name, got {backend!r}")
    inner = getattr(model, "module", model)  # DistributedDataParallel keeps the network as .module
    if hasattr(inner, "static_shapes"):
        inner.static_shapes = True
        torch._dynamo.config.recompile_limit = max(int(torch._dynamo.config.recompile_limit), STATIC_SHAPE_RECOMPILE_LIMIT)
        # the class's function (called with the network as its first argument): a deep copy of the
        # network (an EMA copy, say) then runs with its own weights, not with those of `inner`
        inner.compiled_message_passing = torch.compile(type(inner).message_passing, dynamic=False, backend=backend, mode=mode)
        return model
    if mode == "reduce-overhead":
        raise ValueError(f"compile reduce-overhead (CUDA graphs) needs a network with static shapes (e3nn); {type(inner).__name__} "
                         "changes shape with every batch, so its graphs would be re-recorded each time: use compile true")
    return torch.compile(model, dynamic=True, backend=backend, mode=mode)


STATIC_SHAPE_RECOMPILE_LIMIT = 64  # (node, edge) bucket pairs of a run: a few per size range


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MODELS", "BackboneTransformer", "E3Conformer", "EGNN", "build_model", "compile_network", "count_parameters", "model_from_spec", "sinusoidal_embedding"]
