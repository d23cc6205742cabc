"""FSDP2 for the training loop: the layout a launch asked for, `fully_shard` on the trained module and on a frozen
teacher, activation checkpointing on repeated blocks, and the user's modules given back whole after training.

Accelerate sets up FSDP only on accelerators; on CPU machines (gloo) `accelerate launch` with an FSDP config still
passes its settings through the environment (`ACCELERATE_USE_FSDP`, `FSDP_*`). kdforge reads them either way and
calls `torch.distributed.fsdp.fully_shard` itself, so the same code shards on CPUs and GPUs and the loop, not
`accelerator.prepare`, decides what is sharded: the student's blocks, the student, then the student + loss
module (projectors and other trainable loss parts); the online teacher likewise, frozen.

After training `release` gathers every parameter once and removes FSDP from the modules in place, so the rest of
a run (the test split, the saved model, the report) sees the same plain `nn.Module` objects it built. That step
undoes what `fully_shard` installed (hooks, class, composable state);
`tests/train/test_fsdp.py::test_release_gives_back_plain_modules_after_sharding` checks it against the installed torch.

A frozen teacher too large for one process's memory is built whole on process 0 only and on the meta device
elsewhere (`meta_unless_rank0`); `shard_frozen_from_rank0` shards it and fills every process's shards, and its
buffers, from process 0. It then stays sharded for the rest of the run (`is_sharded`: the loop leaves it so).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from kdforge.errors import TrainingError

__all__ = ["ShardingPlan", "activation_checkpointing", "block_modules", "full_state", "is_sharded", "load_snapshot",
           "meta_unless_rank0", "release", "requested_plan", "shard_frozen", "shard_frozen_from_rank0",
           "shard_trained", "snapshot"]


@dataclass(frozen=True)
class ShardingPlan:
    """What `fully_shard` is asked to do (from the FSDP config `accelerate launch` was given)."""

    reshard_after_forward: bool = True  # free the gathered weights of a block after its forward (ZeRO-3)
    block_classes: tuple[str, ...] = ()  # class names sharded one by one; () = the model's own repeated blocks
    mixed_precision: str = "no"  # "bf16": weights gathered and computed in bfloat16, gradients reduced in float32


def _flag(name: str, default: str = "false") -> bool:
    return os.environ.get(name, default).strip().lower() in ("1", "true", "yes")


def requested_plan(accelerator: Any, where: str = "train") -> ShardingPlan | None:
    """The FSDP2 plan a launch asked for, or None for replicated training (one process, DDP).

    Refuses what kdforge's loop does not honour (FSDP1, parameter offload, fp16 without a sharded gradient
    scaler) with one-line messages, before anything is sharded.
    """
    from accelerate.utils import DistributedType

    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if accelerator.distributed_type != DistributedType.FSDP and not _flag("ACCELERATE_USE_FSDP"):
        return None
    version = int(getattr(plugin, "fsdp_version", None) or os.environ.get("FSDP_VERSION", "1"))
    if version != 2:
        raise TrainingError(
            f"{where}: the FSDP config asks for FSDP version {version}; kdforge trains with FSDP2 (fully_shard) only. "
            "Set fsdp_version: 2 in the accelerate config (see examples/accelerate/fsdp.yaml).")
    offload = getattr(plugin, "cpu_offload", None)  # FSDP2: CPUOffloadPolicy when asked for, else OffloadPolicy
    if type(offload).__name__ == "CPUOffloadPolicy" or offload is True or _flag("FSDP_OFFLOAD_PARAMS"):
        raise TrainingError(f"{where}: FSDP parameter offload (fsdp_offload_params: true) is not supported by "
                            "kdforge's loop; set it to false.")
    precision = str(accelerator.mixed_precision)
    if precision == "fp16":
        raise TrainingError(f"{where}.mixed_precision: fp16 under FSDP needs a sharded gradient scaler, which "
                            "kdforge does not use; use bf16 (or no).")
    names = getattr(plugin, "transformer_cls_names_to_wrap", None) or \
        [n for n in os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if n.strip()]
    reshard = getattr(plugin, "reshard_after_forward", None)
    if not isinstance(reshard, bool):
        reshard = _flag("FSDP_RESHARD_AFTER_FORWARD", "true")
    return ShardingPlan(reshard_after_forward=reshard, block_classes=tuple(n.strip() for n in names),
                        mixed_precision=precision)


def block_modules(model: nn.Module, class_names: tuple[str, ...] = ()) -> list[nn.Module]:
    """The repeated blocks of `model` (transformer layers): modules whose class is named in `class_names`, else
    in the model's own `_no_split_modules` (transformers' list), else the members of every `nn.ModuleList` that
    hold parameters. Outermost first; a block inside another block is left to its parent."""
    names = set(class_names) or {n for m in model.modules() for n in (getattr(m, "_no_split_modules", None) or ())}
    if names:
        found = [m for m in model.modules() if _class_name(m) in names and m is not model]
    else:
        found = [child for m in model.modules() if isinstance(m, nn.ModuleList)
                 for child in m if any(True for _ in child.parameters())]
    kept: list[nn.Module] = []
    inside: set[int] = set()
    for block in found:  # model.modules() order is outer before inner
        if id(block) in inside:
            continue
        kept.append(block)
        inside |= {id(m) for m in block.modules()}
    return kept


def _class_name(module: nn.Module) -> str:
    """The module's own class name, also once `fully_shard` has put its class in front."""
    from torch.distributed.fsdp import FSDPModule

    return _original_class(module).__name__ if isinstance(module, FSDPModule) else type(module).__name__


