"""The meaning of the prefixes eq ne gt lt ge le sa eb ap as conditions on a target range.

This is the one statement of prefix semantics (R4 3.1.1.4.1): ``range_predicate`` turns a
prefix and a search range into alternatives of bounds on the target's ``low`` and ``high``
columns. The in-memory matcher evaluates them with ``RangePredicate.holds``; the SQL compiler
emits them as SQL; so the two cannot disagree.

Search range ``[sl, sh)``, target range ``[tl, th)``:
eq: ``tl >= sl and th <= sh`` (the search range contains the target); ne: not eq;
gt: ``th > sh``; lt: ``tl < sl``; ge: gt or eq; le: lt or eq; sa: ``tl >= sh``;
eb: ``th <= sl``; ap: the ranges overlap (the parser has already widened the search range).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

from fhir_server.search.model import Prefix

__all__ = ["Bound", "RangePredicate", "range_predicate"]

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Bound:
    """``<column> <op> <value>`` with column ``low`` or ``high`` of the target range."""

    column: str
    op: str
    value: float

    def holds(self, low: float, high: float) -> bool:
        """Return whether the target range ``[low, high)`` satisfies this bound."""
        target = low if self.column == "low" else high
        return _OPERATORS[self.op](target, self.value)


@dataclass(frozen=True)
class RangePredicate:
    """Alternatives (ORed) of bounds (ANDed), negated as a whole when ``negated``."""

    alternatives: tuple[tuple[Bound, ...], ...]
    negated: bool = False

    def holds(self, low: float, high: float) -> bool:
        """Return whether the target range ``[low, high)`` satisfies the predicate."""
        found = any(all(b.holds(low, high) for b in alt) for alt in self.alternatives)
        return found != self.negated


def range_predicate(prefix: Prefix, low: float, high: float) -> RangePredicate:
    """Return the conditions a target range must meet for ``prefix`` and search ``[low, high)``."""
    eq = (Bound("low", ">=", low), Bound("high", "<=", high))
    gt = (Bound("high", ">", high),)
    lt = (Bound("low", "<", low),)
    table: dict[Prefix, tuple[tuple[Bound, ...], ...]] = {
        Prefix.EQ: (eq,),
        Prefix.NE: (eq,),
        Prefix.GT: (gt,),
        Prefix.LT: (lt,),
        Prefix.GE: (gt, eq),
        Prefix.LE: (lt, eq),
        Prefix.SA: ((Bound("low", ">=", high),),),
        Prefix.EB: ((Bound("high", "<=", low),),),
        Prefix.AP: ((Bound("low", "<", high), Bound("high", ">", low)),),
    }
    return RangePredicate(table[prefix], negated=prefix is Prefix.NE)
