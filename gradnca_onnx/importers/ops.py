"""Torch implementations of the ONNX operators image classifiers use.

Values flowing through the interpreter are either torch tensors (image-dependent) or NumPy
arrays ("static": integer constants and shape arithmetic, evaluated in Python at trace time so
that the traced graph holds plain tensor ops and ``Reshape`` gets Python sizes; an ``object``
array can hold the symbolic batch size of a dynamic-batch export).
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from ..errors import InputError

Value = Any  # torch.Tensor | np.ndarray
Attrs = dict[str, Any]

_DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32,
           7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64,
           16: torch.bfloat16}

#: The same ONNX element types as NumPy dtypes (no torch tensor needed: under torch.export's
#: fake mode a tensor cannot become an array).
_NP_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64,
              9: np.bool_, 10: np.float16, 11: np.float64}


def attributes(node: Any) -> Attrs:
    """A node's attributes as Python values (strings decoded)."""
    out: Attrs = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def tensor(v: Value, like: torch.Tensor | None = None) -> torch.Tensor:
    """``v`` as a tensor (a static array becomes a constant of ``like``'s float type)."""
    if isinstance(v, torch.Tensor):
        return v
    arr = np.asarray(v)
    if arr.dtype == object:
        raise InputError("a shape computed at run time feeds a tensor operation")
    t = torch.tensor(arr)
    if like is not None and t.is_floating_point() != like.is_floating_point():
        t = t.to(like.dtype)
    return t


def static(v: Value, what: str) -> np.ndarray:
    """``v`` as a NumPy array; ValueError when it depends on the image."""
    if isinstance(v, torch.Tensor):
        raise InputError(f"{what} must be a constant, not computed from the image")
    return np.asarray(v)


def ints(v: Value, what: str) -> list[Any]:
    """A static 0-/1-D integer input as a Python list (symbolic sizes kept)."""
    return [x if not isinstance(x, np.integer) else int(x) for x in static(v, what).reshape(-1)]


def _opt(inputs: Sequence[Value], i: int) -> Value | None:
    return inputs[i] if i < len(inputs) and inputs[i] is not None else None


# --------------------------------------------------------------------------- static ops


def _norm_axes(axes: Sequence[int], rank: int) -> list[int]:
    return sorted(a + rank if a < 0 else a for a in axes)


