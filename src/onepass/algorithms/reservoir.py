"""A bounded, mergeable, weighted sample of records (dense rows or CSR rows): priority sampling under a byte budget.

Used to keep held-out records that the finished models are scored on (the linear learner's model and threshold
choice; factorization machines will use it the same way). Every record offered gets a priority q = w / u, with w
its weight and u in (0, 1) a fixed hash of its position (so a resumed run offers the same priorities), and the
sample is the records of highest priority that fit the budget (Duffield, Lund and Thorup's priority sampling).
With tau the highest priority ever left out, a kept record stands for max(w, tau) of weight: sums over the sample
estimate sums over every record offered without bias, and with equal weights the sample is uniform.

The sample is a key-sorted prefix of everything offered ("every record of priority above tau that fits"), so it
merges exactly: the union of two samples, tau the larger of theirs, cut to the budget, is the sample a single
stream of both sides' records would have kept.

Budget.  The budget in bytes is fixed before the first record. Rows are planned when the first records arrive
(their layout and, for CSR rows, their mean count of non-zeros say how many rows fit): a dense row costs 4 d + 16
bytes (features, label, weight, priority), a CSR row 24 bytes and 12 per non-zero (column, value). A CSR sample
also stops at its non-zeros' share of the budget, so rows denser than the first ones only mean fewer rows.
Storage grows by doubling up to the plan (plus one batch), so filling costs O(rows) copies in all.

Cuts are lazy: a quarter of the budget (`SLACK`) holds records admitted since the last cut, and a cut (a sort of the
priorities) happens only when it is full. Cutting at every admitting batch sorted 100,000 priorities per batch for
most of a long stream (about R ln(N / R) records are admitted after the sample fills). The sample is still the
best `capacity` rows of what is stored (`_view`), the same rows a cut would keep, so nothing changes but the cost.

State: tensors named `{prefix}x` (dense) or `{prefix}len`, `{prefix}col`, `{prefix}val` (CSR), and `{prefix}y`,
`{prefix}w`, `{prefix}priority`, with the counters in one JSON-able dict (`meta`).
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch

ROW_BYTES = 16            # label (float32), weight (float32), priority (float64)
CSR_ROW_BYTES = 24        # + the row's count of non-zeros (int64)
ENTRY_BYTES = 12          # a CSR non-zero: column (int64), value (float32)
SLACK = 0.25              # storage beyond the sample, for admissions between two cuts


def new_meta(budget_mib: float, max_rows: int) -> dict[str, Any]:
    """An empty sample's counters: nothing planned until the first records show their layout."""
    return {"budget_mib": float(budget_mib), "max_rows": int(max_rows), "rows": 0, "nnz": 0, "threshold": 0.0,
            "capacity": None, "nnz_capacity": None, "sparse": None, "offered": 0}


