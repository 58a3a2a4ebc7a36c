"""A weighted choice over a fixed table, drawn from a caller's `random.Random`."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["WeightedChoice"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WeightedChoice(Generic[T]):
    """Values with relative weights; cumulative weights are computed once."""

    values: tuple[T, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, pairs: Sequence[tuple[T, float]]) -> WeightedChoice[T]:
        """Build from (value, weight) pairs; weights need not sum to 1."""
        values = tuple(value for value, _ in pairs)
        cumulative = tuple(itertools.accumulate(weight for _, weight in pairs))
        return cls(values, cumulative)

    def draw(self, rng: random.Random) -> T:
        """One value, with probability proportional to its weight."""
        point = rng.random() * self.cumulative[-1]
        return self.values[bisect.bisect_right(self.cumulative, point)]
