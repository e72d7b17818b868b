"""Request bodies in, response bodies out, in SageMaker's inference formats (reference: sagemaker-algorithms §5).

Requests (`parse`), by Content-Type (parameters such as ``; label_size=0`` or ``; charset=utf-8`` are ignored):
- ``text/csv``: one record a line, features only, in training order.
- ``application/json``: ``{"instances": [...]}`` whose items are ``{"features": [...]}`` (dense),
  ``{"data": {"features": {"values": [...]}}}`` (dense) or ``{"data": {"features": {"keys": [...], "shape": [d],
  "values": [...]}}}`` (sparse); a bare list of records (``[[1, 2], [3, 4]]``, as the SDK's JSONSerializer sends an
  array) or of one record (``[1, 2]``); or one such item alone.
- ``application/jsonlines``: one item a line (dense and sparse may mix).
- ``application/x-recordio-protobuf``: records as in training (dense or sparse), the last one's padding optional.
- ``application/x-npy``: one NumPy array in ``.npy`` format, as the SDK's NumpySerializer sends it (its default
  content type): (n, d) records, or (d,) one record; numbers only (no pickled objects).

Responses (`encode`), by Accept: ``application/json`` (``{"predictions": [...]}``, PCA's ``{"projections": [...]}``),
``application/jsonlines`` (one object a line), ``text/csv`` (one line a record, the outputs' values in order) and
``application/x-recordio-protobuf`` (one record a request record, each output in its label map). Cluster indices and
predicted labels are integers in JSON, as in AWS's examples. No ``application/x-npy`` answers: SageMaker's
algorithms give none (reference §5), so that Accept is a 406 as on SageMaker.

Every mistake of the client is a `BadRequest` naming what and where (the record's number, the line, the field),
which the app answers with its status (400, 406, 415).
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import orjson
except ImportError:  # an optional speed-up (the serve extra installs it)
    orjson = None

from ..data import recordio
from ..data.csv import _fast_targets, _fastcsv
from ..data.sparse import CSR
from ..errors import DataError

JSON, JSONLINES, CSV, RECORDIO, NPY = ("application/json", "application/jsonlines", "text/csv",
                                       "application/x-recordio-protobuf", "application/x-npy")
REQUEST_TYPES = (CSV, JSON, JSONLINES, RECORDIO, NPY)
RESPONSE_TYPES = (JSON, JSONLINES, CSV, RECORDIO)
_ALIASES = {"application/x-jsonlines": JSONLINES, "application/jsonl": JSONLINES, "application/x-ndjson": JSONLINES,
            "application/ndjson": JSONLINES}
INTEGER_OUTPUTS = ("closest_cluster", "predicted_label")  # whole numbers in JSON, as in AWS's examples


class BadRequest(Exception):
    """A client's mistake: `status` (400, 406, 413, 415...) and a message naming what and where."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Records:
    """Parsed request records: dense rows (n, d) float32, or a CSR when any record was sparse."""

    x: np.ndarray | CSR

    def __len__(self) -> int:
        return self.x.shape[0]


def media_type(header: str | None) -> str:
    """The media type of a Content-Type or Accept item, lowercased, without parameters."""
    kind = (header or "").split(";")[0].strip().lower()
    return _ALIASES.get(kind, kind)


def choose_accept(header: str | None, default: str = JSON, offered: tuple[str, ...] = RESPONSE_TYPES) -> str:
    """The first type of the Accept list (in order of q-value, then as listed) that is offered; a missing Accept
    or ``*/*`` gives `default`. None offered: 406."""
    if not header or not header.strip():
        return default
    items = []
    for i, item in enumerate(header.split(",")):
        parts = [p.strip() for p in item.split(";")]
        q = 1.0
        for p in parts[1:]:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        items.append((-q, i, media_type(parts[0])))
    for q, _, kind in sorted(items):
        if q == 0:
            continue
        if kind in ("*/*", "application/*"):
            return default
        if kind in offered:
            return kind
    raise BadRequest(406, f"Accept {header!r}: none of these is served; offered: {', '.join(offered)}")


def parse(body: bytes, content_type: str | None, n_features: int | None) -> Records:
    """The records of a request body; `n_features`: the width the model expects (checked, named in errors)."""
    kind = media_type(content_type)
    if kind not in REQUEST_TYPES:
        raise BadRequest(415, f"Content-Type {content_type!r} is not supported; send one of: "
                              f"{', '.join(REQUEST_TYPES)}")
    if not body.strip(b" \t\r\n"):
        raise BadRequest(400, "the request body is empty: no records")
    if kind == CSV:
        x = _csv(body)
    elif kind == RECORDIO:
        x = _recordio(body, n_features)
    elif kind == NPY:
        x = _npy(body)
    else:
        items = _json_items(body) if kind == JSON else _jsonlines_items(body)
        x = _rows(items, n_features)
    if n_features is not None and x.shape[1] != n_features:
        raise BadRequest(400, f"records have {x.shape[1]} features; the model expects {n_features}")
    return Records(x)