def _plan(meta: dict[str, Any], x: torch.Tensor) -> None:
    budget = int(meta["budget_mib"] * 2**20 / (1 + SLACK))
    if x.layout == torch.sparse_csr:
        mean_nnz = max(1.0, x.values().numel() / max(1, x.shape[0]))
        rows = min(meta["max_rows"], int(budget / (CSR_ROW_BYTES + ENTRY_BYTES * mean_nnz)))
        meta["capacity"], meta["nnz_capacity"] = rows, max(0, (budget - rows * CSR_ROW_BYTES) // ENTRY_BYTES)
        meta["sparse"] = True
    else:
        meta["capacity"] = min(meta["max_rows"], budget // (4 * x.shape[1] + ROW_BYTES))
        meta["sparse"] = False


def nbytes(tensors: dict[str, torch.Tensor], prefix: str) -> int:
    return sum(v.numel() * v.element_size() for k, v in tensors.items() if k.startswith(prefix))


def add(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str, x: torch.Tensor, y: torch.Tensor,
        w: torch.Tensor, priority: torch.Tensor) -> None:
    """Offer records x (dense or CSR), labels y, weights w and their priorities; keep what fits."""
    if x.shape[0] == 0:
        return
    meta["offered"] += int(x.shape[0])
    if meta["capacity"] is None:
        _plan(meta, x)
    if meta["capacity"] == 0:
        return
    _add_kept(tensors, meta, prefix, x, y, w, priority, priority > meta["threshold"])
    if meta["rows"] > _stored(meta["capacity"]) or (meta["sparse"] and meta["nnz"] > _stored(meta["nnz_capacity"])):
        _cut(tensors, meta, prefix)


def _stored(capacity: int) -> int:
    """Rows (or non-zeros) storage may hold before a cut."""
    return capacity + int(capacity * SLACK)


def _append(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str, parts: dict[str, torch.Tensor],
            counter: str, capacity: int) -> None:
    """Write parts after the filled length `meta[counter]`, growing storage by doubling (at most to what the plan
    and one batch need: the cut follows at once)."""
    fill = meta[counter]
    n = next(iter(parts.values())).shape[0]
    for name, v in parts.items():
        key = prefix + name
        have = tensors.get(key)
        if have is None or have.shape[0] < fill + n:
            size = max(fill + n, min(max(2 * (have.shape[0] if have is not None else 0), 256), _stored(capacity) + n))
            grown = torch.zeros((size, *v.shape[1:]), dtype=v.dtype, device=v.device)
            if have is not None:
                grown[:fill] = have[:fill]
            tensors[key] = have = grown
        have[fill:fill + n] = v
    meta[counter] = fill + n


def _cut(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str) -> None:
    """Keep the highest priorities that fit; the first one left out raises the threshold."""
    rows, meta["threshold"] = _view(tensors, meta, prefix)
    if rows is not None:
        _reorder(tensors, meta, prefix, rows)


def _view(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str
          ) -> tuple[torch.Tensor | None, float]:
    """The sample within what is stored: its rows (None: all of them, in storage order) and its threshold."""
    n = meta["rows"]
    if meta["capacity"] is None:  # not a held-out record yet (every record went to training): an empty sample
        return None, meta["threshold"]
    if n <= meta["capacity"] and not (meta["sparse"] and meta["nnz"] > meta["nnz_capacity"]):
        return None, meta["threshold"]
    pri = tensors[prefix + "priority"][:n]
    order = torch.sort(pri, descending=True, stable=True).indices
    keep = min(n, meta["capacity"])
    if meta["sparse"]:
        lens = tensors[prefix + "len"][:n][order]
        keep = min(keep, int((lens.cumsum(0) <= meta["nnz_capacity"]).sum()))
    threshold = max(meta["threshold"], float(pri[order[keep]])) if keep < n else meta["threshold"]
    return order[:keep], threshold


def rows(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str) -> int:
    """How many rows the sample holds."""
    view, _ = _view(tensors, meta, prefix)
    return meta["rows"] if view is None else len(view)


def _reorder(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str, rows: torch.Tensor) -> None:
    """Keep `rows` (in that order), in storage of the same size, zeros after them."""
    n, k = meta["rows"], len(rows)
    if meta["sparse"]:
        lens = tensors[prefix + "len"][:n]
        starts = lens.cumsum(0) - lens
        new_lens = lens[rows]
        total = int(new_lens.sum())
        new_starts = new_lens.cumsum(0) - new_lens
        entries = starts[rows].repeat_interleave(new_lens) + (
            torch.arange(total, device=lens.device) - new_starts.repeat_interleave(new_lens))
        for name in ("col", "val"):
            old = tensors[prefix + name]
            fresh = torch.zeros_like(old)
            fresh[:total] = old[entries]
            tensors[prefix + name] = fresh
        meta["nnz"] = total
    for name in ("x", "len", "y", "w", "priority"):
        old = tensors.get(prefix + name)
        if old is None:
            continue
        fresh = torch.zeros_like(old)
        fresh[:k] = old[:n][rows]
        tensors[prefix + name] = fresh
    meta["rows"] = k


def merge(a: dict[str, torch.Tensor], meta_a: dict[str, Any], b: dict[str, torch.Tensor], meta_b: dict[str, Any],
          prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The sample of both sides' records: the union above the larger threshold, cut to a's plan."""
    meta = dict(meta_a)
    if meta_b["capacity"] is None:
        return {k: v.clone() for k, v in a.items() if k.startswith(prefix)}, meta
    if meta["capacity"] is None:
        meta.update({k: meta_b[k] for k in ("capacity", "nnz_capacity", "sparse")})
    meta["offered"] = meta_a["offered"] + meta_b["offered"]
    meta["threshold"] = max(meta_a["threshold"], meta_b["threshold"])
    out: dict[str, torch.Tensor] = {}
    meta["rows"], meta["nnz"] = 0, 0
    for side, m in ((a, meta_a), (b, meta_b)):
        if m["rows"]:
            x = rows_of(side, m, prefix, 0, m["rows"])
            y, w, p = (side[prefix + k][:m["rows"]] for k in ("y", "w", "priority"))
            _add_kept(out, meta, prefix, x, y, w, p, p > meta["threshold"])
    _cut(out, meta, prefix)
    return out, meta


def _add_kept(out: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str, x: torch.Tensor, y: torch.Tensor,
              w: torch.Tensor, p: torch.Tensor, keep: torch.Tensor) -> None:
    """Append the rows where `keep` holds (in the sample's layout); the caller cuts to the plan."""
    rows = keep.nonzero().squeeze(1)
    if len(rows) == 0:
        return
    x = take_rows(x, rows) if len(rows) < x.shape[0] else x
    if meta["sparse"] and x.layout != torch.sparse_csr:
        x = x.to_sparse_csr()
    elif not meta["sparse"] and x.layout == torch.sparse_csr:
        x = x.to_dense()
    parts = {"y": y[rows].float(), "w": w[rows].float(), "priority": p[rows].double()}
    if meta["sparse"]:
        parts["len"] = x.crow_indices().diff().long()
        _append(out, meta, prefix, {"col": x.col_indices().long(), "val": x.values().float()}, "nnz",
                meta["nnz_capacity"])
    else:
        parts["x"] = x.float()
    _append(out, meta, prefix, parts, "rows", meta["capacity"])


def rows_of(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str, start: int, end: int,
            n_features: int | None = None) -> torch.Tensor:
    """Rows start..end of the sample: dense, or CSR of width n_features (the widest column + 1 if not given)."""
    if not meta["sparse"]:
        return tensors[prefix + "x"][start:end]
    lens = tensors[prefix + "len"][:meta["rows"]]
    crow = torch.cat([torch.zeros(1, dtype=torch.long, device=lens.device), lens.cumsum(0)])
    a, b = int(crow[start]), int(crow[end])
    col = tensors[prefix + "col"][a:b]
    width = n_features if n_features is not None else (int(col.max()) + 1 if b > a else 1)
    return torch.sparse_csr_tensor(crow[start:end + 1] - a, col, tensors[prefix + "val"][a:b],
                                   size=(end - start, width), check_invariants=False)


def chunks(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str, n_features: int,
           size: int = 4096) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The sample in chunks of rows: features, labels and the weight each row stands for, max(w, tau)."""
    view, threshold = _view(tensors, meta, prefix)
    n = meta["rows"] if view is None else len(view)
    for s in range(0, n, size):
        e = min(n, s + size)
        if view is None:
            x, y, w = (rows_of(tensors, meta, prefix, s, e, n_features), tensors[prefix + "y"][s:e],
                       tensors[prefix + "w"][s:e])
        else:
            part = view[s:e]
            x = take_rows(rows_of(tensors, meta, prefix, 0, meta["rows"], n_features), part)
            y, w = tensors[prefix + "y"][part], tensors[prefix + "w"][part]
        yield x, y, torch.clamp(w.double(), min=threshold).float() if threshold > 0 else w


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    if x.layout != torch.sparse_csr:
        return x[rows]
    crow = x.crow_indices()
    lens = crow.diff()[rows]
    total = int(lens.sum())
    new_starts = lens.cumsum(0) - lens
    entries = crow[:-1][rows].repeat_interleave(lens) + (
        torch.arange(total, device=crow.device) - new_starts.repeat_interleave(lens))
    new_crow = torch.cat([torch.zeros(1, dtype=crow.dtype, device=crow.device), lens.cumsum(0).to(crow.dtype)])
    return torch.sparse_csr_tensor(new_crow, x.col_indices()[entries], x.values()[entries],
                                   size=(len(rows), x.shape[1]), check_invariants=False)


def priorities(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Priority sampling's q = w / u for uniform u in (0, 1); zero-weight records never enter."""
    return torch.where(w > 0, w.double() / u.double(), torch.zeros_like(u, dtype=torch.float64))


def describe(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str) -> dict[str, Any]:
    """What `inspect` states: the budget, the plan and what the sample holds now."""
    if meta["capacity"] is None:  # no held-out record yet: the plan is made with the first (its width)
        return {"budget_mib": meta["budget_mib"], "rows": 0, "capacity_rows": None, "records_offered": 0}
    view, threshold = _view(tensors, meta, prefix)
    out = {"budget_mib": meta["budget_mib"], "rows": meta["rows"] if view is None else len(view),
           "capacity_rows": meta["capacity"], "records_offered": meta["offered"],
           "stored_mib": round(nbytes(tensors, prefix) / 2**20, 3)}
    if meta["sparse"]:
        out.update(nnz=meta["nnz"], capacity_nnz=meta["nnz_capacity"])
    if threshold > 0:
        out["each_row_stands_for"] = f"max(weight, {threshold:.4g})"
    return out


def standard_error(p: float, n: float) -> float:
    """Binomial standard error of a proportion p measured on n records."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else math.inf
