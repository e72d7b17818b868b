"""The CSV reader's fast path (`_fastcsv.c`): what it accepts it reads as pyarrow does, bit for bit, and what it is
not sure of it hands back to pyarrow's parser, so that the reader's output never depends on which path ran."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import given, settings, strategies as st

import onepass.data.csv as csv_reader
try:  # built by `pip install`; a missing build fails the suite here rather than passing it at pyarrow's speed
    from onepass.data import _fastcsv
except ImportError as e:
    raise ImportError("onepass.data._fastcsv was not built: install with a C compiler (gcc) present, then "
                      "`pip install -e .` again") from e
from onepass.data.sources import resolve

NUMBER = r"[+-]?(?:[0-9]{1,25}\.?[0-9]{0,25}|\.[0-9]{1,25})(?:[eE][+-]?[0-9]{1,3})?"


def fast(text: str, ncols: int = 1) -> np.ndarray | None:
    """The fast path's values of a block with `ncols` feature columns, or None where it hands the block back."""
    block = text.encode()
    capacity = block.count(b"\n") + 1
    x = np.empty((capacity, ncols), np.float32)
    n = _fastcsv.parse_block(block, np.arange(ncols, dtype=np.int32).tobytes(), ",", x, ncols, None, None, capacity)
    return None if n < 0 else x[:n]


def arrow(values: list[str]) -> np.ndarray:
    """pyarrow's float32 values of a one-column CSV."""
    table = pacsv.read_csv(io.BytesIO(("\n".join(values) + "\n").encode()),
                           read_options=pacsv.ReadOptions(column_names=["v"]),
                           convert_options=pacsv.ConvertOptions(column_types={"v": pa.float32()}))
    return table.column("v").to_numpy()


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(np.asarray(a, np.float32).view(np.uint32), np.asarray(b, np.float32).view(np.uint32))


def texts_of(values: np.ndarray) -> dict[str, list[str]]:
    """The ways programs write numbers: shortest float64 repr (pandas, Python), float32 round trip (%.9g), fixed
    point, exponent notation, 17 and 21 significant digits, with a plus sign and with leading zeros."""
    v64 = values.astype(np.float64)
    return {
        "repr": [repr(float(v)) for v in v64],
        "%.9g": ["%.9g" % v for v in v64],
        "%.6f": ["%.6f" % v for v in v64 if abs(v) < 1e12],  # (larger ones have over 19 digits)
        "%e": ["%e" % v for v in v64],
        "%.17g": ["%.17g" % v for v in v64],
        "%.20e": ["%.20e" % v for v in v64],  # 21 digits: more than the fast path holds
        "plus": [("+%.8g" % v) if v >= 0 else "%.8g" % v for v in v64],
        "zeros": [("-00%.7g" % -v) if v < 0 else "00%.7g" % v for v in v64],
        "blanks": [" %.9g\t" % v for v in v64],  # spaces and tabs around a number: pyarrow trims them
    }


def test_every_accepted_number_is_pyarrows_float32():
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.normal(size=2000) * 10.0 ** rng.integers(-30, 31, size=2000),   # every scale float32 holds
        rng.integers(-10 ** 6, 10 ** 6, size=500).astype(np.float64),        # integers
        rng.normal(size=500),
    ]).astype(np.float32)
    for style, texts in texts_of(values).items():
        expected = arrow(texts)
        accepted = 0
        for text, want in zip(texts, expected):
            got = fast(text + "\n")
            if got is not None:
                accepted += 1
                assert same_bits(got[0, 0], want), (style, text, got[0, 0], want)
        if style == "%.20e":
            assert accepted == 0  # 21 significant digits: handed to pyarrow
        else:  # the fast path takes the common cases (else the reader would run at pyarrow's speed)
            assert accepted >= 0.99 * len(texts), (style, accepted)


@settings(max_examples=400, deadline=None)
@given(st.from_regex(NUMBER, fullmatch=True))
def test_any_plain_number_is_read_as_pyarrow_reads_it_or_handed_back(text):
    got = fast(text)
    if got is None:
        return
    with np.errstate(over="ignore"):
        want = arrow([text])[0]
    assert np.isfinite(want) and same_bits(got[0, 0], want), (text, got[0, 0], want)


@pytest.mark.parametrize("text, value", [
    ("0", 0.0), ("-0", -0.0), ("0.000", 0.0), ("00012.5", 12.5), (".5", 0.5), ("5.", 5.0), ("+1e3", 1000.0),
    ("1E-3", np.float32(0.001)), ("0.0000001234", np.float32(1.234e-07)), ("123456789012345678", np.float32(1.2345679e17)),
    ("3.4028234e38", np.finfo(np.float32).max), ("1.1754944e-38", np.finfo(np.float32).tiny),
])
def test_edge_numbers(text, value):
    got = fast(text)
    assert got is not None and same_bits(got[0, 0], np.float32(value)), (text, got)


