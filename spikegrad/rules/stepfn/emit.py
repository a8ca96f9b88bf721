"""The traced step as kernel source: Triton and CUDA C, from the same IR.

Both kernels follow torch's elementwise arithmetic in float32: divisions IEEE-rounded,
"tensor / Python scalar" as torch computes it on each device (the CPU divides, CUDA
multiplies by the float32 reciprocal), constants rounded to float32 as torch casts a Python
scalar, no FMA contraction (the launch options), and ``sigmoid(x) = 1 / (1 + exp(-x))``.
Transcendental functions (``exp``, ``log``, ``tanh``, ``sin``, ``cos``) are the device
library's, so they may differ from torch's in the last bits; tests compare within tolerance.
"""

from __future__ import annotations

from typing import Any

from spikegrad.rules.cupy_kernels.ctext import c_float
from spikegrad.rules.stepfn.graph import Graph, Stmt
from spikegrad.rules.triton_kernels.spec import f32, f32_div

__all__ = ["input_names", "triton_lines", "c_lines"]

_BIN_T = {"add": "+", "sub": "-", "mul": "*", "gt": ">", "ge": ">=", "lt": "<", "le": "<=",
          "eq": "==", "ne": "!=", "and": "&", "or": "|"}
_BIN_C = {**_BIN_T, "and": "&&", "or": "||"}


#: the other statements, as templates of their operands
_TRITON = {
    "neg": "(-{0})", "reciprocal": "tl.math.div_rn(1.0, {0})", "exp": "tl.exp({0})",
    "log": "tl.log({0})", "sqrt": "tl.math.sqrt_rn({0})",
    "rsqrt": "tl.math.div_rn(1.0, tl.math.sqrt_rn({0}))",
    "sigmoid": "tl.math.div_rn(1.0, 1.0 + tl.exp(-{0}))",
    "tanh": "(2.0 * tl.math.div_rn(1.0, 1.0 + tl.exp(-2.0 * {0})) - 1.0)",
    "abs": "tl.abs({0})", "floor": "tl.floor({0})", "ceil": "tl.ceil({0})", "sin": "tl.sin({0})",
    "cos": "tl.cos({0})", "maximum": "tl.maximum({0}, {1})", "minimum": "tl.minimum({0}, {1})",
    "where": "tl.where({0}, {1}, {2})", "not": "({0} == False)", "float": "({0}).to(tl.float32)",
    "copy": "{0}",
}
_C = {
    "neg": "(-{0})", "reciprocal": "(1.0f / {0})", "exp": "expf({0})", "log": "logf({0})",
    "sqrt": "sqrtf({0})", "rsqrt": "(1.0f / sqrtf({0}))", "sigmoid": "(1.0f / (1.0f + expf(-{0})))",
    "tanh": "tanhf({0})", "abs": "fabsf({0})", "floor": "floorf({0})", "ceil": "ceilf({0})",
    "sin": "sinf({0})", "cos": "cosf({0})", "maximum": "fmaxf({0}, {1})",
    "minimum": "fminf({0}, {1})", "where": "({0} ? {1} : {2})", "not": "(!{0})",
    "float": "({0} ? 1.0f : 0.0f)", "copy": "{0}",
}


def input_names(states: tuple[str, ...], backward: bool) -> dict[str, str]:
    """The kernel variables that hold a graph's inputs (both emitters use the same names):
    ``x``, the states, and for the backward graph their upstream gradients."""
    names = {"x": "in_x", **{s: f"in_{j}" for j, s in enumerate(states)}}
    if backward:
        names.update({"g_out": "in_g_out",
                      **{f"g_{s}": f"in_g_{j}" for j, s in enumerate(states)}})
    return names


def _t_lit(v: Any) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    return repr(f32(v))


def _t(v: Any, names: dict[str, str]) -> str:
    return names[v] if isinstance(v, str) else _t_lit(v)


def triton_expr(s: Stmt, names: dict[str, str], recip: bool) -> str:
    """One statement as a Triton expression (operands already named in ``names``)."""
    a = [_t(x, names) for x in s.args]
    op = s.op
    if op in _BIN_T:
        return f"({a[0]} {_BIN_T[op]} {a[1]})"
    if op == "div":
        den = s.args[1]
        if not isinstance(den, str):  # tensor / Python scalar, as torch on each device
            return f"({a[0]} * {_t_lit(f32_div(1.0, den))})" if recip else \
                f"tl.math.div_rn({a[0]}, {_t_lit(den)})"
        return f"tl.math.div_rn({a[0]}, {a[1]})"
    if op == "float" and not isinstance(s.args[0], str):
        return a[0]
    return _TRITON[op].format(*a)


def triton_lines(graph: Graph, names: dict[str, str], recip: bool) -> list[str]:
    """``name = expression`` lines of the graph's statements; ``names`` maps the graph's inputs
    to kernel variables and is extended with the statements' names."""
    lines = []
    for s in graph.body:
        var = s.name.replace("_e", "e_")
        lines.append(f"{var} = {triton_expr(s, names, recip)}")
        names[s.name] = var
    return lines


def _c(v: Any, names: dict[str, str]) -> str:
    if isinstance(v, str):
        return names[v]
    if isinstance(v, bool):
        return "true" if v else "false"
    return c_float(v)


def c_expr(s: Stmt, names: dict[str, str]) -> str:
    """One statement as a C expression (float32 arithmetic; ``SG_DIVS`` for scalar divisors)."""
    a = [_c(x, names) for x in s.args]
    op = s.op
    if op in _BIN_C:
        return f"({a[0]} {_BIN_C[op]} {a[1]})"
    if op == "div":
        den = s.args[1]
        if not isinstance(den, str):
            return f"SG_DIVS({a[0]}, {c_float(den)}, {c_float(f32_div(1.0, den))})"
        return f"({a[0]} / {a[1]})"
    return _C[op].format(*a)


def c_lines(graph: Graph, names: dict[str, str]) -> list[str]:
    """``const T name = expression;`` lines (``float`` or ``bool``)."""
    lines = []
    for s in graph.body:
        var = s.name.replace("_e", "e_")
        ctype = "bool" if s.kind == "b" else "float"
        lines.append(f"const {ctype} {var} = {c_expr(s, names)};")
        names[s.name] = var
    return lines
