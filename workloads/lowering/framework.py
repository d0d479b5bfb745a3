"""The framework's own kernels: optimizer implementation, zero_grad, AccumulateGrad, DDP.

Besides the cuDNN/cuBLAS calls of its layers, a PyTorch training step launches kernels of
its own, and which ones depends on the PyTorch version and setup. The profiles of
``data/frameworks.toml`` name them (each with its source); :func:`workloads.lowering.lower`
takes one as ``framework=``:

- ``pytorch``: PyTorch >= 2.0 defaults. ``optimizer.step()`` is the multi-tensor (foreach)
  SGD; ``zero_grad()`` sets gradients to None, so it launches nothing and AccumulateGrad
  takes each new gradient without a kernel.
- ``pytorch-wd``: the same with weight decay (the RTX 2080 Ti trace): one more
  out-of-place ``_foreach_add`` pass before the momentum update.
- ``pytorch-ddp``: ``pytorch`` under DistributedDataParallel (the A100 trace, 2 ranks): the
  reducer copies each parameter's gradient into its bucket, divided by the world size (one
  ``mul`` per parameter, launched as the gradient becomes ready), and each forward starts by
  broadcasting the batch-norm buffers (two ``CatArrayBatchedCopy`` kernels).
- ``pytorch-legacy``: PyTorch < 1.12 defaults (from the sources; neither trace shows it):
  single-tensor SGD (three elementwise kernels per parameter tensor), ``zero_grad`` fills
  every gradient, and AccumulateGrad then adds each new gradient into the zeroed one.

Where the kernels go in the kernel graph: optimizer kernels replace the lowering of the
graph's ``sgd_update`` ops (zero_grad's fills follow them: ``optimizer.step();
optimizer.zero_grad()``); per-parameter hooks (AccumulateGrad's add, DDP's mul) follow the
layer that produces the gradient (a convolution's weight gradient, a batch norm's backward,
a linear layer's weight gradient), one per parameter tensor; DDP's buffer broadcast precedes
the first kernel of the step.
"""

from __future__ import annotations

import functools
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind, KernelSpec
from workloads.layers import Layer, OpType
from workloads.lowering.ops import (
    SGD_IMPLEMENTATIONS,
    Context,
    elementwise_kernel,
    kernel_shapes,
    make_kernel,
    sgd_kernels,
)
from workloads.lowering.tiles import data_dir

#: Ops whose backward produces parameter gradients (where the per-parameter hooks run).
PARAM_GRAD_OPS: frozenset[OpType] = frozenset(
    {OpType.CONV2D_WGRAD, OpType.LINEAR_WGRAD, OpType.BATCHNORM_BWD})


