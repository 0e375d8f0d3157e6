"""Sync node bodies as Daft expressions: traced, verified against Python, or left in Python.

    natives = plan_natives(plan, names, sample, setup)
    natives.expressions["add_one"]        # col("x") + lit(1), cast to the node's return type
    natives.reasons["clean"]              # "calls .translate(), which has no Daft expression"

A node runs natively when all of this holds (else it stays a Python function, and
`reasons` says why):
- it is a plain sync node (no batch, batch_size, async, nested pipeline), not opted out
  (`@node(native=False)`, `DaftEngine(native=False)`), not cached (a cached node keeps its
  per-row entries), with one output whose hint is int, float, str or bool;
- its inputs are the map's columns, outputs of other native nodes or scalar constants;
- its body is straight-line code: no branch or loop (`if`, `and`/`or`, a conditional
  expression, a comprehension), no `is`/`in`, no `try`, no f-string, and it reads no global
  but a scalar constant and the builtins `abs`, `round`, `min`, `max`. Such a body is traced
  by calling it once with `Traced` values standing in for its columns: operators (`+ - * /
  // % **`, comparisons, `& | ^ ~`, unary `-`) and the string methods of `_METHODS` build an
  expression; anything else raises `Untraceable`;
- run side by side with the Python function on the first rows of the data and on edge
  values (zero, negatives, halves, empty and non-ASCII strings, the sample's extremes, nulls
  when the sample has them), the expression gives exactly Python's results, and Python
  raises on none of them (a division by zero, a null into arithmetic: Python fails the
  row, Daft would not).
Verification covers what it sees: an int64 result that overflows beyond the sampled range
wraps in Daft where Python's int would not fit its column either, and a null first seen
after the sample gives null where Python fails the row; `native=False` keeps such a node
in Python.
"""

from __future__ import annotations

import builtins
import dis
import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import daft
import daft.functions
from daft import DataType, col

from ...plan import RunPlan, Step

SAMPLE_ROWS = 64  # the first rows of the data each native node is checked on

_SCALARS = (int, float, str, bool)
_NATIVE_TYPES = (DataType.int64(), DataType.float64(), DataType.string(), DataType.bool())

# string methods with a Daft expression of the same meaning (verified like everything else)
_METHODS = {
    "upper": lambda e: e.upper(),
    "lower": lambda e: e.lower(),
    "strip": lambda e: e.strip(),
    "lstrip": lambda e: e.lstrip(),
    "rstrip": lambda e: e.rstrip(),
    "capitalize": lambda e: e.capitalize(),
    "startswith": lambda e, prefix: e.startswith(_expression(prefix)),
    "endswith": lambda e, suffix: e.endswith(_expression(suffix)),
    "replace": lambda e, old, new: e.replace(_expression(old), _expression(new)),
}

# opcodes of anything but straight-line code (names differ across Python 3.10-3.13)
_CONTROL = {"FOR_ITER", "GET_ITER", "SEND", "YIELD_VALUE", "SETUP_FINALLY", "SETUP_WITH"}
_CONTROL |= {"BEFORE_WITH", "RAISE_VARARGS", "RERAISE", "IMPORT_NAME", "IMPORT_FROM"}
_IDENTITY = {"IS_OP", "CONTAINS_OP"}
_FORMAT = {"FORMAT_VALUE", "FORMAT_SIMPLE", "FORMAT_WITH_SPEC", "CONVERT_VALUE", "BUILD_STRING"}
_WRITES = {"STORE_GLOBAL", "DELETE_GLOBAL", "STORE_ATTR", "STORE_SUBSCR", "STORE_DEREF"}


class Untraceable(Exception):
    """A node body that cannot become a Daft expression; the message says why."""


@dataclass
class Natives:
    """Per node label: its expression (runs natively), or why it stays in Python."""

    expressions: dict[str, daft.Expression] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def why_python(self, steps: list[Step]) -> str:
        """Why these steps run in Python, as explain() shows it after the function's name."""
        reasons = [f"{s.label}: {self.reasons[s.label]}" for s in steps if s.label in self.reasons]
        return f" (python: {'; '.join(reasons)})" if reasons else ""


