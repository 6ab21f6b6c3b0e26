"""The statistics of a sweep over seeds: a variant's mean with its t-interval, and a paired
comparison of two variants trained on the same seeds.

Intervals are Student-t intervals over training seeds (not a bootstrap: with 3–5 seeds a
bootstrap's interval is too narrow, since it never sees more spread than the seeds show).
Paired: the difference variant − baseline is taken seed by seed (same seed: the same data
order, and the same initial parameters where the shapes agree), so the seed-to-seed
spread the two share cancels out.
"""

import math
import statistics
from typing import NamedTuple

from scipy import stats

LOWER_IS_BETTER = {"fid", "fid_fmnist", "intra_fid"}


class Interval(NamedTuple):
  n: int
  mean: float
  sd: float  # over seeds (nan for n < 2)
  se: float  # sd / sqrt(n)
  low: float  # the two-sided `level` t-interval of the mean (nan for n < 2)
  high: float


def t_quantile(level: float, dof: int) -> float:
  return float(stats.t.ppf(0.5 + level / 2, dof))


def interval(values, level: float = 0.95) -> Interval:
  values = [float(v) for v in values]
  n = len(values)
  if n == 0:
    raise ValueError("no values")
  mean = statistics.fmean(values)
  if n < 2:
    return Interval(n, mean, math.nan, math.nan, math.nan, math.nan)
  sd = statistics.stdev(values)
  se = sd / math.sqrt(n)
  half = t_quantile(level, n - 1) * se
  return Interval(n, mean, sd, se, mean - half, mean + half)


def paired(variant: dict, baseline: dict, level: float = 0.95) -> Interval | None:
  """The interval of variant − baseline over the seeds both have ({seed: value} each)."""
  seeds = sorted(set(variant) & set(baseline))
  if not seeds:
    return None
  return interval([variant[s] - baseline[s] for s in seeds], level)


def seeds_to_resolve(diff: Interval, level: float = 0.95, most: int = 1000) -> int | None:
  """The fewest seeds whose interval would exclude 0, if the mean difference and the spread
  of the differences stay as measured (None: more than ``most``, or no spread measured)."""
  if diff.n < 2 or not math.isfinite(diff.sd) or diff.mean == 0:
    return None
  if diff.sd == 0:
    return 2
  for n in range(2, most + 1):
    if t_quantile(level, n - 1) * diff.sd / math.sqrt(n) < abs(diff.mean):
      return n
  return None


def verdict(metric: str, diff: Interval | None, baseline_name: str, level: float = 0.95) -> str:
  """Whether the interval of the difference excludes 0, in words, with the better side."""
  if diff is None:
    return f"no common seeds with {baseline_name}"
  if diff.n < 2:
    return "one seed: no interval"
  lower = metric in LOWER_IS_BETTER
  if diff.low > 0 or diff.high < 0:
    better = (diff.high < 0) == lower
    return f"{'better' if better else 'worse'} than {baseline_name}: the {level:.0%} interval excludes 0"
  need = seeds_to_resolve(diff, level)
  more = f"~{need} seeds would resolve a difference this size" if need else "no resolvable difference"
  return f"not resolved: the interval includes 0 ({more})"


def fmt(x: float | None) -> str:
  """3 decimals below 10 (accuracies, coverage), 1 above (FIDs)."""
  if x is None or not math.isfinite(x):
    return "–"
  return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"