def encode(outputs: dict[str, np.ndarray], accept: str, json_key: str = "predictions") -> bytes:
    """A response body of per-record `outputs` (name -> (n,) or (n, m) arrays) in the `accept` type."""
    names = list(outputs)
    if accept == RECORDIO:
        return recordio.encode_outputs(outputs)
    if accept == CSV:
        cols = [np.asarray(outputs[k], dtype=np.float64).reshape(len(outputs[k]), -1) for k in names]
        buf = io.StringIO()
        np.savetxt(buf, np.hstack(cols), delimiter=",", fmt="%.9g")
        return buf.getvalue().encode()
    rows = [dict(zip(names, values)) for values in zip(*(_json_values(k, outputs[k]) for k in names))]
    if accept == JSONLINES:
        return b"".join(dumps(r) + b"\n" for r in rows)
    return dumps({json_key: rows})


def dumps(value: Any) -> bytes:
    """JSON bytes: orjson where installed (a 1,000-record answer of PCA projections in 2.8 ms against 11 ms with
    the standard library, which had been most of the request's time), else the standard library."""
    if orjson is not None:
        return orjson.dumps(value)
    return json.dumps(value).encode()


def _json_values(name: str, values: np.ndarray) -> list:
    values = np.asarray(values)
    if name in INTEGER_OUTPUTS and values.ndim == 1:
        return values.astype(np.int64).tolist()
    return values.tolist()


def _csv(body: bytes) -> np.ndarray:
    if not body.endswith(b"\n"):  # whole lines for the fast path; pyarrow cannot tell a last line's columns without
        body += b"\n"
    fast = _fast_csv(body)
    if fast is not None:
        return fast
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        table = pacsv.read_csv(io.BytesIO(body), read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                               convert_options=pacsv.ConvertOptions(column_types=None))
    except pa.ArrowInvalid as e:
        raise BadRequest(400, f"text/csv body: {e}") from None
    cols = []
    for i, col in enumerate(table.columns):
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise BadRequest(400, f"text/csv body: column {i + 1} holds a value that is not a number")
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise BadRequest(400, f"text/csv body: line {row + 1}, column {i + 1} is empty")
        cols.append(col.to_numpy().astype(np.float32))
    x = np.column_stack(cols) if cols else np.zeros((0, 0), np.float32)
    _check_finite(x, "text/csv body")
    return x


def _fast_csv(body: bytes) -> np.ndarray | None:
    """Plain decimal numbers through the CSV reader's C fast path (the same float32 values as pyarrow's): a
    single-record request parses in microseconds where pyarrow's reader takes milliseconds to start. None for
    anything else (blank lines, quotes, a bad value), which pyarrow then parses or names."""
    if _fastcsv is None:
        return None
    width = body[:body.index(b"\n")].count(b",") + 1
    lines = body.count(b"\n")
    x = np.empty((lines, width), dtype=np.float32)
    n = _fastcsv.parse_block(body, _targets(width), ",", x, width, None, None, lines)
    return x[:n] if n == lines else None


@functools.lru_cache(maxsize=64)
def _targets(width: int) -> bytes | None:
    """Every column a feature, in order (built once a width: 4 us, a tenth of a single-record parse)."""
    return _fast_targets(width, list(range(width)), None, None)


def _json_items(body: bytes) -> list:
    doc = loads_json(body, "application/json body")
    if isinstance(doc, dict) and "instances" in doc:
        items = doc["instances"]
        if not isinstance(items, list):
            raise BadRequest(400, "application/json body: \"instances\" must be a list of records")
        return items
    if isinstance(doc, list) and doc and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in doc):
        return [doc]  # one record as a bare list
    if isinstance(doc, list):
        return doc
    return [doc]


def _jsonlines_items(body: bytes) -> list:
    items = []
    for i, line in enumerate(body.splitlines(), 1):
        if line.strip():
            items.append(loads_json(line, f"application/jsonlines body, line {i}"))
    return items