def _static_unsqueeze(x: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    for a in _norm_axes(axes, x.ndim + len(axes)):
        x = np.expand_dims(x, a)
    return x


def _static_slice(x: np.ndarray, starts: list, ends: list, axes: list | None,
                  steps: list | None) -> np.ndarray:
    idx = [slice(None)] * x.ndim
    for i, (s, e) in enumerate(zip(starts, ends)):
        a = axes[i] if axes else i
        idx[a] = slice(int(s), int(e), int(steps[i]) if steps else 1)
    return x[tuple(idx)]


def _static_cast(x: np.ndarray, to: int) -> np.ndarray:
    dtype = _NP_DTYPES[to]
    if x.dtype != object:
        return x.astype(dtype)
    if all(isinstance(v, (int, float, np.number)) for v in x.reshape(-1)):
        return np.asarray(x.tolist(), dtype=dtype)  # sizes known at trace time
    return x  # a symbolic size (dynamic batch) stays symbolic


def _static_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iuO" and b.dtype.kind in "iuO":
        return a // b  # ONNX integer Div; sizes here are non-negative, where floor == trunc
    return a / b


STATIC_OPS: dict[str, Callable[[list, Attrs], Any]] = {
    "Identity": lambda i, a: i[0],
    "Gather": lambda i, a: np.take(i[0], i[1].astype(np.int64), axis=a.get("axis", 0)),
    "Unsqueeze": lambda i, a: _static_unsqueeze(i[0], ints(i[1], "Unsqueeze axes")),
    "Squeeze": lambda i, a: (np.squeeze(i[0], axis=tuple(ints(i[1], "Squeeze axes")))
                             if _opt(i, 1) is not None else np.squeeze(i[0])),
    "Concat": lambda i, a: np.concatenate([np.atleast_1d(x) for x in i], axis=a["axis"]),
    "Slice": lambda i, a: _static_slice(i[0], ints(i[1], "starts"), ints(i[2], "ends"),
                                        ints(i[3], "axes") if _opt(i, 3) is not None else None,
                                        ints(i[4], "steps") if _opt(i, 4) is not None else None),
    "Cast": lambda i, a: _static_cast(i[0], a["to"]),
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: _static_div(i[0], i[1]),
    "Mod": lambda i, a: (np.fmod if a.get("fmod", 0) else np.mod)(i[0], i[1]),
    "Reshape": lambda i, a: i[0].reshape([int(s) for s in ints(i[1], "shape")]),
    "Shape": lambda i, a: np.array(np.shape(i[0])[a.get("start", 0):a.get("end")],
                                   dtype=np.int64),
    # Attention scaling from a size: Shape -> Gather -> Cast -> Sqrt -> Div (legacy MHA).
    "Sqrt": lambda i, a: np.sqrt(i[0]),
    "Pow": lambda i, a: np.power(i[0], i[1]),
    "Neg": lambda i, a: -i[0],
    "Reciprocal": lambda i, a: 1 / i[0],
    # The legacy exporter's ``expand(n, -1, -1)``: Where(Equal(shape, -1), 1, shape) -> Expand.
    "Equal": lambda i, a: np.asarray(np.asarray(i[0]) == np.asarray(i[1])),
    "Where": lambda i, a: np.where(np.asarray(i[0]).astype(bool), i[1], i[2]),
    "ConstantOfShape": lambda i, a: np.full(
        [int(s) for s in ints(i[0], "ConstantOfShape shape")],
        (numpy_helper.to_array(a["value"]).reshape(-1)[0] if "value" in a
         else np.float32(0))),
}


# --------------------------------------------------------------------------- tensor ops


def _spatial_pads(pads: Sequence[int] | None, n: int) -> tuple[list[int], list[int]]:
    pads = list(pads or [0] * (2 * n))
    return pads[:n], pads[n:]


def _same_pads(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
               dilation: Sequence[int], upper: bool) -> tuple[list[int], list[int]]:
    begin, end = [], []
    for s, k, st, d in zip(size, kernel, stride, dilation):
        total = max((math.ceil(s / st) - 1) * st + (k - 1) * d + 1 - s, 0)
        small = total // 2
        begin.append(small if upper else total - small)
        end.append(total - small if upper else small)
    return begin, end


def resolve_pads(x: torch.Tensor, a: Attrs, kernel: Sequence[int]) -> tuple[list[int], list[int]]:
    """Begin and end pads of a 2-D conv or pool, ``auto_pad`` included."""
    n = len(kernel)
    stride = a.get("strides", [1] * n)
    dilation = a.get("dilations", [1] * n)
    mode = a.get("auto_pad", "NOTSET")
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads([int(s) for s in x.shape[2:]], kernel, stride, dilation,
                          mode == "SAME_UPPER")
    if mode == "VALID":
        return [0] * n, [0] * n
    return _spatial_pads(a.get("pads"), n)


def _torch_pad(begin: Sequence[int], end: Sequence[int]) -> list[int]:
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        out += [b, e]
    return out


def _pool(x: torch.Tensor, a: Attrs, kind: str) -> torch.Tensor:
    kernel = a["kernel_shape"]
    if len(kernel) != 2:
        raise InputError(f"{kind} over {len(kernel)} spatial dimensions is not supported")
    stride = a.get("strides", [1, 1])
    begin, end = resolve_pads(x, a, kernel)
    ceil = bool(a.get("ceil_mode", 0))
    if kind == "MaxPool":
        dilation = a.get("dilations", [1, 1])
        if begin != end:
            x = F.pad(x, _torch_pad(begin, end), value=float("-inf"))
            begin = [0, 0]
        return F.max_pool2d(x, kernel, stride, begin, dilation, ceil_mode=ceil)
    include = bool(a.get("count_include_pad", 0))
    if begin != end:
        if not include and any(begin + end):
            raise InputError("AveragePool with asymmetric padding that is not counted is not "
                             "supported")
        x = F.pad(x, _torch_pad(begin, end))
        begin = [0, 0]
    return F.avg_pool2d(x, kernel, stride, begin, ceil_mode=ceil, count_include_pad=include)


def _axes(inputs: list, a: Attrs, index: int) -> list[int] | None:
    if "axes" in a:
        return list(a["axes"])
    v = _opt(inputs, index)
    return ints(v, "axes") if v is not None else None


def _reduce(fn: str) -> Callable[[list, Attrs], torch.Tensor]:
    def run(i: list, a: Attrs) -> torch.Tensor:
        x = tensor(i[0])
        axes = _axes(i, a, 1)
        keep = bool(a.get("keepdims", 1))
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.ndim))
        if fn == "mean":
            return x.mean(dim=axes, keepdim=keep)
        if fn == "sum":
            return x.sum(dim=axes, keepdim=keep)
        return x.amax(dim=axes, keepdim=keep)
    return run


