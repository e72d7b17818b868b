"""Hyperparameters: declared once per algorithm with SageMaker's names, parsed from Python values, command-line
strings or a SageMaker hyperparameter JSON file (where every value is a string), and checked with errors that name
the hyperparameter and its valid values."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import UsageError

# Keys that SageMaker adds to a job's hyperparameters.json beside the algorithm's own: `_tuning_objective_metric`
# (a tuning job), `_kubeflow_*`, `sagemaker_program`, `sagemaker_region`, `sagemaker_container_log_level`, ...
SAGEMAKER_KEYS = ("_", "sagemaker_")


@dataclass(frozen=True)
class HP:
    """One hyperparameter.

    kind:    ``int``, ``float``, ``str``, ``bool`` or ``list`` (a list of strings).
    choices: the valid values of a ``str`` (or the valid items of a ``list``).
    low/high: inclusive bounds of a number.
    auto:    whether the string ``auto`` is accepted (resolved by the algorithm).
    """

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    auto: bool = False

    def valid(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices)) + (" or auto" if self.auto else "")
        if self.kind == "bool":
            return "true or false"
        if self.kind in ("str", "list"):
            return "text" if self.kind == "str" else "a list, JSON or comma-separated"
        rng = {(True, True): f" in [{self.low}, {self.high}]", (True, False): f" >= {self.low}",
               (False, True): f" <= {self.high}", (False, False): ""}[(self.low is not None, self.high is not None)]
        return f"{'an integer' if self.kind == 'int' else 'a number'}{rng}" + (" or auto" if self.auto else "")

    def parse(self, value: Any) -> Any:
        if self.auto and (value is None or str(value).strip().lower() == "auto"):
            return "auto"
        if value is None and self.default is None:  # optional and not set
            return None
        try:
            v = self._convert(value)
        except (ValueError, TypeError):
            raise UsageError(f"hyperparameter {self.name} = {value!r} is invalid: expected {self.valid()}") from None
        if self.kind in ("int", "float"):
            if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
                raise UsageError(f"hyperparameter {self.name} = {value!r} is out of range: expected {self.valid()}")
        if self.kind == "str" and self.choices and v not in self.choices:
            raise UsageError(f"hyperparameter {self.name} = {value!r} is invalid: expected {self.valid()}")
        if self.kind == "list" and self.choices:
            bad = [x for x in v if x not in self.choices]
            if bad or not v:
                raise UsageError(f"hyperparameter {self.name} = {value!r} is invalid: expected a list of "
                                 + ", ".join(self.choices))
        return v

    def _convert(self, value: Any) -> Any:
        if self.kind == "int":
            if isinstance(value, bool):
                raise TypeError
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        if self.kind == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("true", "1", "yes"):
                return True
            if s in ("false", "0", "no"):
                return False
            raise ValueError
        if self.kind == "list":
            if isinstance(value, str):
                s = value.strip()
                value = json.loads(s) if s.startswith("[") else [p.strip() for p in s.split(",") if p.strip()]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return [str(x) for x in value]
        return str(value)


class HyperParameters:
    """The declared hyperparameters of one algorithm, with parsing and documentation."""

    def __init__(self, specs: Iterable[HP], check: Callable[[dict], None] | None = None):
        self.specs = {s.name: s for s in specs}
        self._check = check

    def __iter__(self):
        return iter(self.specs.values())

    def defaults(self) -> dict[str, Any]:
        return {s.name: s.default for s in self}

    def parse(self, given: dict[str, Any], *, base: dict[str, Any] | None = None) -> dict[str, Any]:
        """Validate `given` (names with ``_`` or ``-``) over `base` (or the defaults); unknown names are errors,
        except the keys SageMaker adds to a job's hyperparameters (`sagemaker_*`, and `_*` such as
        `_tuning_objective_metric`), which are not the algorithm's and are left out."""
        out = dict(base if base is not None else self.defaults())
        for raw_name, value in given.items():
            name = raw_name.replace("-", "_")
            if name.startswith(SAGEMAKER_KEYS):
                continue
            if name not in self.specs:
                close = difflib.get_close_matches(name, self.specs, n=3, cutoff=0.6)
                raise UsageError(f"unknown hyperparameter {raw_name!r}"
                                 + (f"; did you mean {' or '.join(close)}?" if close else "")
                                 + "; valid hyperparameters: " + ", ".join(sorted(self.specs)))
            out[name] = self.specs[name].parse(value)
        if self._check:
            self._check(out)
        return out

    def doc(self) -> str:
        return "\n".join(f"  {s.name} ({s.valid()}; default {s.default!r}): {s.help}" for s in self)


def load_json(path: str) -> dict[str, Any]:
    """A SageMaker hyperparameter file: a JSON object whose values are (usually) strings."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise UsageError(f"--hyperparameters {path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"--hyperparameters {path}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--hyperparameters {path}: expected a JSON object of name: value")
    return data