class Traced:
    """A value of a column, standing in for a node's argument while its body is traced:
    each operation on it builds a Daft expression instead of computing."""

    __slots__ = ("expr",)
    __hash__ = None  # type: ignore[assignment]  # == builds an expression

    def __init__(self, expr: daft.Expression):
        self.expr = expr

    def __bool__(self) -> bool:
        raise Untraceable("its body decides on a value (if, and, or, not)")

    def __getattr__(self, name: str) -> Any:
        method = _METHODS.get(name)
        if method is None:
            raise Untraceable(f"it calls .{name}(), which has no Daft expression here")
        return lambda *args: Traced(method(self.expr, *args))

    def __neg__(self) -> Traced:
        return Traced(self.expr.negate())

    def __pos__(self) -> Traced:
        return self

    def __abs__(self) -> Traced:
        return Traced(self.expr.abs())

    def __invert__(self) -> Traced:
        return Traced(~self.expr)

    def __round__(self, ndigits: int | None = None) -> Traced:
        rounded = self.expr.round(ndigits or 0)
        return Traced(rounded.cast(DataType.int64()) if ndigits is None else rounded)

    def __pow__(self, other: Any) -> Traced:
        return Traced(self.expr.power(_expression(other)))

    def __rpow__(self, other: Any) -> Traced:
        return Traced(_expression(other).power(self.expr))

    def _refuse(self, *_: Any) -> Any:
        raise Untraceable("it needs a Python value of a column (len, int, str, a loop...)")

    __len__ = __iter__ = __contains__ = __int__ = __float__ = __index__ = _refuse
    __str__ = __format__ = __getitem__ = _refuse


def _binary(operator: Callable[[Any, Any], Any], reflected: bool = False) -> Any:
    def apply(self: Traced, other: Any) -> Traced:
        if not isinstance(other, (Traced, *_SCALARS)):
            raise Untraceable(f"it combines a column with a {type(other).__name__}")
        left, right = (other, self) if reflected else (self, other)
        return Traced(operator(_expression(left), _expression(right)))

    return apply


for _name, _operator in {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "truediv": lambda a, b: a / b,
    "floordiv": lambda a, b: a // b,
    "mod": lambda a, b: a % b,
    "and": lambda a, b: a & b,
    "or": lambda a, b: a | b,
    "xor": lambda a, b: a ^ b,
}.items():
    setattr(Traced, f"__{_name}__", _binary(_operator))
    setattr(Traced, f"__r{_name}__", _binary(_operator, reflected=True))
for _name, _operator in {
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
}.items():
    setattr(Traced, f"__{_name}__", _binary(_operator))


def _expression(value: Any) -> daft.Expression:
    return value.expr if isinstance(value, Traced) else daft.lit(value)


def _extreme(name: str, better: Callable[[Any, Any], Any]) -> Callable[..., Traced]:
    """`min` or `max` of traced arguments: the first of the best, as Python picks it."""

    def pick(*values: Any) -> Traced:
        if len(values) < 2:
            raise Untraceable(f"{name}() of one iterable")
        best = values[0]
        for value in values[1:]:
            wins = better(_expression(value), _expression(best))
            chosen = daft.functions.when(wins, _expression(value))
            best = Traced(chosen.otherwise(_expression(best)))
        return best

    return pick


_BUILTINS = {
    "abs": abs,
    "round": round,
    "min": _extreme("min", lambda a, b: a < b),
    "max": _extreme("max", lambda a, b: a > b),
}


# -- which bodies can be traced ----------------------------------------------------------------


def untraceable_code(func: Callable[..., Any]) -> str | None:
    """Why `func`'s body is not straight-line code over its arguments, or None."""
    code = getattr(func, "__code__", None)
    if code is None or not isinstance(func, types.FunctionType):
        return "it is not a plain Python function"
    if getattr(code, "co_exceptiontable", b""):
        return "it has a try or with block"
    if any(isinstance(c, types.CodeType) for c in code.co_consts):
        return "it defines a function, lambda or comprehension"
    cells = dict(zip(code.co_freevars, func.__closure__ or (), strict=False))
    for instruction in dis.get_instructions(code):
        name, argument = instruction.opname, instruction.argval
        if "JUMP" in name or name in _CONTROL:
            return "it branches or loops (if, and/or, a conditional, a loop)"
        if name in _IDENTITY:
            return "it tests identity or membership (is, in)"
        if name in _FORMAT:
            return "it formats a string (f-string, format)"
        if name in _WRITES:
            return "it writes outside its own variables"
        if name == "LOAD_GLOBAL" or name == "LOAD_NAME":
            why = _global_read(func, argument)
            if why:
                return why
        if name in ("LOAD_DEREF", "LOAD_CLOSURE") and argument in cells:
            value = _cell_value(cells[argument])
            if not isinstance(value, _SCALARS):
                return f"it reads {argument!r}, a {type(value).__name__} from outside"
    return None


def _global_read(func: types.FunctionType, name: str) -> str | None:
    if name in _BUILTINS:
        return None
    value = func.__globals__.get(name, getattr(builtins, name, None))
    if isinstance(value, _SCALARS) and not callable(value):
        return None
    what = "calls" if callable(value) else "reads"
    return f"it {what} {name!r}, which tracing cannot follow"