def _mesh(device: torch.device):
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (torch.distributed.get_world_size(),))


def _policy(plan: ShardingPlan):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if plan.mixed_precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def _shard_tree(model: nn.Module, plan: ShardingPlan, mesh) -> None:
    from torch.distributed.fsdp import fully_shard

    for block in block_modules(model, plan.block_classes):
        fully_shard(block, mesh=mesh, reshard_after_forward=plan.reshard_after_forward, mp_policy=_policy(plan))


def shard_trained(module: nn.Module, plan: ShardingPlan, device: torch.device) -> nn.Module:
    """Shard the student + loss module in place: each block of the student (and of a mutual-learning peer), the
    student itself (validation runs it alone), then the whole module (the loss's own parameters)."""
    from torch.distributed.fsdp import fully_shard

    mesh = _mesh(device)
    models = [m for m in (getattr(module, "student", None), getattr(module, "peer", None)) if m is not None]
    for model in models:
        _shard_tree(model, plan, mesh)
        fully_shard(model, mesh=mesh, reshard_after_forward=plan.reshard_after_forward, mp_policy=_policy(plan))
    fully_shard(module, mesh=mesh, reshard_after_forward=plan.reshard_after_forward, mp_policy=_policy(plan))
    fully_shard.state(module)._lazy_init()  # the whole module is the root, whichever forward runs first
    return module


def shard_frozen(model: nn.Module, plan: ShardingPlan, device: torch.device) -> nn.Module:
    """Shard a frozen teacher in place: blocks, then the model; eval mode, no gradients, weights freed again after
    each forward. It gets no optimizer, so it holds no optimizer state."""
    from torch.distributed.fsdp import fully_shard

    _shard_frozen_tree(model, plan, device)
    fully_shard.state(model)._lazy_init()
    return model


def _shard_frozen_tree(model: nn.Module, plan: ShardingPlan, device: torch.device) -> None:
    from torch.distributed.fsdp import fully_shard

    model.eval().requires_grad_(False)
    mesh = _mesh(device)
    _shard_tree(model, ShardingPlan(True, plan.block_classes, plan.mixed_precision), mesh)
    fully_shard(model, mesh=mesh, reshard_after_forward=True, mp_policy=_policy(plan))