def _reshape(i: list, a: Attrs) -> torch.Tensor:
    x = tensor(i[0])
    shape = ints(i[1], "Reshape shape")
    if not a.get("allowzero", 0):
        shape = [x.shape[k] if isinstance(s, int) and s == 0 else s for k, s in enumerate(shape)]
    return x.reshape(shape)


def _flatten(i: list, a: Attrs) -> torch.Tensor:
    x = tensor(i[0])
    axis = a.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    if axis == 0:
        return x.reshape(1, -1)
    x = torch.flatten(x, axis) if axis < x.ndim else x.unsqueeze(-1)
    return torch.flatten(x, 0, axis - 1)


def _slice(i: list, a: Attrs) -> torch.Tensor:
    x = tensor(i[0])
    starts, ends = ints(i[1], "Slice starts"), ints(i[2], "Slice ends")
    axes = ints(i[3], "Slice axes") if _opt(i, 3) is not None else list(range(len(starts)))
    steps = ints(i[4], "Slice steps") if _opt(i, 4) is not None else [1] * len(starts)
    idx: list[Any] = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if st < 1:
            raise InputError("Slice with a negative step is not supported")
        idx[ax] = slice(int(s), int(min(e, 1 << 62)), int(st))
    return x[tuple(idx)]


def _gather(i: list, a: Attrs) -> torch.Tensor:
    x = tensor(i[0])
    idx = static(i[1], "Gather indices").astype(np.int64)
    axis = a.get("axis", 0)
    idx = torch.as_tensor(np.where(idx < 0, idx + x.shape[axis], idx))
    if idx.ndim == 0:
        return x.select(axis, int(idx))
    flat = torch.index_select(x, axis, idx.reshape(-1))
    axis = axis + x.ndim if axis < 0 else axis
    return flat.reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1:])


def _pad(i: list, a: Attrs) -> torch.Tensor:
    x = tensor(i[0])
    pads = ints(i[1], "Pad pads") if "pads" not in a else list(a["pads"])
    value = _opt(i, 2)
    fill = scalar(value, "Pad value") if value is not None else 0.0
    axes = ints(i[3], "Pad axes") if _opt(i, 3) is not None else list(range(x.ndim))
    axes = [ax + x.ndim if ax < 0 else ax for ax in axes]
    begin = {ax: pads[k] for k, ax in enumerate(axes)}
    end = {ax: pads[k + len(axes)] for k, ax in enumerate(axes)}
    # F.pad lists pads from the last dimension backwards; leading all-zero dims can be omitted.
    first = min((ax for ax in range(x.ndim) if begin.get(ax, 0) or end.get(ax, 0)), default=None)
    if first is None:
        return x
    order = list(range(x.ndim - 1, first - 1, -1))
    spec = _torch_pad([begin.get(ax, 0) for ax in reversed(order)],
                      [end.get(ax, 0) for ax in reversed(order)])
    mode = a.get("mode", "constant")
    if mode == "constant":
        return F.pad(x, spec, value=fill)
    return F.pad(x, spec, mode={"reflect": "reflect", "edge": "replicate"}[mode])


def scalar(v: Value, what: str) -> float:
    """A one-element static input as a Python float."""
    return float(static(v, what).reshape(-1)[0])


def _clip(i: list, a: Attrs) -> torch.Tensor:
    x = tensor(i[0])
    lo, hi = _opt(i, 1), _opt(i, 2)
    lo = a.get("min") if lo is None else scalar(lo, "Clip min")
    hi = a.get("max") if hi is None else scalar(hi, "Clip max")
    return torch.clamp(x, min=lo, max=hi)


def _variadic(fn: Callable) -> Callable[[list, Attrs], torch.Tensor]:
    def run(i: list, a: Attrs) -> torch.Tensor:
        out = tensor(i[0])
        for v in i[1:]:
            out = fn(out, tensor(v, out))
        return out
    return run


def _operand(v: Value, like: torch.Tensor) -> Any:
    # A static 0-d constant stays a Python number (no tensor constant in the traced graph).
    if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype != object:
        return float(v) if like.is_floating_point() else v.item()
    return tensor(v, like)