def _cell_value(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def trace(func: types.FunctionType, arguments: dict[str, Any], by_name: bool) -> daft.Expression:
    """The expression `func` computes when its arguments are `Traced` columns or scalars.
    Raises Untraceable when the body does something an expression cannot."""
    scope = {**func.__globals__, **_BUILTINS}
    traced = types.FunctionType(
        func.__code__, scope, func.__name__, func.__defaults__, func.__closure__
    )
    traced.__kwdefaults__ = func.__kwdefaults__
    try:
        result = traced(**arguments) if by_name else traced(*arguments.values())
    except Untraceable:
        raise
    except Exception as error:  # an operation Daft's expressions do not take
        raise Untraceable(f"tracing raised {type(error).__name__}: {error}") from None
    if not isinstance(result, Traced):
        raise Untraceable("it returns a value that does not depend on its columns")
    return result.expr


# -- the plan's native nodes -------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A value name's column, its Daft type and its values in the sample; `expr` computes
    it from the frame's columns (a native node's output is its expression, so that native
    nodes fuse into one projection)."""

    name: str
    dtype: DataType
    values: list[Any]
    expr: daft.Expression | None = None

    def expression(self) -> daft.Expression:
        return col(self.name) if self.expr is None else self.expr


def plan_natives(
    plan: RunPlan,
    sources: dict[str, tuple[str, DataType]],
    sample: Callable[[], dict[str, list[Any]]],
    constants: dict[str, Any],
    output_types: Callable[[Step], dict[str, DataType]],
    cached: bool,
) -> Natives:
    """Which steps of `plan` run natively. `sources`: the value names held in the frame's
    columns (column name, type); `sample()`: the first rows of those columns, read once if
    some step needs them; `cached`: the engine has a cache (cached nodes stay in Python).
    Every traced step is checked in one Daft query."""
    natives = Natives()
    known = {name: Column(column, dtype, []) for name, (column, dtype) in sources.items()}
    checks: list[Check] = []
    sampled = False
    for step in plan.steps:
        reason = _candidate(step, known, constants, output_types, cached)
        if reason is None and not sampled:  # the first traceable step: read the sample
            values, sampled = sample(), True
            known = {n: replace(c, values=values[c.name]) for n, c in known.items()}
        if reason is None:
            try:
                dtype = output_types(step)[step.outputs[0]]
                check = Check.of(step, len(checks), known, constants, dtype)
            except Untraceable as why:
                reason = str(why)
            else:
                checks.append(check)
                (output,) = step.outputs
                known[output] = Column(output, check.dtype, check.sampled, check.expression)
                continue
        natives.reasons[step.label] = reason
    python = set()  # values computed in Python: a step reading one is not native
    for check, difference in zip(checks, _differences(checks), strict=True):
        step = check.step
        late = next((a for a in step.args if a in python), None)
        if late is not None:
            difference = f"its input {late!r} comes from a node that runs in Python"
        if difference is None:
            natives.expressions[step.label] = check.expression
        else:
            natives.reasons[step.label] = difference
            python.update(step.outputs)
    return natives


def _candidate(
    step: Step,
    known: dict[str, Column],
    constants: dict[str, Any],
    output_types: Callable[[Step], dict[str, DataType]],
    cached: bool,
) -> str | None:
    """Why `step` cannot be native before its body is traced, or None."""
    options = step.options
    if all(a in constants for a in step.args):
        return "it reads only constants: it runs once, on the driver"
    if not options.native:
        return "@node(native=False)"
    if step.nested is not None or step.is_async or options.batch or options.batch_size:
        return "not a plain sync node"
    if options.arrow_function is not None:
        return "a DualNode: its batch function runs"
    if cached and options.cache:
        return "cached: its entries are kept per row"
    if len(step.outputs) != 1:
        return "it has several outputs"
    if output_types(step)[step.outputs[0]] not in _NATIVE_TYPES:
        return "its return hint is not int, float, str or bool"
    for arg in step.args:
        if arg in constants:
            if not isinstance(constants[arg], _SCALARS):
                return f"its input {arg!r} is a {type(constants[arg]).__name__}"
        elif arg not in known:
            return f"its input {arg!r} comes from a node that runs in Python"
    return untraceable_code(step.node.func)


@dataclass
class Check:
    """A traced step, with the rows it is verified on and Python's results on them."""

    step: Step
    expression: daft.Expression  # over the plan's columns
    probe: daft.Expression  # the same over this check's own columns (the `columns`)
    dtype: DataType
    columns: dict[str, Column]  # verification column name -> its values on `rows`
    rows: list[dict[str, Any]]
    expected: list[Any]  # Python's result (or exception) per row
    sampled: list[Any]  # Python's results on the sample rows (inputs of the next steps)

    @classmethod
    def of(
        cls,
        step: Step,
        index: int,
        known: dict[str, Column],
        constants: dict[str, Any],
        dtype: DataType,
    ) -> Check:
        func = step.node.func
        by_name = not step.positional

        def traced(column: Callable[[str], daft.Expression]) -> daft.Expression:
            stand_ins = {
                a: constants[a] if a in constants else Traced(column(a)) for a in step.args
            }
            return trace(func, stand_ins, by_name).cast(dtype)

        rows, n = _rows(step, known, constants)
        own = {a: f"__check{index}_{a}" for a in step.args if a not in constants}
        columns = {own[a]: Column(own[a], known[a].dtype, [row[a] for row in rows]) for a in own}
        expected = [_python(func, row, by_name) for row in rows]
        expression = traced(lambda a: known[a].expression())
        probe = traced(lambda a: col(own[a]))
        return cls(step, expression, probe, dtype, columns, rows, expected, expected[:n])

    def difference(self, got: list[Any]) -> str | None:
        """The first row where Daft's `got` is not Python's result, said plainly."""
        for row, want, have in zip(self.rows, self.expected, got, strict=False):
            if isinstance(want, Exception):
                return f"Python raises {type(want).__name__} for {row}; Daft does not"
            if not _same(want, have):
                return f"for {row} Python gives {want!r}, Daft {have!r}"
        return None


