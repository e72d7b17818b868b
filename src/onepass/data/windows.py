"""Training windows cut from series records (DeepAR's examples), with time features, in batches that resume exactly.

A window of a series ending at index e (exclusive) holds the target at e - L ... e - 1, L = history + context +
prediction: `history` points before the context feed the lagged inputs (the largest lag), the model unrolls over
the last context + prediction points. Positions before the series start are zeros marked unobserved, as are
missing values (NaN). Time features (`time_features`) and the series' dynamic features cover the unrolled steps.

Which windows. A series of T points gives one window per `prediction_length` points, stratified from its end:
window 0 ends at the last point (its prediction part is the series' last `prediction_length` points: the window a
test scores); window j >= 1 ends at a random point of the j-th stretch of `prediction_length` points before that.
The draws come from a generator seeded by the record's place in its input (file, line), so the same record always
gives the same windows: a resumed run, a replayed epoch (the epoch cache) and an uninterrupted run see the same
examples. Series shorter than prediction_length + 1 points give none (SageMaker ignores them too).

Mixing. Windows of `SHUFFLE_SERIES` consecutive series are shuffled together (a permutation seeded by the block's
first record) before they are batched: memory is bounded by the block, not by the number of series. A batch's
position is the start of the block its next window belongs to and how many of that block's windows were handed
out, so resuming re-reads the block, cuts and shuffles it again alike, and continues at the exact next window.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..errors import DataError, UsageError
from .batches import Batch, Examples, _prefetch
from .series import SeriesRecord

# Series whose windows are shuffled together. 64 series of M1 yearly (2.7 windows each at horizon 6: 484 windows of
# 181 series) fill more than a mini-batch of 128, so a batch mixes dozens of series; a block's memory is its windows
# (64 x windows x L floats, plus the features of their steps).
SHUFFLE_SERIES = 64
_SALT_WINDOWS, _SALT_SHUFFLE = 0x5EED_0001, 0x5EED_0002

UNITS = {"min": "min", "t": "min", "h": "h", "d": "d", "w": "w", "m": "m", "q": "q", "y": "y", "a": "y"}
# SageMaker's time features per frequency (minute: minute-of-hour ... day-of-year; month: month-of-year), each
# scaled to [-0.5, 0.5] as GluonTS does; quarterly and yearly are onepass's additions (GluonTS's choice).
FEATURES = {"min": ("minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year"),
            "h": ("hour_of_day", "day_of_week", "day_of_month", "day_of_year"),
            "d": ("day_of_week", "day_of_month", "day_of_year"),
            "w": ("day_of_month", "week_of_year"),
            "m": ("month_of_year",), "q": ("month_of_year",), "y": ()}
_SPAN = {"minute_of_hour": 60, "hour_of_day": 24, "day_of_week": 7, "day_of_month": 31, "day_of_year": 366,
         "week_of_year": 53, "month_of_year": 12}


@dataclass(frozen=True)
class Frequency:
    """A series' time step: `multiple` x `unit` (min, h, d, w, m, q, y), from SageMaker's `time_freq` (5min, H,
    D, W, M; also Q and Y)."""

    multiple: int
    unit: str

    @staticmethod
    def parse(text: str) -> "Frequency":
        m = re.fullmatch(r"\s*(\d*)\s*([A-Za-z]+)\s*", str(text))
        unit = UNITS.get(m.group(2).lower()) if m else None
        if unit is None or (m.group(1) and int(m.group(1)) < 1):
            raise UsageError(f"hyperparameter time_freq = {text!r} is invalid: expected an optional integer and a "
                             "unit: min, H, D, W, M (SageMaker's), Q or Y, e.g. 5min, H, D")
        return Frequency(int(m.group(1) or 1), unit)

    def lags(self) -> list[int]:
        """Lagged target values the model sees (DeepAR's: "for daily data, lags of 1-4 weeks and 1 year"): the
        last 7 steps always, then the seasonal ones (GluonTS's get_lags_for_frequency, with +-1 around each)."""
        k = self.multiple
        season = {"min": [60 // k, 120 // k, 1440 // k] if k < 60 else [],
                  "h": [24 // k, 48 // k, 168 // k] if k < 24 else [],
                  "d": [7 // k, 14 // k, 21 // k, 28 // k, 365 // k] if k < 7 else [],
                  "w": [4 // k, 8 // k, 52 // k] if k < 4 else [],
                  "m": [12 // k, 24 // k] if k < 12 else [], "q": [4 // k] if k < 4 else [], "y": []}[self.unit]
        lags = set(range(1, 8))
        for s in season:
            if s > 1:
                lags.update((s - 1, s, s + 1))
        return sorted(lags)

    def times(self, start, lo: int, hi: int) -> np.ndarray:
        """The times of steps lo .. hi - 1 after `start`: datetime64 in months (M, Q, Y) or minutes."""
        i = np.arange(lo, hi, dtype=np.int64) * self.multiple
        if self.unit in ("m", "q", "y"):
            return np.datetime64(start, "M") + i * {"m": 1, "q": 3, "y": 12}[self.unit]
        minutes = {"min": 1, "h": 60, "d": 1440, "w": 10080}[self.unit]
        return np.datetime64(start, "m") + (i * minutes).astype("m8[m]")

    def time_features(self, start, lo: int, hi: int) -> np.ndarray:
        """Time features of steps lo .. hi - 1 after `start` (negative steps lie before it): (hi - lo, k)."""
        names = FEATURES[self.unit]
        if not names:
            return np.zeros((hi - lo, 0), np.float32)
        t = self.times(start, lo, hi)
        day = t.astype("datetime64[D]")
        values = {}
        for name in names:
            if name == "minute_of_hour":
                v = (t - t.astype("datetime64[h]")).astype(np.int64)
            elif name == "hour_of_day":
                v = (t.astype("datetime64[h]") - day).astype(np.int64)
            elif name == "day_of_week":
                v = (day.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday: Monday is 0
            elif name == "day_of_month":
                v = (day - day.astype("datetime64[M]")).astype(np.int64)
            elif name == "day_of_year":
                v = (day - day.astype("datetime64[Y]")).astype(np.int64)
            elif name == "week_of_year":
                v = (day - day.astype("datetime64[Y]")).astype(np.int64) // 7
            else:
                v = t.astype("datetime64[M]").astype(np.int64) % 12
            values[name] = v / (_SPAN[name] - 1) - 0.5
        return np.stack([values[n] for n in names], 1).astype(np.float32)


@dataclass(frozen=True)
class WindowSpec:
    """How windows are cut: lengths, frequency, which record fields are used (None: ignored) and their sizes."""

    context_length: int
    prediction_length: int
    history: int  # points before the context: the largest lag
    freq: Frequency
    dynamic: int | None = None  # dynamic features used (None: ignored; -1: as many as the records hold)
    cardinality: tuple[int, ...] | None = None  # categories per cat field (None: cat ignored, unless auto_cat)
    auto_cat: bool = False  # cat used as the records hold it: any number of fields, codes not bounded

    @property
    def length(self) -> int:
        return self.history + self.context_length + self.prediction_length

    @property
    def steps(self) -> int:
        """The steps the model unrolls over: context and prediction."""
        return self.context_length + self.prediction_length

    def n_features(self, rec: SeriesRecord) -> int:
        """Features per step: time features, the age feature, dynamic features."""
        return len(FEATURES[self.freq.unit]) + 1 + self.n_dynamic(rec)

    def n_dynamic(self, rec: SeriesRecord) -> int:
        return rec.dynamic_feat.shape[0] if self.dynamic == -1 else (self.dynamic or 0)

    def check(self, rec: SeriesRecord, horizon: int = 0) -> None:
        """A record whose cat or dynamic features do not fit the model is an error naming it."""
        def bad(message: str, reason: str) -> DataError:
            return DataError(message, source=rec.path if rec.path != "-" else "<stdin>", line=rec.line, reason=reason)

        if self.cardinality is not None:
            if rec.cat.size != len(self.cardinality):
                raise bad(f"cat has {rec.cat.size} codes where the model has {len(self.cardinality)} categorical "
                          "features (cardinality)", "wrong field count")
            for j, (code, most) in enumerate(zip(rec.cat.tolist(), self.cardinality)):
                if most and code >= most:
                    raise bad(f"cat[{j}] = {code} is out of the cardinality {most} (codes 0 to {most - 1})", "bad cat")
        if self.dynamic is not None and self.dynamic >= 0 and rec.dynamic_feat.shape[0] != self.dynamic:
            raise bad(f"dynamic_feat has {rec.dynamic_feat.shape[0]} rows where the model has {self.dynamic} "
                      "(num_dynamic_feat)", "wrong field count")
        if self.n_dynamic(rec) and rec.dynamic_feat.shape[1] != rec.target.size + horizon:
            raise bad(f"dynamic_feat rows have {rec.dynamic_feat.shape[1]} values; forecasting needs "
                      f"len(target) + prediction_length = {rec.target.size + horizon}", "wrong length")


@dataclass
class WindowBatch(Batch):
    """A mini-batch of windows: `x` the target (n, L) with zeros where unobserved, `observed` (n, L) 1/0, `features`
    (n, context + prediction, k), `cat` (n, C) codes, `last` (n,) whether the window ends at its series' end."""

    observed: torch.Tensor | None = None
    features: torch.Tensor | None = None
    cat: torch.Tensor | None = None
    last: torch.Tensor | None = None


def training_ends(rec: SeriesRecord, spec: WindowSpec, round_: int = 0) -> np.ndarray:
    """The window ends of one record (see the module docstring): its last point first, then one per stretch; a
    later `round_` of the same epoch draws other points of the stretches."""
    T, P = rec.target.size, spec.prediction_length
    lowest = P + 1  # at least one point of context before the prediction part
    if T < lowest:
        return np.zeros(0, np.int64)
    k = math.ceil((T - lowest + 1) / P)
    top = T - P * np.arange(k)  # stretch j holds ends in (top_j - P, top_j], clipped at `lowest`
    low = np.maximum(top - P + 1, lowest)
    rng = np.random.default_rng([_SALT_WINDOWS, rec.file, rec.line] + ([round_] if round_ else []))
    ends = low + np.floor(rng.random(k) * (top - low + 1)).astype(np.int64)
    ends[0] = T
    return ends


def cut(rec: SeriesRecord, spec: WindowSpec, ends: np.ndarray, horizon: int = 0) -> dict[str, np.ndarray]:
    """Windows of `rec` ending at `ends` (exclusive), as arrays; `horizon` unobserved points follow the target (a
    forecast's window ends at T + horizon)."""
    L, S, T = spec.length, spec.steps, rec.target.size
    target = np.zeros(L + T + horizon, np.float32)
    target[L:L + T] = rec.target
    observed = np.zeros_like(target)
    observed[L:L + T] = ~np.isnan(rec.target)
    target[np.isnan(target)] = 0.0
    feats = np.zeros((S + T + horizon, spec.n_features(rec)), np.float32)  # steps -S .. T + horizon - 1
    n_time = len(FEATURES[spec.freq.unit])
    feats[:, :n_time] = spec.freq.time_features(rec.start, -S, T + horizon)
    feats[:, n_time] = np.log10(2.0 + np.maximum(np.arange(-S, T + horizon), 0))  # age (GluonTS's)
    if spec.n_dynamic(rec):
        feats[S:, n_time + 1:] = rec.dynamic_feat[:, :T + horizon].T
    # window e: target[e - L + L : e + L] = target_padded[e : e + L]; features of steps e - S .. e - 1
    win = np.lib.stride_tricks.sliding_window_view
    cat = rec.cat if spec.cardinality is not None or spec.auto_cat else np.zeros(0, np.int64)
    return {"target": win(target, L)[ends], "observed": win(observed, L)[ends],
            "features": np.moveaxis(win(feats, S, axis=0)[ends], 2, 1),
            "cat": np.broadcast_to(cat, (len(ends), cat.size)), "last": ends == T + horizon}


def stack(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def to_batch(w: dict[str, np.ndarray], position: dict[str, Any] | None = None,
             fraction: float | None = None) -> WindowBatch:
    t = lambda a, dtype: torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))  # noqa: E731
    return WindowBatch(t(w["target"], np.float32), position=position or {}, fraction=fraction,
                       observed=t(w["observed"], np.float32), features=t(w["features"], np.float32),
                       cat=t(w["cat"], np.int64), last=t(w["last"], np.bool_))


def block_windows(records: list[SeriesRecord], spec: WindowSpec,
                  on_bad: Callable[[DataError], None] | None = None, round_: int = 0) -> dict[str, np.ndarray] | None:
    """Every training window of a block of records, shuffled together (seeded by the block's first record); a record
    that does not fit the model raises, or with `on_bad` is handed to it and left out."""
    parts = []
    for rec in records:
        try:
            spec.check(rec)
        except DataError as e:
            if on_bad is None:
                raise
            on_bad(e)
            continue
        ends = training_ends(rec, spec, round_)
        if len(ends):
            parts.append(cut(rec, spec, ends))
    if not parts:
        return None
    w = stack(parts)
    seed = [_SALT_SHUFFLE, records[0].file, records[0].line] + ([round_] if round_ else [])
    order = np.random.default_rng(seed).permutation(len(w["last"]))
    return {k: v[order] for k, v in w.items()}


class SeriesWindows(Examples):
    """A stream's series records as batches of training windows (see the module docstring). An epoch hands out at
    least `min_batches` batches: a pass that gives fewer windows (few series) is followed by further rounds over
    the same series, each drawing other window ends, until it has; a stream of many series is read once."""

    def __init__(self, stream, spec: WindowSpec, min_batches: int = 0):
        super().__init__(stream)
        self.spec = spec
        self.min_batches = min_batches

    def batches(self, batch_size: int, start: dict[str, Any] | None = None, prefetch: int = 2) -> Iterator[Batch]:
        if batch_size < 1:
            raise UsageError(f"--mini-batch-size must be at least 1, got {batch_size}")
        it = self._batches(batch_size, start)
        return _prefetch(it, prefetch) if prefetch > 0 else it

    def _batches(self, batch_size: int, start: dict[str, Any] | None) -> Iterator[WindowBatch]:
        skip = int(start.get("skip", 0)) if start else 0
        handed = int(start.get("records", 0)) if start else 0
        round_ = int(start.get("round", 0)) if start else 0
        sizes = [i.size or 0 for i in self.stream.inputs]
        total = self.stream.total_bytes
        tally = self.stream.bad  # on_bad_record skip: bad records are counted, once, even across a resume
        # bad records after the resume point that the checkpoint counted already, and whether the series of the
        # block it resumes in were counted (a resume mid-block re-reads the block)
        drop = int(start.get("bad_skip", 0)) if start and tally is not None else 0
        recount = skip > 0
        after_first = after_last = 0  # bad records read since the block's first series, since its last

        def on_bad(e: DataError) -> None:
            nonlocal drop, after_first, after_last
            after_first, after_last = after_first + 1, after_last + 1
            if round_:  # a later round re-reads records the first one counted
                return
            if drop:
                drop -= 1
            else:
                tally.add(e)

        pending: list[dict[str, np.ndarray]] = []
        have = 0
        n_block = 0

        def emit(w: dict[str, np.ndarray], at: SeriesRecord, taken: int, nxt: SeriesRecord) -> WindowBatch:
            nonlocal handed
            handed += len(w["last"])
            # the block (starting at `at`) is handed out up to `taken`; when all of it is, the next block starts
            # after its last record `nxt`
            inside = taken < n_block
            where = at.position if inside else nxt.next_position
            position = {**where, "skip": taken if inside else 0, "records": handed, "round": round_}
            fraction = (sum(sizes[:nxt.file]) + nxt.end) / total if total else None
            bad = None
            if tally is not None:
                tally.check()
                bad = tally.to_meta()
                position["bad_skip"] = after_first if inside else after_last
            return replace(to_batch(w, position, fraction), bad=bad)

        last_block: list[SeriesRecord] = []
        while True:
            whole = not (start and start.get("file") is not None)  # this round reads the series from the first
            records = self.stream.series(start=None if whole else start,
                                         on_bad=on_bad if tally is not None else None)
            block: list[SeriesRecord] = []
            cut_any = False
            for rec in _chain(records):
                if rec is not None:
                    if not block:
                        after_first = 0
                    after_last = 0
                    block.append(rec)
                    if len(block) < SHUFFLE_SERIES:
                        continue
                if not block:
                    break
                unfit = after_first
                w = block_windows(block, self.spec, on_bad if tally is not None else None, round_)
                if tally is not None and not round_:  # the block's series, less those that did not fit (bad)
                    tally.records += 0 if recount else len(block) - (after_first - unfit)
                    recount = False
                n_block = 0 if w is None else len(w["last"])
                cut_any = cut_any or n_block > 0
                s = min(skip, n_block)
                skip -= s
                while s < n_block:
                    take = min(batch_size - have, n_block - s)
                    pending.append({k: v[s:s + take] for k, v in w.items()})
                    s, have = s + take, have + take
                    if have == batch_size:
                        yield emit(stack(pending), block[0], s, block[-1])
                        pending, have = [], 0
                last_block = block
                block = []
                if rec is None:
                    break
            # another round while the epoch is short of its batches (a resumed round that had nothing left to read
            # goes on too: `handed` counts the epoch's windows so far)
            if handed + have >= self.min_batches * batch_size or (whole and not cut_any):
                break
            round_, start, skip, recount = round_ + 1, None, 0, False
        if have:
            yield emit(stack(pending), last_block[0], n_block, last_block[-1])
        if tally is not None:
            tally.check(at_end=True)


def _chain(records: Iterator[SeriesRecord]) -> Iterator[SeriesRecord | None]:
    """The records, then None (the end: the last, partial block is cut then)."""
    yield from records
    yield None
