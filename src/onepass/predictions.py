"""How `onepass predict` writes predictions: SageMaker's shapes (one JSON object, JSON lines or CSV), the format
taken from the output's name, classes and clusters as integers, and what joins each prediction back to its record
(an id column's text, or the record itself as SageMaker batch transform's join_source=Input)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

# outputs that are counts or classes: integers in JSON, as in AWS's examples ({"predicted_label": 1, ...})
_INTEGER_OUTPUTS = ("predicted_label", "closest_cluster")
_FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def output_format(given: str | None, output: str) -> str:
    """--format, or the output's extension (.json, .jsonl, .csv), or jsonl."""
    if given:
        return given
    return _FORMATS.get(Path(output).suffix.lower(), "jsonl") if output != "-" else "jsonl"


class standard_output:
    """Standard output as a context, left open at the end."""

    def __enter__(self):
        return sys.stdout

    def __exit__(self, *exc):
        sys.stdout.flush()
        return False


def joined(batch, source: bool, id_key: str) -> dict[str, list]:
    """What goes before each record's predictions: its id (--id-column), and with --join-source input the record
    as read (label, features)."""
    lead: dict[str, list] = {}
    if batch.ids is not None:
        lead[id_key] = batch.ids.tolist()
    if source:
        if batch.y is not None:
            lead["label"] = batch.y.cpu().numpy().tolist()
        lead["features"] = batch.x.cpu().numpy().tolist()
    return lead


def write_csv(out, pred: dict, batch, source: bool) -> None:
    """CSV rows: the id (if any), the record with --join-source input, then the predictions."""
    numbers = [pred[n].cpu().numpy().reshape(len(batch), -1) for n in pred]
    if source:
        numbers = ([batch.y.cpu().numpy()[:, None]] if batch.y is not None else []) + [batch.x.cpu().numpy()] + numbers
    rows = np.column_stack(numbers)
    if batch.ids is None:
        np.savetxt(out, rows, delimiter=",", fmt="%.9g")
        return
    ids = [_csv_field(str(v)) for v in batch.ids]
    text = io.StringIO()
    np.savetxt(text, rows, delimiter=",", fmt="%.9g")
    out.write("".join(f"{i},{line}\n" for i, line in zip(ids, text.getvalue().splitlines())))


def _csv_field(text: str) -> str:
    """A field quoted as CSV needs it (a comma, a quote or a line end in it)."""
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


def json_values(name: str, values) -> list:
    """A column of predictions as JSON values: integers for classes and clusters, numbers otherwise."""
    arr = values.cpu().numpy()
    if name in _INTEGER_OUTPUTS and arr.ndim == 1:
        return arr.astype(np.int64).tolist()
    return arr.tolist()