def is_sharded(model: nn.Module) -> bool:
    """Whether `fully_shard` has already been applied to `model` (a teacher sharded when it was built)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def meta_unless_rank0() -> Iterator[bool]:
    """Build a frozen model inside this block: process 0 for real, every other process on the meta device (no
    memory, no weights read). Yields whether this process builds on the meta device."""
    on_meta = torch.distributed.get_rank() != 0
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        yield on_meta


def _tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    """Parameters and buffers (also non-persistent ones), each once, in module order: the same on every process."""
    return [*model.named_parameters(), *model.named_buffers()]


def _match_rank0(model: nn.Module, where: str) -> None:
    """Give this process's model process 0's tensor dtypes (a meta build may default to another dtype than the
    loaded weights'); refuse a model whose tensor names or shapes differ from process 0's."""
    rank0 = [[(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in _tensors(model)]]
    torch.distributed.broadcast_object_list(rank0, src=0)
    own = _tensors(model)
    if [(n, tuple(t.shape)) for n, t in own] != [(n, s) for n, s, _ in rank0[0]]:
        raise TrainingError(f"{where}: the teacher built on process {torch.distributed.get_rank()} differs from "
                            "process 0's (tensor names or shapes); its factory must build the same model everywhere.")
    with torch.no_grad():
        for (_, tensor), (_, _, dtype) in zip(own, rank0[0], strict=True):
            if str(tensor.dtype).removeprefix("torch.") != dtype:
                tensor.data = tensor.data.to(getattr(torch, dtype))


@torch.no_grad()
def shard_frozen_from_rank0(model: nn.Module, plan: ShardingPlan, device: torch.device,
                            where: str = "teacher") -> nn.Module:
    """`shard_frozen` for a model whose weights only process 0 holds (built in `meta_unless_rank0`; collective).

    Process 0 keeps its whole state dict while `fully_shard` splits the model; the other processes' meta shards get
    storage (`to_empty`), then `set_model_state_dict` sends each tensor from process 0 and every process keeps its
    shard. Buffers, which FSDP does not shard and the state dict may leave out (non-persistent ones such as a
    rotary `inv_freq`), are broadcast from process 0 one by one. A process whose model was built whole anyway (a
    factory that ignores the meta device) is filled the same way: process 0's weights are the ones used."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import fully_shard

    rank = torch.distributed.get_rank()
    _match_rank0(model, where)
    whole = {} if rank != 0 else dict(model.state_dict())
    _shard_frozen_tree(model, plan, device)
    if any(t.is_meta for _, t in _tensors(model)):
        model.to_empty(device=device)
    set_model_state_dict(model, whole, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    del whole
    for _, buffer in model.named_buffers():
        torch.distributed.broadcast(buffer, src=0)
    fully_shard.state(model)._lazy_init()
    return model


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    """A copy of the module's state (sharded parameters stay sharded: each process keeps its shard)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@torch.no_grad()
def full_state(module: nn.Module) -> dict[str, Tensor]:
    """The module's whole state dict on the CPU (collective: every process gathers the same keys in order)."""
    from torch.distributed.tensor import DTensor

    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu().clone()
            for k, v in module.state_dict().items()}


def load_snapshot(module: nn.Module, weights: dict[str, Tensor]) -> None:
    """Copy a `snapshot` back into the sharded module's parameters and buffers."""
    own = module.state_dict()
    with torch.no_grad():
        for key, value in weights.items():
            target = own[key]
            local = target.to_local() if hasattr(target, "to_local") else target
            local.copy_(value.to_local() if hasattr(value, "to_local") else value)


def _original_class(module: nn.Module) -> type:
    from torch.distributed.fsdp import FSDPModule

    return next(base for base in type(module).__bases__ if base is not FSDPModule)


def _strip(module: nn.Module) -> None:
    """Remove what `fully_shard` installed on one module: forward and state-dict hooks, its class, its state."""
    import sys

    import torch.distributed._composable.contract  # noqa: F401  (the package re-exports a function of that name)

    contract = sys.modules["torch.distributed._composable.contract"]
    from torch.distributed._composable_state import _module_state_mapping
    from torch.distributed.fsdp import fully_shard

    state = fully_shard.state(module)
    if state is not None and state._modules and state._modules[0] is module:
        state._pre_forward_hook_handle.remove()
        state._post_forward_hook_handle.remove()
        for group in state._fsdp_param_groups:
            for handle in (*group._module_to_pre_save_state_dict_hook_handle.values(),
                           *group._module_to_pre_load_state_dict_hook_handle.values()):
                handle.remove()
            for param in group.fsdp_params:
                param._post_load_hook_handle.remove()
    module.__class__ = _original_class(module)
    for key in (contract.STATE_KEY, contract.REGISTRY_KEY):
        entries = module.__dict__.get(key)
        if isinstance(entries, dict):
            for name in [k for k in entries if getattr(k, "__name__", k) == "fully_shard"]:
                del entries[name]
            if not entries:
                del module.__dict__[key]
    _module_state_mapping.pop(module, None)


@torch.no_grad()
def release(root: nn.Module) -> dict[str, Tensor]:
    """Give `root` whole, plain parameters again and remove FSDP from it and its submodules (collective: every
    process calls it). Returns the whole state dict, on the CPU."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    sharded = [m for m in root.modules() if isinstance(m, FSDPModule)]
    for module in sharded:
        module.reshard()
    replaced: dict[int, nn.Parameter] = {}
    for module in root.modules():  # the same order on every process: the gathers line up
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) not in replaced:
                whole = param.full_tensor() if isinstance(param, DTensor) else param.detach()
                replaced[id(param)] = nn.Parameter(whole.detach().clone(), requires_grad=param.requires_grad)
            module._parameters[name] = replaced[id(param)]
    for module in sharded:
        _strip(module)
    for module in root.modules():
        for attr in ("_is_fsdp_managed_module", "_fsdp_use_orig_params"):
            module.__dict__.pop(attr, None)
    return {k: v.detach().cpu().clone() for k, v in root.state_dict().items()}


def _checkpointed(forward, *args: Any, **kwargs: Any) -> Any:
    if torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint

        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def activation_checkpointing(model: nn.Module, class_names: tuple[str, ...] = (), where: str = "train"
                             ) -> Callable[[], None]:
    """Recompute the student's blocks' activations in the backward pass instead of keeping them; returns the
    function that switches it off again.

    A `transformers` model uses its own switch (`activation_checkpointing_enable`, or `gradient_checkpointing_enable`
    before transformers 5; non-reentrant), which also turns the key/value cache off during training (a recomputed
    block would append to it twice). Any other model has each block's `forward` wrapped on the instance in
    `torch.utils.checkpoint` (non-reentrant): parameter names, hooks and FSDP's hooks around the block stay."""
    if getattr(model, "supports_gradient_checkpointing", False):
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            return model.activation_checkpointing_disable
        if hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return model.gradient_checkpointing_disable
    blocks = block_modules(model, class_names)
    if not blocks:
        raise TrainingError(f"{where}.activation_checkpointing: the student has no repeated blocks (no nn.ModuleList "
                            "of layers, no _no_split_modules) to checkpoint; set it to false for this model.")
    for block in blocks:
        block.forward = functools.partial(_checkpointed, block.forward)

    def undo() -> None:
        for block in blocks:
            block.__dict__.pop("forward", None)

    return undo