@pytest.mark.parametrize("text", [
    "16777217",          # exactly halfway between two float32 values: ties need the exact decimal
    "1e39", "-3.5e38",   # beyond float32
    "1e-40", "1e-45",    # subnormal float32
    "1e-80", "1e70",     # exponents past the fast path's range
    "12345678901234567890",  # 20 digits
    "nan", "inf", "-Infinity", "0x10", "1_0", " ", "1 .5", "- 1", '"1"', "1e", "e5", ".", "-", "+.e1", "١",
])
def test_what_it_is_not_sure_of_goes_back_to_pyarrow(text):
    assert fast(text + "\n") is None


@pytest.mark.parametrize("text, rows", [
    ("1,2\n3,4\n", [[1, 2], [3, 4]]),
    (" 1 ,\t2\n3 , 4 \r\n", [[1, 2], [3, 4]]),  # blanks around numbers are trimmed, as pyarrow does
    ("1,2\r\n3,4\r\n", [[1, 2], [3, 4]]),
    ("\n1,2\n\n\r\n3,4", [[1, 2], [3, 4]]),  # empty lines hold no record; the last line may lack its end
])
def test_lines(text, rows):
    assert np.array_equal(fast(text, 2), np.array(rows, np.float32))


@pytest.mark.parametrize("text", ["1,2,3\n", "1\n", "1,2\r3,4\n", "1,2,\n", ",1\n", "1;2\n", "1,2\n3\n"])
def test_records_of_the_wrong_shape_go_back_to_pyarrow(text):
    assert fast(text, 2) is None


class CountingFastPath:
    """_fastcsv with a tally of the blocks it parsed and of those it handed back."""

    def __init__(self):
        self.parsed = self.handed_back = 0

    def parse_block(self, *args):
        n = _fastcsv.parse_block(*args)
        self.parsed, self.handed_back = self.parsed + (n >= 0), self.handed_back + (n < 0)
        return n


def read_all(path, monkeypatch, use_fast: bool, **options):
    counter = CountingFastPath()
    monkeypatch.setattr(csv_reader, "_fastcsv", counter)
    if not use_fast:
        monkeypatch.setattr(csv_reader, "_fast_targets", lambda *a: None)
    monkeypatch.setattr(csv_reader, "BLOCK_SIZE", 256)  # many blocks, some handed back, some not
    chunks = list(csv_reader.read(resolve(str(path))[0], 0, **options))
    monkeypatch.undo()
    cat = lambda part: None if chunks[0].__dict__[part] is None else np.concatenate([c.__dict__[part] for c in chunks])
    return [(c.offset, c.line, len(c)) for c in chunks], cat("x"), cat("y"), cat("w"), counter


def test_the_reader_gives_the_same_records_by_either_path(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    lines = ["name,y,a,b,weight,c"]
    for i in range(300):
        a, b, c = rng.normal(size=3) * 10.0 ** rng.integers(-5, 6, size=3)
        # a few values of 21 digits (their blocks go to pyarrow) and a few with blanks around them (trimmed)
        a_text = f"{a:.20e}" if i % 97 == 5 else f" {float(a)!r} " if i % 31 == 2 else repr(float(a))
        lines.append(f"item {i},{i % 3},{a_text},{b:.9g},{rng.random():.4f},{c:e}" + ("\r" if i % 50 == 7 else ""))
        if i % 40 == 3:
            lines.append("")
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(lines) + "\n")
    options = dict(label="y", weight="weight", columns=["c", "a", "b"])
    fast_read = read_all(path, monkeypatch, True, **options)
    slow_read = read_all(path, monkeypatch, False, **options)
    assert fast_read[0] == slow_read[0]  # the same chunks, offsets and line numbers
    for got, want in zip(fast_read[1:4], slow_read[1:4]):
        assert same_bits(got, want)
    assert fast_read[1].shape == (300, 3)
    counted = fast_read[4]
    assert counted.parsed > 10 * counted.handed_back > 0  # both paths ran, mostly the fast one
    assert slow_read[4].parsed == slow_read[4].handed_back == 0


def test_a_bad_record_is_named_by_either_path(tmp_path, monkeypatch):
    path = tmp_path / "bad.csv"
    path.write_text("".join(f"{i}.5,{i}\n" for i in range(100)) + "7,x\n")
    for use_fast in (True, False):
        with pytest.raises(Exception, match=r"line 101.*not a number"):
            read_all(path, monkeypatch, use_fast)