def _binary(fn: Callable) -> Callable[[list, Attrs], torch.Tensor]:
    # ``fn`` is an ``operator`` function, so a Python-number first operand works too (rsub).
    def run(i: list, a: Attrs) -> torch.Tensor:
        first = next(v for v in i if isinstance(v, torch.Tensor))
        return fn(_operand(i[0], first), _operand(i[1], first))
    return run


def _softmax(fn: Callable) -> Callable[[list, Attrs], torch.Tensor]:
    return lambda i, a: fn(tensor(i[0]), dim=a.get("axis", -1))


def _unary(fn: Callable) -> Callable[[list, Attrs], torch.Tensor]:
    return lambda i, a: fn(tensor(i[0]))


def _layer_norm(i: list, a: Attrs) -> torch.Tensor:
    x = tensor(i[0])
    axis = a.get("axis", -1)
    axis = axis + x.ndim if axis < 0 else axis
    shape = tuple(x.shape[axis:])
    scale = tensor(i[1], x) if _opt(i, 1) is not None else None
    bias = tensor(i[2], x) if _opt(i, 2) is not None else None
    eps = float(a.get("epsilon", 1e-5))
    if (scale is None or tuple(scale.shape) == shape) and (bias is None
                                                           or tuple(bias.shape) == shape):
        return F.layer_norm(x, shape, scale, bias, eps)
    out = F.layer_norm(x, shape, None, None, eps)  # broadcast scale/bias: applied after
    out = out * scale if scale is not None else out
    return out + bias if bias is not None else out


def _expand(i: list, a: Attrs) -> torch.Tensor:
    x = tensor(i[0])
    shape = ints(i[1], "Expand shape")
    rank = max(x.ndim, len(shape))
    have = [1] * (rank - x.ndim) + list(x.shape)
    want = [1] * (rank - len(shape)) + list(shape)
    # ONNX Expand broadcasts both ways: a 1 in the shape keeps the input's dimension.
    target = [h if isinstance(w, int) and w == 1 else w for h, w in zip(have, want)]
    return x.reshape(have).expand(target)


def _where(i: list, a: Attrs) -> torch.Tensor:
    first = next(v for v in i[1:] if isinstance(v, torch.Tensor)) if any(
        isinstance(v, torch.Tensor) for v in i[1:]) else None
    cond = tensor(i[0]).to(torch.bool)
    return torch.where(cond, _operand(i[1], first) if first is not None else tensor(i[1]),
                       _operand(i[2], first) if first is not None else tensor(i[2]))


def _compare(fn: Callable) -> Callable[[list, Attrs], torch.Tensor]:
    def run(i: list, a: Attrs) -> torch.Tensor:
        first = next(v for v in i if isinstance(v, torch.Tensor))
        return fn(first if i[0] is first else tensor(i[0], first),
                  first if i[1] is first else tensor(i[1], first))
    return run


