"""Trace a rule's step and its backward once per configuration, into a small elementwise IR.

:func:`trace` runs ``make_fx`` on the step (forward) and on its vector-Jacobian product
(``torch.autograd.grad`` through the step: the spike function's own backward included), on
float32 tensors of one shape. Every aten operation of both graphs must be one the kernel
generator covers (:data:`OPS`); anything else raises :class:`UnsupportedOperation` naming it,
so a rule that cannot be fused is known at construction, never at the first training step.

The IR (:class:`Graph`) is a list of :class:`Stmt` in SSA form: each names one value, its
operation (one of :data:`OPS`), its operands (earlier values, inputs or Python constants) and
its kind (``"f"``: float32, ``"b"``: boolean). In-place aten operations (``pow_``,
``sigmoid_``) become a new value that later reads of the mutated tensor see.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Any

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from spikegrad.rules.stepfn.contract import StepRule, check_rule

__all__ = ["UnsupportedOperation", "Stmt", "Graph", "Traced", "trace", "OPS"]


class UnsupportedOperation(ValueError):
    """The step uses an operation the kernel generator does not cover."""


#: every operation of the IR, by name, with its number of operands (tensors or numbers) and its
#: result kind ("f", "b", or None for the kind of the first operand)
OPS: dict[str, tuple[int, str | None]] = {
    "add": (2, "f"), "sub": (2, "f"), "mul": (2, "f"), "div": (2, "f"), "neg": (1, "f"),
    "reciprocal": (1, "f"), "exp": (1, "f"), "log": (1, "f"), "sqrt": (1, "f"),
    "rsqrt": (1, "f"), "sigmoid": (1, "f"), "tanh": (1, "f"), "abs": (1, "f"),
    "floor": (1, "f"), "ceil": (1, "f"), "sin": (1, "f"), "cos": (1, "f"),
    "maximum": (2, "f"), "minimum": (2, "f"), "where": (3, "f"),
    "gt": (2, "b"), "ge": (2, "b"), "lt": (2, "b"), "le": (2, "b"), "eq": (2, "b"),
    "ne": (2, "b"), "and": (2, "b"), "or": (2, "b"), "not": (1, "b"),
    "float": (1, "f"), "copy": (1, None),
}


@dataclasses.dataclass(frozen=True)
class Stmt:
    name: str
    op: str
    args: tuple[Any, ...]  # value names (str) or Python numbers/bools
    kind: str


@dataclasses.dataclass(frozen=True)
class Graph:
    """``inputs`` (names, all float32), the statements, and ``outputs`` (value names, or
    Python numbers for outputs that do not depend on any input)."""

    inputs: tuple[str, ...]
    body: tuple[Stmt, ...]
    outputs: tuple[Any, ...]

    def kind(self, value: Any) -> str:
        if isinstance(value, str):
            if value in self.inputs:
                return "f"
            return next(s.kind for s in self.body if s.name == value)
        return "b" if isinstance(value, bool) else "f"

    @property
    def ops(self) -> set[str]:
        return {s.op for s in self.body}


@dataclasses.dataclass(frozen=True)
class Traced:
    """A rule's two graphs: ``forward(x, *state) -> (out, *new_state)`` and
    ``backward(x, *state, g_out, *g_new_state) -> (g_x, *g_state)``."""

    rule: StepRule
    forward: Graph
    backward: Graph


_CMP = {"gt", "ge", "lt", "le", "eq", "ne"}
_UNARY = {"neg", "reciprocal", "exp", "log", "sqrt", "rsqrt", "sigmoid", "tanh", "abs",
          "floor", "ceil", "sin", "cos"}
_IDENTITY = {"alias", "clone", "detach", "lift_fresh_copy", "contiguous", "view_as_real"}


class _Builder:
    def __init__(self, where: str) -> None:
        self.where = where
        self.body: list[Stmt] = []
        self.env: dict[Any, Any] = {}
        self.kinds: dict[str, str] = {}

    def kind(self, v: Any) -> str:
        if isinstance(v, str):
            return self.kinds[v]
        return "b" if isinstance(v, bool) else "f"

    def emit(self, op: str, *args: Any) -> str:
        kind = OPS[op][1] or self.kind(args[0])
        if op == "where":
            kind = "f" if "f" in (self.kind(args[1]), self.kind(args[2])) else "b"
        name = f"_e{len(self.body)}"
        self.body.append(Stmt(name, op, args, kind))
        self.kinds[name] = kind
        return name

    def f(self, v: Any) -> Any:
        """``v`` as a float operand (booleans converted, as torch promotes them)."""
        if isinstance(v, bool):
            return float(v)
        if isinstance(v, (int, float)):
            return float(v)
        return self.emit("float", v) if self.kind(v) == "b" else v

    def arg(self, a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return self.env[a]
        if a is None or isinstance(a, (bool, int, float)):
            return a
        if isinstance(a, (list, tuple)) and len(a) == 1 and isinstance(a[0], torch.fx.Node):
            return [self.env[a[0]]]  # one index tensor (a boolean mask: index, index_put)
        raise UnsupportedOperation(f"{self.where}: operand {a!r} ({type(a).__name__}) is not "
                                   "a tensor of the step or a number")

    def unsupported(self, node: torch.fx.Node, why: str = "") -> UnsupportedOperation:
        return UnsupportedOperation(
            f"{self.where} uses {node.target}{': ' + why if why else ''}, which the kernel "
            "generator does not cover (it takes elementwise arithmetic, comparisons, where, "
            "exp/log/sigmoid/tanh/sqrt and type conversions of float32/bool); the rule still "
            "runs on the torch path")

    def node(self, node: torch.fx.Node) -> None:
        target = node.target
        if not isinstance(target, torch._ops.OpOverload):
            if target is operator.getitem:
                raise self.unsupported(node, "tuple outputs inside the step")
            raise self.unsupported(node)
        packet = target.overloadpacket.__name__
        inplace = packet.endswith("_") and not packet.startswith("_")
        base = packet.rstrip("_") if inplace else packet
        args = [self.arg(a) for a in node.args]
        kwargs = {k: self.arg(v) if isinstance(v, torch.fx.Node) else v
                  for k, v in node.kwargs.items()}
        result = self._op(node, base, args, kwargs)
        self.env[node] = result
        if inplace and isinstance(node.args[0], torch.fx.Node):
            self.env[node.args[0]] = result  # later reads see the mutated tensor

    def _op(self, node: torch.fx.Node, base: str, args: list[Any], kw: dict[str, Any]) -> Any:
        f = self.f
        if base in _IDENTITY:
            return args[0]
        if base in ("add", "sub", "rsub"):
            alpha = kw.get("alpha", args[2] if len(args) > 2 else 1)
            a, b = f(args[0]), f(args[1])
            if alpha != 1:
                b = self.emit("mul", b, float(alpha))
            return self.emit("sub", b, a) if base == "rsub" else self.emit(base, a, b)
        if base == "mul":
            return self.emit("mul", f(args[0]), f(args[1]))
        if base == "div":
            if kw.get("rounding_mode") is not None:
                raise self.unsupported(node, f"rounding_mode={kw['rounding_mode']!r}")
            return self.emit("div", f(args[0]), f(args[1]))
        if base in _UNARY:
            return self.emit(base, f(args[0]))
        if base == "pow":
            base_v, p = args[0], args[1]
            if isinstance(base_v, str) and isinstance(p, (int, float)) and float(p).is_integer() \
                    and 1 <= abs(p) <= 8:
                out = f(base_v)
                for _ in range(int(abs(p)) - 1):
                    out = self.emit("mul", out, f(base_v))
                return self.emit("reciprocal", out) if p < 0 else out
            if isinstance(base_v, str) and p == 0.5:
                return self.emit("sqrt", f(base_v))
            raise self.unsupported(node, f"exponent {p!r} (integers 1..8 and 0.5 only)")
        if base in ("relu",):
            return self.emit("maximum", f(args[0]), 0.0)
        if base in ("maximum", "minimum"):
            return self.emit(base, f(args[0]), f(args[1]))
        if base in ("clamp", "clamp_min", "clamp_max"):
            out = f(args[0])
            lo = args[1] if base in ("clamp", "clamp_min") and len(args) > 1 else None
            hi = args[2] if base == "clamp" and len(args) > 2 else (
                args[1] if base == "clamp_max" else None)
            lo, hi = kw.get("min", lo), kw.get("max", hi)
            if lo is not None:
                out = self.emit("maximum", out, f(lo))
            if hi is not None:
                out = self.emit("minimum", out, f(hi))
            return out
        if base in _CMP:
            a, b = args[0], args[1]
            if self.kind(a) == "b" or self.kind(b) == "b":
                a, b = f(a), f(b)
            return self.emit(base, a, b)
        if base == "where":
            cond, a, b = args
            if self.kind(cond) != "b":
                cond = self.emit("ne", cond, 0.0)
            if self.kind(a) != self.kind(b):
                a, b = f(a), f(b)
            return self.emit("where", cond, a, b)
        if base in ("logical_and", "bitwise_and", "logical_or", "bitwise_or"):
            a, b = (self._bool(x) for x in args[:2])
            return self.emit("and" if "and" in base else "or", a, b)
        if base in ("logical_not", "bitwise_not"):
            return self.emit("not", self._bool(args[0]))
        if base in ("_to_copy", "to", "type_as"):
            dtype = kw.get("dtype")
            if dtype in (None, torch.float32, torch.float64, torch.float16, torch.bfloat16):
                return f(args[0])
            if dtype is torch.bool:
                return self._bool(args[0])
            raise self.unsupported(node, f"conversion to {dtype}")
        if base == "scalar_tensor":  # a 0-dim constant (where's backward uses one)
            return bool(args[0]) if kw.get("dtype") is torch.bool else float(args[0])
        if base in ("zeros_like", "ones_like", "full_like", "fill"):
            value = {"zeros_like": 0.0, "ones_like": 1.0}.get(base, args[1] if len(args) > 1
                                                              else kw.get("fill_value"))
            dtype = kw.get("dtype")
            if dtype is torch.bool:
                return bool(value)
            return self.emit("copy", float(value)) if base != "fill" else float(value)
        if base == "sigmoid_backward":  # grad * y * (1 - y)
            g, y = f(args[0]), f(args[1])
            return self.emit("mul", self.emit("mul", g, y), self.emit("sub", 1.0, y))
        if base == "tanh_backward":  # grad * (1 - y^2)
            g, y = f(args[0]), f(args[1])
            return self.emit("mul", g, self.emit("sub", 1.0, self.emit("mul", y, y)))
        if base == "threshold_backward":  # where(x <= threshold, 0, grad)
            g, x, thr = f(args[0]), f(args[1]), args[2]
            return self.emit("where", self.emit("le", x, float(thr)), 0.0, g)
        if base in ("index", "index_put"):  # x[mask] (kept in place) and x[mask] = values
            mask = args[1][0] if isinstance(args[1], list) else None
            if mask is None or self.kind(mask) != "b":
                raise self.unsupported(node, "indexing other than by one boolean mask")
            if base == "index":
                return args[0]
            if kw.get("accumulate", args[3] if len(args) > 3 else False):
                raise self.unsupported(node, "index_put with accumulate=True")
            return self.emit("where", mask, f(args[2]), f(args[0]))
        if base == "masked_fill":
            x, mask, value = f(args[0]), self._bool(args[1]), args[2]
            return self.emit("where", mask, f(value), x)
        raise self.unsupported(node)

    def _bool(self, v: Any) -> Any:
        if isinstance(v, (bool, int, float)):
            return bool(v)
        return v if self.kind(v) == "b" else self.emit("ne", v, 0.0)


def _to_graph(gm: torch.fx.GraphModule, inputs: tuple[str, ...], where: str) -> Graph:
    b = _Builder(where)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, name in zip(placeholders, inputs, strict=True):
        b.env[node] = name
        b.kinds[name] = "f"
    outputs: tuple[Any, ...] = ()
    for node in gm.graph.nodes:
        if node.op == "call_function":
            b.node(node)
        elif node.op == "get_attr":
            value = getattr(gm, node.target)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise UnsupportedOperation(
                    f"{where} holds a tensor constant ({node.target}, shape "
                    f"{tuple(getattr(value, 'shape', ()))}): the kernel generator takes "
                    "hyperparameters as Python numbers (fields of the rule)")
            b.env[node] = value.item()  # a one-element constant is a number
        elif node.op == "output":
            flat = node.args[0]
            outputs = tuple(b.env[o] if isinstance(o, torch.fx.Node) else
                            (0.0 if o is None else o) for o in flat)
    # outputs are float32 tensors: a boolean output is converted
    outputs = tuple(b.f(o) if isinstance(o, str) and b.kind(o) == "b" else o for o in outputs)
    live = {o for o in outputs if isinstance(o, str)}
    for stmt in reversed(b.body):  # keep what an output needs, so no dead code is emitted
        if stmt.name in live:
            live.update(a for a in stmt.args if isinstance(a, str))
    return Graph(inputs, tuple(st for st in b.body if st.name in live), outputs)


def _sample(n: int = 8) -> torch.Tensor:
    return torch.linspace(-1.5, 1.5, n, dtype=torch.float32)


@functools.lru_cache(maxsize=256)
def trace(rule: StepRule) -> Traced:
    """Both graphs of ``rule`` (cached per configuration); raises
    :class:`UnsupportedOperation` naming the first operation not covered, or ``ValueError``
    where the step is not elementwise (an output of another shape)."""
    rule = check_rule(rule)
    k = len(rule.states)
    names = ("x", *rule.states)

    def forward(x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, new = rule.step(x, tuple(state), rule)
        new = tuple(new)
        if len(new) != k:
            raise ValueError(f"{rule.name}.step returned {len(new)} states, "
                             f"its states are {rule.states}")
        for what, t in (("its output", out), *zip(rule.states, new, strict=True)):
            if not isinstance(t, torch.Tensor) or t.shape != x.shape:
                raise ValueError(f"{rule.name}.step: {what} must be a tensor of the input's "
                                 f"shape (the step is elementwise), got "
                                 f"{getattr(t, 'shape', type(t).__name__)}")
        return (out, *new)

    def backward(x: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state, grads = rest[:k], rest[k:]
        ins = [t.detach().requires_grad_(True) for t in (x, *state)]
        with torch.enable_grad():
            outs = forward(*ins)
            pairs = [(o, g) for o, g in zip(outs, grads, strict=True) if o.requires_grad]
            if not pairs:
                return tuple(torch.zeros_like(x) for _ in ins)
            got = torch.autograd.grad([o for o, _ in pairs], ins, [g for _, g in pairs],
                                      allow_unused=True)
        return tuple(torch.zeros_like(x) if g is None else g for g in got)

    sample = [_sample() for _ in range(1 + k)]
    where = f"{rule.name}.step"
    try:
        with torch.no_grad():
            fwd = make_fx(forward)(*sample)
        bwd = make_fx(backward)(*sample, *[_sample() for _ in range(1 + k)])
    except (UnsupportedOperation, ValueError, TypeError):
        raise
    except Exception as e:  # noqa: BLE001 - whatever the step does that cannot be traced
        raise UnsupportedOperation(f"{where} could not be traced on float32 samples "
                                   f"({type(e).__name__}: {str(e).splitlines()[0][:300]})"
                                   ) from e
    grads = ("g_out", *(f"g_{s}" for s in rule.states))
    return Traced(rule, _to_graph(fwd, names, where),
                  _to_graph(bwd, (*names, *grads), f"the backward of {where}"))