def _rows(
    step: Step, known: dict[str, Column], constants: dict[str, Any]
) -> tuple[list[dict], int]:
    """The sample's rows, then one row per edge value of each column argument (the other
    arguments as in the first row); and how many rows the sample gave."""
    columns = [a for a in step.args if a not in constants]
    n = len(known[columns[0]].values) if columns else 0
    rows = [{a: known[a].values[i] for a in columns} for i in range(n)]
    first = rows[0] if rows else {a: _edges(known[a])[0] for a in columns}
    for arg in columns:
        rows += [{**first, arg: value} for value in _edges(known[arg])]
    fixed = {a: constants[a] for a in step.args if a in constants}
    return [{a: {**row, **fixed}[a] for a in step.args} for row in rows], n  # in call order


def _edges(column: Column) -> list[Any]:
    present = [v for v in column.values if v is not None]
    nulls = [None] if len(present) < len(column.values) else []
    extremes = [min(present), max(present)] if present else []
    if column.dtype == DataType.int64():
        return [0, 1, -1, 7, -7, *extremes, *nulls]
    if column.dtype == DataType.float64():
        return [0.0, -0.0, 0.5, 1.5, 2.5, -2.5, -1.0, *extremes, *nulls]
    if column.dtype == DataType.string():
        return ["", "a", " Mixed Case ", "straße", "ǅ", *extremes, *nulls]
    if column.dtype == DataType.bool():
        return [True, False, *nulls]
    raise Untraceable(f"its input {column.name!r} holds {column.dtype}")


def _python(func: Callable[..., Any], row: dict[str, Any], by_name: bool) -> Any:
    try:
        return func(**row) if by_name else func(*row.values())
    except Exception as error:
        return error


def _differences(checks: list[Check]) -> list[str | None]:
    """Each check's first difference from Python: every probe in one Daft query (each
    on its own when that query fails, to tell which one Daft cannot evaluate)."""
    if not checks:
        return []
    try:
        results = _evaluate(checks)
    except Exception:
        return [_evaluated_alone(check) for check in checks]
    return [check.difference(results[f"__out{i}"]) for i, check in enumerate(checks)]


def _evaluated_alone(check: Check) -> str | None:
    try:
        return check.difference(_evaluate([check])["__out0"])
    except Exception as error:
        return f"Daft could not evaluate it ({type(error).__name__})"


def _evaluate(checks: list[Check]) -> dict[str, list[Any]]:
    """The probes over one frame holding every check's columns (the shorter padded with
    their first row: extra rows compare nothing)."""
    import pyarrow as pa

    height = max(len(check.rows) for check in checks)
    data = {"__rows": pa.array(range(height))}
    for check in checks:
        for name, column in check.columns.items():
            values = column.values + column.values[:1] * (height - len(column.values))
            data[name] = pa.array(values, type=column.dtype.to_arrow_dtype())
    probes = [check.probe.alias(f"__out{i}") for i, check in enumerate(checks)]
    return daft.from_arrow(pa.table(data)).select(*probes).to_pydict()


def _same(want: Any, have: Any) -> bool:
    if want is None or have is None:
        return want is None and have is None
    if isinstance(want, float) or isinstance(have, float):
        if isinstance(want, bool) or isinstance(have, bool):
            return False
        if isinstance(want, float) and math.isnan(want):
            return isinstance(have, float) and math.isnan(have)
        return float(want) == have and type(want) in (int, float)
    return type(want) is type(have) and want == have
