"""Training graphs: forward, loss, backward and optimizer ops with autograd's dependencies.

:func:`make_training_graph` extends a forward graph (built in training mode) the way
PyTorch autograd executes ``loss.backward()`` and ``optimizer.step()``:

- **loss**: a ``cross_entropy`` op per network output (``loss``; Inception-v3's auxiliary
  head gets ``aux_logits_loss``), then its backward ``<loss>.bwd``.
- **backward**: walking the forward graph in reverse, every forward op gets its backward
  op(s) once the gradient of its output is complete. A convolution gets ``<name>.dgrad``
  (input gradient; omitted when the input is the image, which needs no gradient) and
  ``<name>.wgrad`` (weight gradient), a linear layer ``.dgrad``/``.wgrad``, every other op
  ``<name>.bwd``. Each backward op depends on the gradient of its forward op's output and
  on the saved forward tensors it reads (edges of kind ``"saved"``).
- **gradient accumulation**: where a forward tensor fanned out (an Inception module's input
  feeding four branches, a residual's identity), the gradients coming back from each
  consumer are summed by a ``<producer>.grad_accum`` op, as autograd does; only then can the
  producer's backward run. Independent branches therefore stay independent backward too.
- **optimizer**: ``optimizer="per_layer"`` (default) adds an ``sgd_update`` op
  ``<name>.update`` per parameterised layer, depending on that layer's weight gradient
  (how a fused optimizer-in-backward or DDP-style overlap runs); ``optimizer="step"`` adds
  one ``optimizer.step`` op after *all* parameter gradients, as eager
  ``optimizer.step()`` after ``loss.backward()`` runs it (multi-tensor kernels). A graph
  without parameters gets no optimizer op with either setting (there is nothing to update).

SGD with momentum reads parameter, gradient and momentum buffer and writes parameter and
buffer: 3 reads + 2 writes and ~4 FLOP per parameter.

Ops of imported networks follow autograd too: an activation's backward reads the saved
input (SiLU, GELU, Hardswish, Hardsigmoid) or output (sigmoid); a ``mul`` gets one
``<name>.bwd.<i>`` per input that needs a gradient (the incoming gradient times the other
operand, summed over the broadcast dims where input ``i`` was broadcast; with a learned
operand, ``.bwd.0`` also computes its gradient); layer norm's backward reads the saved input
and writes the parameter gradients, as batch norm's does; ``slice`` scatters its gradient
into a zeroed gradient of the whole tensor; reshape, permute and contiguous pass the
gradient through as views.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import networkx as nx

from gpu_models.errors import GpusimError
from workloads.graph import validate_graph
from workloads.layers import BACKWARD_OF, Layer, OpType, numel

OPTIMIZERS: tuple[str, ...] = ("per_layer", "step")

#: FLOP per element of backward elementwise ops (batch-norm backward needs two reductions).
_BWD_FLOPS_PER_ELEM: dict[OpType, int] = {
    OpType.BATCHNORM_BWD: 8, OpType.RELU_BWD: 1, OpType.RELU6_BWD: 2,
    OpType.DROPOUT_BWD: 1, OpType.LRN_BWD: 8, OpType.SOFTMAX_BWD: 4,
    OpType.CROSS_ENTROPY_BWD: 2, OpType.ADAPTIVE_AVGPOOL_BWD: 1,
    OpType.SILU_BWD: 6, OpType.HARDSWISH_BWD: 3, OpType.GELU_BWD: 10, OpType.SIGMOID_BWD: 2,
    OpType.HARDSIGMOID_BWD: 2, OpType.LAYERNORM_BWD: 8, OpType.MEAN_BWD: 1,
    OpType.SLICE_BWD: 0, OpType.STOCHASTIC_DEPTH_BWD: 1,
}
#: Activations whose backward reads the saved *input* (sigmoid's reads its output).
_SAVES_INPUT: frozenset[OpType] = frozenset(
    {OpType.SILU_BWD, OpType.HARDSWISH_BWD, OpType.GELU_BWD, OpType.HARDSIGMOID_BWD})
#: Backward ops that pass the gradient through as a view.
_VIEW_BACKWARD: frozenset[OpType] = frozenset(
    {OpType.ADD_BWD, OpType.CONCAT_BWD, OpType.FLATTEN_BWD, OpType.RESHAPE_BWD,
     OpType.PERMUTE_BWD, OpType.CONTIGUOUS_BWD})


def make_training_graph(forward: nx.DiGraph, *, optimizer: str = "per_layer") -> nx.DiGraph:
    """A training-step graph (forward + loss + backward + optimizer) from a forward graph."""
    if optimizer not in OPTIMIZERS:
        raise GpusimError(
            f"optimizer {optimizer!r} is not supported; valid: {', '.join(OPTIMIZERS)}"
        )
    outputs: list[str] = list(forward.graph.get("outputs", []))
    labels: list[str] = list(forward.graph.get("output_labels", ["logits"] * len(outputs)))
    if not outputs:
        raise GpusimError(f"workload {forward.graph.get('name')!r}: no output to attach a loss to")
    g = forward.copy()
    g.graph["phase"] = "training"
    g.graph["optimizer"] = optimizer
    t = _Builder(g)

    # grads[v]: (node producing a gradient contribution for v's output, shape)
    grads: dict[str, list[str]] = defaultdict(list)
    if len(labels) != len(outputs):
        raise GpusimError("graph.graph['output_labels'] must match graph.graph['outputs']")
    for out, label in zip(outputs, labels, strict=True):
        logits = g.nodes[out]["layer"]
        loss_name = "loss" if label == "logits" else f"{label}_loss"
        n = logits.output[0]
        t.add(Layer(
            name=loss_name, op=OpType.CROSS_ENTROPY, inputs=(logits.output,), output=(1,),
            dtype=logits.dtype, flops=5 * numel(logits.output), phase="loss",
            # logits in, int64 targets in, one scalar out
            bytes_read=numel(logits.output) * logits.dtype_bytes + 8 * n,
            bytes_written=logits.dtype_bytes,
        ), [(out, logits.output, "activation")])
        bwd = t.add(Layer(
            name=f"{loss_name}.bwd", op=OpType.CROSS_ENTROPY_BWD,
            inputs=((1,), logits.output), output=logits.output, dtype=logits.dtype,
            flops=2 * numel(logits.output), phase="backward", forward_of=loss_name,
            bytes_read=numel(logits.output) * logits.dtype_bytes + 8 * n,
            bytes_written=numel(logits.output) * logits.dtype_bytes,
        ), [(loss_name, (1,), "gradient"), (out, logits.output, "saved")])
        grads[out].append(bwd)

    param_grads: list[str] = []
    for v in reversed(list(nx.topological_sort(forward))):
        layer: Layer = forward.nodes[v]["layer"]
        preds = list(forward.predecessors(v))
        if not grads.get(v):
            if layer.params or preds:
                # A forward op whose output never reaches a loss gets no gradient.
                raise GpusimError(f"layer {v!r}: its output reaches no loss")
            continue
        g_src = t.accumulate(v, layer, grads[v])
        for src, targets in t.backward(v, layer, g_src, preds):
            for p in targets:
                grads[p].append(src)
        if layer.params:
            param_grads.append(v)

    if optimizer == "per_layer":
        for v in param_grads:
            layer = forward.nodes[v]["layer"]
            src = t.param_grad_source[v]
            t.add(_sgd(f"{v}.update", layer.params, layer.dtype, v, layer),
                  [(src, (layer.params,), "weight_grad")])
    elif param_grads:  # "step"; without parameters there is no update to launch
        total = sum(forward.nodes[v]["layer"].params for v in param_grads)
        first = forward.nodes[param_grads[0]]["layer"]
        shapes = tuple((forward.nodes[v]["layer"].params,) for v in param_grads)
        step = _sgd("optimizer.step", total, first.dtype, str(g.graph.get("name", "model")),
                    first, inputs=shapes)
        t.add(step, [(t.param_grad_source[v], (forward.nodes[v]["layer"].params,),
                      "weight_grad") for v in param_grads])
    validate_graph(g)
    return g


def _sgd(name: str, params: int, dtype: str, forward_of: str, like: Layer,
         inputs: tuple[tuple[int, ...], ...] | None = None) -> Layer:
    d = like.dtype_bytes
    return Layer(
        name=name, op=OpType.SGD_UPDATE, inputs=inputs or ((params,),), output=(params,),
        dtype=dtype,
        params=params, flops=4 * params, bytes_read=3 * params * d, bytes_written=2 * params * d,
        phase="optimizer", forward_of=forward_of,
        module=like.module if inputs is None else "",
        branch=like.branch if inputs is None else None,
    )


class _Builder:
    """Adds backward ops to the training graph ``g``."""

    def __init__(self, g: nx.DiGraph) -> None:
        self.g = g
        self.param_grad_source: dict[str, str] = {}

    def add(self, layer: Layer, edges: list[tuple[str, tuple[int, ...], str]]) -> str:
        if layer.name in self.g:
            raise GpusimError(f"layer {layer.name!r} is defined twice")
        self.g.add_node(layer.name, layer=layer)
        for src, shape, kind in edges:
            self.g.add_edge(src, layer.name, shape=shape,
                            bytes=numel(shape) * layer.dtype_bytes, kind=kind)
        return layer.name

    def accumulate(self, v: str, layer: Layer, sources: list[str]) -> str:
        """The node holding the complete gradient of ``v``'s output."""
        if len(sources) == 1:
            return sources[0]
        shape, d = layer.output, layer.dtype_bytes
        return self.add(Layer(
            name=f"{v}.grad_accum", op=OpType.GRAD_ACCUMULATE,
            inputs=tuple(shape for _ in sources), output=shape, dtype=layer.dtype,
            flops=(len(sources) - 1) * numel(shape), bytes_read=len(sources) * numel(shape) * d,
            bytes_written=numel(shape) * d, phase="backward", forward_of=v,
            module=layer.module, branch=layer.branch,
        ), [(s, shape, "gradient") for s in sources])

    def _common(self, layer: Layer) -> dict[str, Any]:
        return {
            "kernel": layer.kernel, "stride": layer.stride, "padding": layer.padding,
            "dilation": layer.dilation, "groups": layer.groups, "dtype": layer.dtype,
            "phase": "backward", "forward_of": layer.name, "module": layer.module,
            "branch": layer.branch, "bias": layer.bias, "ceil_mode": layer.ceil_mode,
            "training": layer.training, "attrs": layer.attrs,
        }

    def backward(self, v: str, layer: Layer, g_src: str,
                 preds: list[str]) -> list[tuple[str, list[str]]]:
        """Add ``v``'s backward ops; return (gradient node, forward producers it feeds)."""
        g, d, op = self.g, layer.dtype_bytes, layer.op
        y = layer.output
        grad_edge = (g_src, y, "gradient")
        common = self._common(layer)
        pred_shapes = {p: g.nodes[p]["layer"].output for p in preds}
        if op in (OpType.CONV2D, OpType.LINEAR):
            x = layer.inputs[0]
            conv = op is OpType.CONV2D
            outs = layer.out_channels  # a linear layer's: its last dim
            weights = layer.params - (outs if layer.bias else 0)
            w_shape = ((outs, x[1] // layer.groups, *layer.kernel) if conv
                       else (outs, x[-1]))
            if math.prod(w_shape) != weights:
                raise GpusimError(
                    f"layer {v!r}: {layer.params} parameters do not match weights of shape "
                    f"{w_shape}{' plus a bias' if layer.bias else ''}")
            # dgrad and wgrad are two independent nodes, both fed by the output gradient
            # alone: autograd runs them inside one ConvolutionBackward (AddmmBackward) node,
            # but cuDNN (cuBLAS) launches them as separate kernels with no data dependency
            # between them, so a multi-stream schedule may overlap them; and the input
            # gradient (dgrad) is what the rest of backward waits for, while the weight
            # gradient only feeds the optimizer.
            out: list[tuple[str, list[str]]] = []
            if preds:
                dgrad = self.add(Layer(
                    name=f"{v}.dgrad", op=OpType.CONV2D_DGRAD if conv else OpType.LINEAR_DGRAD,
                    inputs=(y,), output=x, params=layer.params, macs=layer.macs,
                    flops=2 * layer.macs, bytes_read=(numel(y) + weights) * d,
                    bytes_written=numel(x) * d, **common,
                ), [grad_edge])
                out.append((dgrad, preds))
            wgrad = self.add(Layer(
                name=f"{v}.wgrad", op=OpType.CONV2D_WGRAD if conv else OpType.LINEAR_WGRAD,
                inputs=(y, x), output=w_shape, params=layer.params, macs=layer.macs,
                flops=2 * layer.macs + (numel(y) if layer.bias else 0),
                bytes_read=(numel(y) + numel(x)) * d, bytes_written=layer.params * d, **common,
            ), [grad_edge] + [(p, pred_shapes[p], "saved") for p in preds])
            self.param_grad_source[v] = wgrad
            return out
        if op is OpType.MUL:
            return self._mul_backward(v, layer, grad_edge, preds, pred_shapes, common)
        bwd_op = BACKWARD_OF.get(op)
        if bwd_op is None:
            raise GpusimError(f"layer {v!r}: no backward rule for op {op.value!r}")
        name = f"{v}.bwd"
        if bwd_op in _VIEW_BACKWARD:
            # Views: add passes the gradient through, concat/flatten hand out slices/views.
            self.add(Layer(name=name, op=bwd_op, inputs=(y,), output=y, **common), [grad_edge])
            return [(name, preds)]
        x = layer.inputs[0]
        saved: list[tuple[str, tuple[int, ...], str]] = []
        reads = numel(y)
        writes = numel(x)
        extra_read_B = 0  # bytes read beyond `reads` elements of the layer's dtype
        if bwd_op in (OpType.BATCHNORM_BWD, OpType.LAYERNORM_BWD):
            saved = [(p, pred_shapes[p], "saved") for p in preds]
            reads += numel(x) + layer.params
            writes += layer.params
        elif bwd_op in (OpType.RELU_BWD, OpType.RELU6_BWD, OpType.SIGMOID_BWD):
            saved = [(v, y, "saved")]
            reads += numel(y)
        elif bwd_op in _SAVES_INPUT:
            saved = [(p, pred_shapes[p], "saved") for p in preds]
            reads += numel(x)
        elif bwd_op is OpType.MAXPOOL_BWD:
            saved = [(v, y, "saved")]  # the argmax indices (int64) saved by the forward
            extra_read_B = 8 * numel(y)  # gradient (dtype) + int64 indices (8 B, any dtype)
        elif bwd_op in (OpType.LRN_BWD, OpType.SOFTMAX_BWD):
            saved = [(v, y, "saved")] + [(p, pred_shapes[p], "saved") for p in preds]
            reads += numel(y) + (numel(x) if bwd_op is OpType.LRN_BWD else 0)
        elif bwd_op is OpType.DROPOUT_BWD:
            extra_read_B = numel(y)  # gradient (dtype) + one-byte mask
        per_elem = _BWD_FLOPS_PER_ELEM.get(bwd_op)
        if per_elem is None:  # pooling backward: one add per window element
            flops = numel(y) * layer.kernel[0] * layer.kernel[1]
        else:
            flops = per_elem * max(numel(x), numel(y))
        self.add(Layer(
            name=name, op=bwd_op, inputs=(y, *tuple(s for _, s, _ in saved)), output=x,
            params=layer.params, flops=flops, bytes_read=reads * d + extra_read_B,
            bytes_written=writes * d,
            **common,
        ), [grad_edge, *saved])
        if layer.params:
            self.param_grad_source[v] = name
        return [(name, preds)] if preds else []

    def _mul_backward(self, v: str, layer: Layer, grad_edge: tuple[str, tuple[int, ...], str],
                      preds: list[str], pred_shapes: dict[str, tuple[int, ...]],
                      common: dict[str, Any]) -> list[tuple[str, list[str]]]:
        """``mul``: one gradient per input with a producer (see the module docstring)."""
        y, d = layer.output, layer.dtype_bytes
        shapes = layer.inputs
        # Each producer feeds the first input of its shape; the image has none.
        producer: dict[int, str] = {}
        for p in preds:
            free = [i for i, s in enumerate(shapes) if s == pred_shapes[p] and i not in producer]
            if not free:
                raise GpusimError(f"layer {v!r}: its producers do not match its inputs "
                                  f"{shapes}")
            producer[free[0]] = p
        weight = layer.attrs if layer.params else ()
        out: list[tuple[str, list[str]]] = []
        for i, shape in enumerate(shapes):
            if i not in producer and not (weight and i == 0):
                continue  # the image needs no gradient
            other = weight if weight else shapes[1 - i]
            saved_from = producer.get(1 - i) if not weight else producer.get(0)
            saved = ([(saved_from, pred_shapes[saved_from], "saved")]
                     if saved_from is not None else [])
            reduce = shape != y  # input i was broadcast: its gradient is summed
            params = layer.params if weight else 0
            name = self.add(Layer(
                name=f"{v}.bwd.{i}", op=OpType.MUL_BWD,
                inputs=(y, *(pred_shapes[s] for s, _, _ in saved)), output=shape,
                # grad x other operand (+ the sum over broadcast dims; + the weight's
                # gradient, a product and a sum)
                params=params, flops=numel(y) * (1 + int(reduce) + (2 if weight else 0)),
                bytes_read=(numel(y) + numel(other) + (numel(shape) if weight else 0)) * d,
                bytes_written=(numel(shape) + params) * d, **common,
            ), [grad_edge, *saved])
            if weight:
                self.param_grad_source[v] = name
            if i in producer:
                out.append((name, [producer[i]]))
        return out