def loads_json(text: bytes, where: str) -> Any:
    """JSON from a body, or a 400 naming `where` and the position."""
    try:
        return json.loads(text)
    except UnicodeDecodeError:
        raise BadRequest(400, f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise BadRequest(400, f"{where}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def _rows(items: list, n_features: int | None) -> np.ndarray | CSR:
    """Dense rows, or a CSR when any item is sparse (then `shape` gives the width)."""
    if not items:
        raise BadRequest(400, "no records in the request")
    parsed = [_item(item, i, n_features) for i, item in enumerate(items)]
    if not any(isinstance(p, tuple) for p in parsed):
        widths = {len(p) for p in parsed}
        if len(widths) > 1:
            raise BadRequest(400, f"records have different numbers of features: {sorted(widths)}")
        return np.asarray(parsed, dtype=np.float32).reshape(len(parsed), -1)
    width = max(p[2] if isinstance(p, tuple) else len(p) for p in parsed)
    indptr, indices, data = [0], [], []
    for p in parsed:
        keys, values = (p[0], p[1]) if isinstance(p, tuple) else (np.flatnonzero(p), np.asarray(p)[np.flatnonzero(p)])
        indices.append(np.asarray(keys, np.int64))
        data.append(np.asarray(values, np.float32))
        indptr.append(indptr[-1] + len(keys))
    return CSR(np.asarray(indptr, np.int64), np.concatenate(indices), np.concatenate(data), (len(parsed), width))


def _item(item: Any, i: int, n_features: int | None):
    """One record: a list of numbers (dense) or (keys, values, width) (sparse)."""
    where = f"record {i + 1}"
    if isinstance(item, dict):
        if "features" in item:
            item = item["features"]
        elif isinstance(item.get("data"), dict) and isinstance(item["data"].get("features"), dict):
            f = item["data"]["features"]
            if "keys" in f:
                return _sparse(f, where, n_features)
            item = f.get("values")
        else:
            raise BadRequest(400, f"{where}: expected \"features\" or \"data\": {{\"features\": ...}}, found keys "
                                  f"{sorted(item)[:5]}")
    if not isinstance(item, list) or not item:
        raise BadRequest(400, f"{where}: features must be a non-empty list of numbers")
    values = _numbers(item, where)
    return values


def _sparse(f: dict, where: str, n_features: int | None):
    keys, values, shape = f.get("keys"), f.get("values"), f.get("shape")
    if not isinstance(keys, list) or not isinstance(values, list) or len(keys) != len(values):
        raise BadRequest(400, f"{where}: sparse features need \"keys\" and \"values\" lists of the same length")
    width = shape[0] if isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) else n_features
    if width is None:
        raise BadRequest(400, f"{where}: sparse features need \"shape\": [number of features]")
    if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
        raise BadRequest(400, f"{where}: keys must be whole numbers")
    k = np.asarray(keys, np.int64)
    if k.size and (k.min() < 0 or k.max() >= width):
        raise BadRequest(400, f"{where}: key {int(k.max() if k.max() >= width else k.min())} lies outside 0..{width - 1}")
    order = np.argsort(k, kind="stable")
    if k.size > 1 and (np.diff(k[order]) == 0).any():
        raise BadRequest(400, f"{where}: a key appears twice")
    return k[order], _numbers(values, where)[order] if values else np.zeros(0, np.float32), int(width)


def _numbers(values: list, where: str) -> np.ndarray:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        bad = next(v for v in values if not isinstance(v, (int, float)) or isinstance(v, bool))
        raise BadRequest(400, f"{where}: {json.dumps(bad)} is not a number")
    out = np.asarray(values, dtype=np.float32)
    _check_finite(out[None], where)
    return out


def _check_finite(x: np.ndarray, where: str) -> None:
    if x.size and not np.isfinite(x).all():
        r, c = (int(v) for v in np.argwhere(~np.isfinite(x))[0])
        raise BadRequest(400, f"{where}: record {r + 1}, feature {c + 1} is not a finite number")


def _recordio(body: bytes, n_features: int | None) -> np.ndarray | CSR:
    try:
        x, _ = recordio.decode(body, "application/x-recordio-protobuf body", n_features)
    except DataError as e:
        raise BadRequest(400, str(e)) from None
    return x


def _npy(body: bytes) -> np.ndarray:
    """An .npy array of numbers (never unpickled): (n, d) records or (d,) one record, as float32."""
    try:
        x = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # a bad magic, header or length; object arrays (pickles) refused
        raise BadRequest(400, f"application/x-npy body: not a NumPy array of numbers ({e})") from None
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf":
        raise BadRequest(400, f"application/x-npy body: dtype {getattr(x, 'dtype', '?')} is not numbers")
    if x.ndim not in (1, 2) or x.size == 0:
        raise BadRequest(400, f"application/x-npy body: shape {x.shape}; send (records, features) or (features,)")
    x = np.ascontiguousarray(x if x.ndim == 2 else x[None], dtype=np.float32)
    _check_finite(x, "application/x-npy body")
    return x
