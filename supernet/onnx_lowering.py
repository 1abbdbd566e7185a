"""Graph rewrites that make an fp32 ONNX subnet quantize into integer kernels on onnxruntime (issue 14).

The fp32 export (`supernet.export.export_onnx`) is already BN-folded; what made its int8 file slow is the float
islands onnxruntime's quantizer leaves: ``HardSwish`` (``quant_pre_process`` splits it into HardSigmoid x Mul,
and HardSigmoid has no integer kernel), ``HardSigmoid`` in SE, and ``ReduceMean`` (SE squeeze, head pool). Each
island costs a DequantizeLinear / float op / QuantizeLinear on the full tensor, and breaks onnxruntime's NHWC
chain of QLinearConv kernels (extra Transposes). Measured on this repository's AMD EPYC VM (onnxruntime 1.32,
1 thread, random-weight ``ofa-mbv3`` largest @224, op profile per run): the float islands plus their Q/DQ and
transposes were ~30 % of the int8 time.

Same function, other ops (exact in float; every rewrite below is an identity):

    HardSwish(x)            = Mul(Mul(x, Clip(Add(x, 3), 0, 6)), 1/6)
    HardSigmoid(x; a, b)    = Mul(Clip(Add(x, b/a), 0, 1/a), a)          (a > 0; SE's gate: a = 1/6, b = 1/2)
    ReduceMean(x, [2, 3], keepdims=1) on NCHW = GlobalAveragePool(x)

so that onnxruntime's quantizer lowers them to QLinearAdd, Clip (folded into the range of its input),
QLinearMul and QLinearGlobalAveragePool. The trailing multiplication by a positive scalar constant is then free in
int8: a quantized tensor ``q`` with scale ``s`` read as scale ``s * c`` *is* ``c`` times the tensor, so
`fold_scalar_muls` removes every QLinearMul by a positive scalar constant and gives its consumers the input's
integers with the scale multiplied by ``c`` (QOperator format; exact, no requantization).

Notation: a QOperator tensor is the triple (integers ``q``, scale ``s``, zero point ``z``) with real value
``s * (q - z)``; each QLinear* / DequantizeLinear consumer names the three inputs consecutively.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["drop_unused_initializers", "fold_scalar_muls", "int8_friendly", "rewrite_counts"]

_MS_DOMAIN = "com.microsoft"
# QOperator consumers whose quantized inputs are (tensor, scale, zero point) triples at these input positions
_TRIPLE_INPUTS: dict[str, tuple[int, ...]] = {
    "QLinearConv": (0,),
    "QLinearMul": (0, 3),
    "QLinearAdd": (0, 3),
    "QLinearGlobalAveragePool": (0,),
    "QLinearAveragePool": (0,),
    "QLinearConcat": (),  # variadic: handled by not folding into it
    "QGemm": (0,),
    "QLinearMatMul": (0,),
    "DequantizeLinear": (0,),
}


def _unique(model: Any, base: str) -> str:
    taken = {n for node in model.graph.node for n in (*node.input, *node.output)}
    taken |= {i.name for i in model.graph.initializer}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def _scalar(model: Any, name: str, value: float) -> str:
    """Add a float32 scalar initializer (a fresh name based on ``name``); return its name."""
    from onnx import numpy_helper

    n = _unique(model, name)
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), n))
    return n


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _is_nchw_spatial_mean(node: Any, model: Any) -> bool:
    """ReduceMean over axes (2, 3) with keepdims of a 4-D tensor (opset < 18: axes attribute; >= 18: input)."""
    from onnx import numpy_helper

    a = _attrs(node)
    if not a.get("keepdims", 1):
        return False
    axes = a.get("axes")
    if axes is None and len(node.input) > 1:
        init = {i.name: i for i in model.graph.initializer}.get(node.input[1])
        axes = None if init is None else [int(v) for v in numpy_helper.to_array(init).ravel()]
    if axes is None:
        return False
    rank = _rank(model, node.input[0])
    if rank != 4:
        return False
    return sorted(int(v) % 4 for v in axes) == [2, 3]


def _rank(model: Any, name: str) -> int | None:
    for vi in (*model.graph.value_info, *model.graph.input, *model.graph.output):
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return None


def int8_friendly(model: Any, *, keep_float: Sequence[str] = ()) -> Any:
    """Rewrite HardSwish, HardSigmoid (alpha > 0) and spatial ReduceMean of an fp32 ONNX ``model`` in place into
    ops with onnxruntime integer kernels (see the module docstring); returns ``model``. Runs shape inference
    first (ReduceMean needs the input rank). The network computes the same function (up to float rounding).

    Nodes whose name starts with one of ``keep_float`` (the layers a mixed-precision file keeps in fp32) keep
    their float form, HardSwish written as ``Mul(x, HardSigmoid(x))`` under the node's own name prefix (what
    ``quant_pre_process`` would inline it to, but under names that still say which layer they belong to)."""
    import onnx
    from onnx import helper

    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.ClearField("value_info")
    model.graph.value_info.extend(inferred.graph.value_info)
    new_nodes: list[Any] = []
    for node in model.graph.node:
        tag = node.name or node.output[0]
        if keep_float and node.name.startswith(tuple(keep_float)):
            if node.op_type == "HardSwish":
                x, y = node.input[0], node.output[0]
                t = _unique(model, f"{tag}/hsig")
                new_nodes += [helper.make_node("HardSigmoid", [x], [t], name=f"{tag}/hsig", alpha=1.0 / 6.0, beta=0.5),
                              helper.make_node("Mul", [x, t], [y], name=f"{tag}/mul")]
            else:
                new_nodes.append(node)
            continue
        if node.op_type == "HardSwish":
            x, y = node.input[0], node.output[0]
            three, zero, six = (_scalar(model, f"{tag}/c3", 3.0), _scalar(model, f"{tag}/c0", 0.0),
                                _scalar(model, f"{tag}/c6", 6.0))
            sixth = _scalar(model, f"{tag}/c1_6", 1.0 / 6.0)
            t_add, t_clip, t_mul = (_unique(model, f"{tag}/add3"), _unique(model, f"{tag}/relu6"),
                                    _unique(model, f"{tag}/x_relu6"))
            new_nodes += [
                helper.make_node("Add", [x, three], [t_add], name=f"{tag}/add3"),
                helper.make_node("Clip", [t_add, zero, six], [t_clip], name=f"{tag}/relu6"),
                helper.make_node("Mul", [x, t_clip], [t_mul], name=f"{tag}/x_relu6"),
                helper.make_node("Mul", [t_mul, sixth], [y], name=f"{tag}/div6"),
            ]
            continue
        if node.op_type == "HardSigmoid":
            a = _attrs(node)
            alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
            if alpha > 0:
                x, y = node.input[0], node.output[0]
                shift, zero, top = (_scalar(model, f"{tag}/shift", beta / alpha), _scalar(model, f"{tag}/c0", 0.0),
                                    _scalar(model, f"{tag}/top", 1.0 / alpha))
                scale = _scalar(model, f"{tag}/alpha", alpha)
                t_add, t_clip = _unique(model, f"{tag}/add"), _unique(model, f"{tag}/clip")
                new_nodes += [
                    helper.make_node("Add", [x, shift], [t_add], name=f"{tag}/add"),
                    helper.make_node("Clip", [t_add, zero, top], [t_clip], name=f"{tag}/clip"),
                    helper.make_node("Mul", [t_clip, scale], [y], name=f"{tag}/scale"),
                ]
                continue
        if node.op_type == "ReduceMean" and _is_nchw_spatial_mean(node, model):
            new_nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                              name=f"{tag}/gap"))
            continue
        new_nodes.append(node)
    model.graph.ClearField("node")
    model.graph.node.extend(new_nodes)
    model.graph.ClearField("value_info")  # stale for the new tensors; the quantizer re-infers
    onnx.checker.check_model(model)
    return model


def fold_scalar_muls(model: Any) -> int:
    """Remove every QLinearMul of a QOperator ``model`` whose second operand is a positive scalar constant ``c``:
    its consumers read the first operand's integers with scale ``s * c`` (exact). In place; returns how many
    were folded. A QLinearMul whose output is a graph output, or feeds a consumer whose input layout is not
    known here, is kept."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}
    folded = 0
    removed: set[int] = set()
    for node in list(model.graph.node):
        if node.op_type != "QLinearMul" or node.domain != _MS_DOMAIN:
            continue
        a, a_s, a_z, b, b_s, b_z = node.input[:6]
        if b not in inits or b_s not in inits or b_z not in inits:
            continue
        bq = numpy_helper.to_array(inits[b]).astype(np.float64)
        if bq.size != 1:
            continue
        c = float(numpy_helper.to_array(inits[b_s]).astype(np.float64).ravel()[0]
                  * (bq.ravel()[0] - float(numpy_helper.to_array(inits[b_z]).ravel()[0])))
        out = node.output[0]
        users = consumers.get(out, [])
        if not c > 0 or out in outputs or a_s not in inits:
            continue
        slots = [(u, k) for u in users for k in _TRIPLE_INPUTS.get(u.op_type, ()) if u.input[k] == out]
        if len(slots) != sum(list(u.input).count(out) for u in users):
            continue  # some consumer reads `out` at a position we do not know the layout of
        new_scale = _scalar(model, f"{out}/folded_scale",
                            float(numpy_helper.to_array(inits[a_s]).astype(np.float64).ravel()[0]) * c)
        for u, k in slots:
            u.input[k], u.input[k + 1], u.input[k + 2] = a, new_scale, a_z
            consumers.setdefault(a, []).append(u)
        removed.add(id(node))
        folded += 1
    keep = [n for n in model.graph.node if id(n) not in removed]
    model.graph.ClearField("node")
    model.graph.node.extend(keep)
    drop_unused_initializers(model)
    return folded


def drop_unused_initializers(model: Any) -> int:
    """Remove initializers no node reads (the quantizer leaves the scales of tensors it folded away; onnxruntime
    would log one warning per such initializer at every session creation). In place; returns how many."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    dropped = len(model.graph.initializer) - len(keep)
    if dropped:
        model.graph.ClearField("initializer")
        model.graph.initializer.extend(keep)
    return dropped


def rewrite_counts(model: Any, ops: Iterable[str] = ("HardSwish", "HardSigmoid", "ReduceMean")) -> dict[str, int]:
    """How many nodes of each op type in ``ops`` a model has (what `int8_friendly` left float)."""
    counts = {op: 0 for op in ops}
    for n in model.graph.node:
        if n.op_type in counts:
            counts[n.op_type] += 1
    return counts