@dataclass(frozen=True)
class Framework:
    """One row of ``data/frameworks.toml`` (see its header for the fields)."""

    name: str
    optimizer: str
    weight_decay: bool
    zero_grad: str
    accumulate_grad: str
    ddp_world_size: int
    source: str

    def __post_init__(self) -> None:
        def fail(what: str) -> None:
            raise GpusimError(f"framework {self.name!r}: {what}")

        if self.optimizer not in SGD_IMPLEMENTATIONS:
            fail(f"optimizer must be one of {', '.join(SGD_IMPLEMENTATIONS)}")
        if self.zero_grad not in ("set_to_none", "fill"):
            fail("zero_grad must be 'set_to_none' or 'fill'")
        if self.accumulate_grad not in ("steal", "add"):
            fail("accumulate_grad must be 'steal' or 'add'")
        if isinstance(self.ddp_world_size, bool) or not isinstance(self.ddp_world_size, int) \
                or self.ddp_world_size < 0 or self.ddp_world_size == 1:
            fail("ddp_world_size must be 0 (no DDP) or an integer >= 2")
        if not self.source:
            fail("every framework profile needs a source")

    # ------------------------------------------------------------------ kernels
    def optimizer_kernels(self, layer: Layer, ctx: Context,
                          tensor_elems: Sequence[int]) -> list[KernelSpec]:
        """An sgd_update op's kernels, then zero_grad's fills of the same gradients."""
        kernels = sgd_kernels(layer, ctx, tensor_elems, implementation=self.optimizer,
                              weight_decay=self.weight_decay)
        if self.zero_grad == "fill":
            kernels += [elementwise_kernel(layer, ctx, elems, binary=False, flops=0,
                                           dram_B=elems * ctx.elem_B,
                                           label="fill (zero_grad)",
                                           kind=KernelKind.ELEMENTWISE)
                        for elems in tensor_elems if elems > 0]
        return kernels

    def param_grad_kernels(self, layer: Layer, ctx: Context,
                           tensor_elems: Sequence[int]) -> list[KernelSpec]:
        """Kernels run for each parameter gradient this layer produced (AccumulateGrad's
        add, DDP's copy into the bucket)."""
        kernels: list[KernelSpec] = []
        for elems in (t for t in tensor_elems if t > 0):
            if self.accumulate_grad == "add":
                kernels.append(elementwise_kernel(
                    layer, ctx, elems, binary=True, flops=elems, dram_B=3 * elems * ctx.elem_B,
                    label="add_ (AccumulateGrad into the zeroed gradient)"))
            if self.ddp_world_size:
                kernels.append(elementwise_kernel(
                    layer, ctx, elems, binary=False, flops=elems,
                    dram_B=2 * elems * ctx.elem_B,
                    label=f"mul (DDP reducer: gradient / {self.ddp_world_size} into the "
                          "bucket)"))
        return kernels

    def step_start_kernels(self, layer: Layer, ctx: Context,
                           batchnorm_channels: Sequence[int]) -> list[KernelSpec]:
        """Kernels before the step's first layer: DDP's broadcast of the batch-norm buffers
        (their running mean and variance, then their int64 counters, each flattened into
        one buffer by a CatArrayBatchedCopy kernel with one grid row per tensor)."""
        if not self.ddp_world_size or not batchnorm_channels:
            return []
        e = kernel_shapes()["concat"]
        per_block = e["threads"] * e["elems_per_thread"]
        stats = [c for c in batchnorm_channels for _ in range(2)]
        stats_B = 2.0 * sum(stats) * 4  # fp32 buffers, read and written once
        counters_B = 2.0 * len(batchnorm_channels) * 8
        return [
            make_kernel(layer, ctx, KernelKind.CONCAT_COPY,
                        (max(1, math.ceil(max(stats) / per_block)), len(stats), 1),
                        e["threads"], e["regs"], e["smem_B"], 0.0, stats_B,
                        "CatArrayBatchedCopy (DDP buffer broadcast: running statistics)"),
            make_kernel(layer, ctx, KernelKind.CONCAT_COPY, (1, len(batchnorm_channels), 1),
                        e["threads"], e["regs"], e["smem_B"], 0.0, counters_B,
                        "CatArrayBatchedCopy (DDP buffer broadcast: num_batches_tracked)"),
        ]


@functools.cache
def _profiles() -> Mapping[str, Framework]:
    path = data_dir() / "frameworks.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    out = {}
    for name, row in data.items():
        try:
            out[name] = Framework(name=name, **row)
        except TypeError as exc:
            raise GpusimError(f"frameworks.toml, profile {name!r}: {exc}") from None
    return MappingProxyType(out)


def list_frameworks() -> tuple[str, ...]:
    """Names of the framework profiles."""
    return tuple(_profiles())


def load_framework(framework: str | Framework) -> Framework:
    """A profile by name (or the profile itself); unknown names raise :class:`GpusimError`."""
    if isinstance(framework, Framework):
        return framework
    profile = _profiles().get(framework)
    if profile is None:
        raise GpusimError(f"unknown framework {framework!r}; expected one of "
                          f"{', '.join(list_frameworks())}")
    return profile