def _split(i: list, a: Attrs) -> list[torch.Tensor]:
    x = tensor(i[0])
    axis = a.get("axis", 0)
    if _opt(i, 1) is not None:
        sizes = ints(i[1], "Split sizes")
    elif "split" in a:
        sizes = list(a["split"])
    else:
        n = int(a.get("num_outputs", 0)) or 1
        size = -(-int(x.shape[axis]) // n)
        sizes = [size] * (n - 1) + [int(x.shape[axis]) - size * (n - 1)]
    return list(torch.split(x, sizes, dim=axis))


def _gelu(i: list, a: Attrs) -> torch.Tensor:
    return F.gelu(tensor(i[0]), approximate=a.get("approximate", "none"))


TENSOR_OPS: dict[str, Callable[[list, Attrs], Any]] = {
    "Identity": lambda i, a: i[0],
    "Dropout": lambda i, a: i[0],
    "Relu": _unary(torch.relu),
    "LeakyRelu": lambda i, a: F.leaky_relu(tensor(i[0]), a.get("alpha", 0.01)),
    "PRelu": lambda i, a: torch.where(tensor(i[0]) >= 0, tensor(i[0]),
                                      tensor(i[0]) * tensor(i[1], tensor(i[0]))),
    "Elu": lambda i, a: F.elu(tensor(i[0]), a.get("alpha", 1.0)),
    "Selu": _unary(F.selu),
    "Sigmoid": _unary(torch.sigmoid),
    "HardSigmoid": lambda i, a: torch.clamp(a.get("alpha", 0.2) * tensor(i[0])
                                            + a.get("beta", 0.5), 0.0, 1.0),
    "HardSwish": _unary(F.hardswish),
    "Gelu": _gelu,
    "Tanh": _unary(torch.tanh),
    "Softplus": _unary(F.softplus),
    "Mish": _unary(F.mish),
    "Erf": _unary(torch.erf),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Sqrt": _unary(torch.sqrt),
    "Reciprocal": _unary(torch.reciprocal),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Clip": _clip,
    "Add": _binary(operator.add),
    "Sub": _binary(operator.sub),
    "Mul": _binary(operator.mul),
    "Div": _binary(operator.truediv),
    # ONNX Mod: fmod=1 is C's fmod (the sign of the dividend; required for floats), fmod=0
    # Python's % (the sign of the divisor; integers only), as torch.fmod / torch.remainder.
    "Mod": lambda i, a: (torch.fmod if a.get("fmod", 0) else torch.remainder)(
        tensor(i[0]), tensor(i[1], tensor(i[0]))),
    "Pow": _binary(operator.pow),
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Sum": _variadic(torch.add),
    "MatMul": _binary(operator.matmul),
    "Gemm": lambda i, a: _gemm(i, a),
    "MaxPool": lambda i, a: _pool(tensor(i[0]), a, "MaxPool"),
    "AveragePool": lambda i, a: _pool(tensor(i[0]), a, "AveragePool"),
    "GlobalAveragePool": lambda i, a: tensor(i[0]).mean(dim=tuple(range(2, i[0].ndim)),
                                                        keepdim=True),
    "GlobalMaxPool": lambda i, a: tensor(i[0]).amax(dim=tuple(range(2, i[0].ndim)),
                                                    keepdim=True),
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": lambda i, a: tensor(i[0]).permute(
        *a.get("perm", list(range(i[0].ndim - 1, -1, -1)))),
    "Concat": lambda i, a: torch.cat([tensor(v) for v in i], dim=a["axis"]),
    "Squeeze": lambda i, a: (tensor(i[0]).squeeze(tuple(_axes(i, a, 1)))
                             if _axes(i, a, 1) else tensor(i[0]).squeeze()),
    "Unsqueeze": lambda i, a: _tensor_unsqueeze(tensor(i[0]), _axes(i, a, 1) or []),
    "Softmax": _softmax(torch.softmax),
    "LogSoftmax": _softmax(torch.log_softmax),
    "Slice": _slice,
    "Gather": _gather,
    "Pad": _pad,
    "Cast": lambda i, a: tensor(i[0]).to(_DTYPES[a["to"]]),
    "Shape": lambda i, a: np.array(list(tensor(i[0]).shape)[a.get("start", 0):a.get("end")],
                                   dtype=object),
    "ConstantOfShape": lambda i, a: _constant_of_shape(i, a),
    "LayerNormalization": _layer_norm,
    "Expand": _expand,
    "Where": _where,
    "Equal": _compare(torch.eq),
    "Less": _compare(torch.lt),
    "Greater": _compare(torch.gt),
    "Not": lambda i, a: torch.logical_not(tensor(i[0])),
    "Split": _split,
    "Tile": lambda i, a: tensor(i[0]).repeat(*ints(i[1], "Tile repeats")),
}


def _gemm(i: list, a: Attrs) -> torch.Tensor:
    first = next(v for v in i if isinstance(v, torch.Tensor))
    x, w = tensor(i[0], first), tensor(i[1], first)
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    out = a.get("alpha", 1.0) * (x @ w)
    c = _opt(i, 2)
    return out if c is None else out + a.get("beta", 1.0) * tensor(c, first)


def _tensor_unsqueeze(x: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    for ax in _norm_axes(axes, x.ndim + len(axes)):
        x = x.unsqueeze(ax)
    return x


def _constant_of_shape(i: list, a: Attrs) -> torch.Tensor:
    value = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
    return torch.full([int(s) for s in ints(i[0], "ConstantOfShape shape")],
                      value.reshape(-1)[0].item(), dtype=torch.as_tensor(value).dtype)


#: Operators handled by dedicated modules (weights become parameters/buffers), not here.
MODULE_OPS = ("Conv", "BatchNormalization", "Constant")

SUPPORTED_OPS = sorted(set(TENSOR_OPS) | set(MODULE_OPS))
