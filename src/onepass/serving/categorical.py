"""Requests with raw categorical values, for a model trained with categorical columns (data/hashing.py): hashed
as training hashed them, so that a served record gets the features `predict` gives it.

A request's records hold the training records' feature fields (not the label, weight or id):
- ``text/csv``: one record a line, the fields in the training input's order (its columns less the label and
  weight and any column not taken), e.g. ``30,alice,i5`` for a model trained on ``y,age,user,item``;
- ``application/json`` (``{"instances": [...]}``, a list, or one record) and ``application/jsonlines``: each record
  an object of named fields, ``{"age": 30, "user": "alice", "item": "i5"}``, or ``{"features": [30, "alice",
  "i5"]}`` in the CSV order.
A categorical value may be text or a number (hashed as its text: hashing.text_of); a numeric field must be a
finite number. Anything else is a 400 naming the record and the field.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np

from ..data.hashing import Hashing, text_of
from ..data.sparse import CSR
from .codecs import CSV, JSON, BadRequest, _json_items, _jsonlines_items, media_type

TYPES = (CSV, JSON, "application/jsonlines")


def applies(meta: dict[str, Any], content_type: str | None) -> bool:
    """Whether a request to a model of `meta` is read here: a model with categorical columns, a CSV or JSON body."""
    return bool(meta.get("categorical_layout")) and media_type(content_type) in TYPES


def parse(body: bytes, content_type: str | None, meta: dict[str, Any]) -> CSR:
    """The request's records as the model's sparse features."""
    layout, columns = meta["categorical_layout"], [str(c) for c in meta["categorical_columns"]]
    fields, numeric = layout["fields"], layout["numeric"]
    kind = media_type(content_type)
    if kind == CSV:
        lines = [r for r in csv.reader(io.StringIO(body.decode("utf-8", "replace"))) if r]
        records = []
        for i, row in enumerate(lines, 1):
            if len(row) != len(fields):
                raise BadRequest(400, f"text/csv body: line {i} has {len(row)} fields; the model reads "
                                      f"{len(fields)} ({', '.join(fields)})")
            records.append(dict(zip(fields, (v.strip(" \t") for v in row))))
    else:
        items = _json_items(body) if kind == JSON else _jsonlines_items(body)
        records = [_named(item, fields, i) for i, item in enumerate(items, 1)]
    if not records:
        raise BadRequest(400, "no records in the request")
    x = np.empty((len(records), len(numeric)), dtype=np.float32)
    cats = np.empty((len(records), len(columns)), dtype=object)
    for i, r in enumerate(records):
        for j, name in enumerate(numeric):
            x[i, j] = _number(r, name, i + 1)
        for j, name in enumerate(columns):
            text = text_of(r.get(name))
            if text is None:
                raise BadRequest(400, f"record {i + 1}: categorical field {name!r} holds {type(r[name]).__name__}, "
                                      "not text or a number")
            cats[i, j] = text
    return Hashing(columns, meta["n_features"]).features(x, cats, "request", count=False)


def _named(item: Any, fields: list[str], i: int) -> dict:
    if isinstance(item, dict) and isinstance(item.get("features"), list):
        values = item["features"]
        if len(values) != len(fields):
            raise BadRequest(400, f"record {i}: {len(values)} features; the model reads {len(fields)} "
                                  f"({', '.join(fields)})")
        return dict(zip(fields, values))
    if not isinstance(item, dict):
        raise BadRequest(400, f"record {i}: expected an object of named fields ({', '.join(fields)})")
    missing = [f for f in fields if f not in item]
    if missing:
        raise BadRequest(400, f"record {i}: field {missing[0]!r} is missing")
    return item


def _number(record: dict, name: str, i: int) -> float:
    v = record[name]
    try:
        value = float(v) if not isinstance(v, bool) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise BadRequest(400, f"record {i}: field {name!r} is {str(v)[:40]!r}, not a finite number")
    return value
