"""DeepAR: probabilistic forecasts for many related series from one global autoregressive recurrent network, trained
on windows cut from a stream of series (Salinas, Flunkert, Gasthaus, Januschowski 2020; SageMaker's DeepAR).

Model. For a window of series i with target y_1 ... y_{C+P} (C = context_length, P = prediction_length), an LSTM of
`num_layers` x `num_cells` reads at step t the input x_t = [z_{t-l} for l in lags, time features of t, age,
dynamic features of t, embeddings of the series' `cat` codes, log s], where z = y / s and s is the window's scale,
the mean absolute observed value of its context (DeepAR's scaling; 1 when the context has none; beta: 1). A linear
head maps the hidden state h_t to the parameters of the likelihood of y_t (`likelihoods`: gaussian, student-T,
negative-binomial, beta, deterministic-L1). Lags follow `time_freq` (`data.windows.Frequency.lags`: the last 7 steps,
then seasonal ones, e.g. daily: 6-8, 13-15, 20-22, 27-29 and 364-366), so the window carries that many points of
history before its context; time features are SageMaker's for the frequency, scaled to [-0.5, 0.5].

Training. Windows of C + P points (plus the lag history) are cut from each series record as the stream passes
(`data.windows`: one per P points, stratified from the series' end, seeded by the record's place, shuffled in blocks
of series), so memory never holds more than a block of series. Each mini-batch is one step of Adam on the mean
negative log-likelihood of the observed points of the C + P steps (teacher forcing: lags are the true values),
gradients clipped to a global norm of 10 (GluonTS's default), LSTM dropout `dropout_rate` between layers.
Missing values (NaN) are inputs of 0 and left out of the loss.

Forecast. The context (and lag history) of a series is read teacher-forced, then P steps are sampled ancestrally:
each step's draw is fed back as the next step's lag. `num_samples` paths give the mean and any quantile (the rich
state: every quantile from one model). Test metrics (`--test`, SageMaker's names) forecast each series' last P points
from the points before them: RMSE of the mean, wQuantileLoss[q] = 2 sum |(y - y_q)(1{y <= y_q} - q)| / sum |y|
and their mean over `test_quantiles`, and ND of the median.

Defaults are SageMaker's (2 x 40 cells, student-T, learning rate 1e-3, 128 windows a batch) with 100 epochs of at
least `min_batches_per_epoch` = 10 batches (GluonTS's num_batches_per_epoch, as a floor): a pass over few series
gives few windows (US births, one daily series: 243, 2 batches), so the epoch reads the series again, each round
drawing other window ends, until it has 10 batches; many series (a pass of 10 batches or more) are read once, and
memory is the same either way. Measured (benchmarks/RESULTS_DEEPAR.md, mean wQuantileLoss / MASE, one run each):
US births without the floor (200 steps) 0.052 / 2.42, worse than seasonal naive (0.045 / 1.70); floors of 10, 15,
20 batches: 0.038 / 1.75, 0.043 / 1.94, 0.033 / 1.54. M1 yearly (181 short series, seasonal naive 0.209 / 4.89):
no floor 0.118 / 4.77, 10: 0.119 / 4.49, 20: 0.160 / 4.40; txhousing (46 series, seasonal naive 0.069 / 0.87): no
floor 0.053 / 0.76, 10: 0.049 / 0.71, 20: 0.060 / 0.75. More steps help the one long series and, past 10 batches,
hurt the short series' quantile loss; 10 beats seasonal naive's quantile loss on all three (not its MASE on US
births).

State. The network's parameters, Adam's moments and step count, torch's random generator state (dropout draws) and
counters: resuming replays the same windows with the same dropout masks, bit for bit on the CPU. The initial
weights depend on the configuration only, not on the seed, so states trained apart start from the same point:
merge averages parameters and moments weighted by the windows each side trained on (federated averaging from a
shared start). It is a loose approximation for networks trained apart for long: on the property test's series
(`testing.CASES["deepar"]`, 2 x 200 series, 100 steps each) the merged model's forecasts erred 2.1 x as much as one
model trained on all (0.72; the halves alone 2.61 and 0.83); the check allows 2.5 x. It is close when the states
stay near each other: continued from one state on shards (`--init-from`) for few steps. Embedding tables with `cardinality` auto grow as new codes arrive (new rows start
at zero, as every row does). With `early_stopping_patience`, the parameters of the best epoch (validation loss, else
training loss) are kept and finalized.

    >>> import numpy as np, onepass
    >>> from onepass.algorithms import deepar
    >>> t = np.arange(120)
    >>> series = [{"start": "2024-01-01", "target": (10 + 5 * np.sin(2 * np.pi * t / 7 + k)).tolist()}
    ...           for k in range(8)]
    >>> hp = {"time_freq": "D", "prediction_length": 7, "context_length": 14, "num_cells": 16, "num_layers": 1,
    ...       "likelihood": "gaussian", "learning_rate": 0.01}
    >>> state = deepar.init(hp, deepar.window_length(hp))
    >>> for epoch in range(30):
    ...     for batch in deepar.batches_of(series, hp, 2):     # windows of 2 series a batch
    ...         state = deepar.update(state, batch)
    >>> model = deepar.finalize(state)
    >>> f = model.forecast(series[:1], num_samples=200, quantiles=[0.1, 0.9])[0]
    >>> truth = 10 + 5 * np.sin(2 * np.pi * np.arange(120, 127) / 7)
    >>> float(np.abs(np.array(f["mean"]) - truth).mean()) < 0.5   # the sine's amplitude is 5
    True
    >>> sorted(f)
    ['mean', 'quantiles']
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from ..data.batches import Batch
from ..data.series import SeriesRecord, from_dict
from ..data.windows import FEATURES, Frequency, SeriesWindows, WindowBatch, WindowSpec, cut, to_batch, stack
from ..data.windows import block_windows
from ..errors import IncompatibleStateError, UsageError
from ..hyperparameters import HP, HyperParameters
from ..state import State
from . import likelihoods as lik
from .base import Model, check_mergeable
from .deepar_net import loss_sum, sample_paths, to_device

NAME = "deepar"
VERSION = 1
STRUCTURAL = ("time_freq", "prediction_length", "context_length", "num_cells", "num_layers", "likelihood",
              "embedding_dimension", "cardinality", "num_dynamic_feat")
INIT_SEED = 0  # initial weights: the configuration's, not the run's seed, so that states trained apart can merge
CLIP_NORM = 10.0  # GluonTS's gradient_clip_val
EVAL_SEED = 12345  # forecasts for test metrics are drawn from this seed: the same model scores alike every time
MIN_BATCHES = 10  # see the module docstring (Defaults) for the measurements behind it
DEFAULT_QUANTILES = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]


def _check(hp: dict[str, Any]) -> None:
    for key in ("time_freq", "prediction_length"):
        if hp[key] is None:
            raise UsageError(f"hyperparameter {key} is required (time_freq: 5min, H, D, W, M...; prediction_length: "
                             "the forecast horizon in steps)")
    Frequency.parse(hp["time_freq"])
    if hp["context_length"] is None:
        hp["context_length"] = hp["prediction_length"]  # GluonTS's default; SageMaker suggests the same
    card = hp["cardinality"]
    if isinstance(card, str):
        s = card.strip().lower()
        if s in ("auto", "ignore", ""):
            card = "ignore" if s == "" else s
        else:
            try:
                card = [int(v) for v in s.strip("[]").split(",") if v.strip()]
            except ValueError:
                raise UsageError(f"hyperparameter cardinality = {hp['cardinality']!r} is invalid: expected auto, "
                                 "ignore or a list of category counts such as [2, 3]") from None
    if isinstance(card, list) and (not card or min(card) < 1):
        raise UsageError(f"hyperparameter cardinality = {card!r}: every count must be at least 1")
    hp["cardinality"] = card
    dyn = str(hp["num_dynamic_feat"]).strip().lower()
    if dyn not in ("auto", "ignore", ""):
        if not dyn.isdigit():
            raise UsageError(f"hyperparameter num_dynamic_feat = {hp['num_dynamic_feat']!r} is invalid: expected "
                             "auto, ignore or an integer >= 0")
        hp["num_dynamic_feat"] = int(dyn)
    elif dyn == "":
        hp["num_dynamic_feat"] = "ignore"
    try:
        qs = [float(q) for q in hp["test_quantiles"]]
    except ValueError:
        qs = []
    if not qs or not all(0 < q < 1 for q in qs):
        raise UsageError(f"hyperparameter test_quantiles = {hp['test_quantiles']!r} is invalid: expected numbers "
                         "in (0, 1), e.g. [0.1, 0.5, 0.9]")


HYPERPARAMETERS = HyperParameters([
    HP("time_freq", "str", None, "the series' step: an optional multiple and min, H, D, W, M (also Q, Y); sets "
       "the lags and time features"),
    HP("prediction_length", "int", None, "steps to forecast (fixed at training)", low=1),
    HP("context_length", "int", None, "steps the network reads before forecasting (default: prediction_length); "
       "lags reach further back", low=1),
    HP("epochs", "int", 100, "passes over the data (each cuts one window per prediction_length points of every "
       "series; a pass of fewer than min_batches_per_epoch batches is followed by more rounds)", low=1),
    HP("min_batches_per_epoch", "int", MIN_BATCHES, "an epoch's least mini-batches: few series are read again, "
       "with other windows, until it has them (GluonTS's num_batches_per_epoch as a floor); 0: one pass", low=0),
    HP("mini_batch_size", "int", 128, "windows per mini-batch", low=1),
    HP("learning_rate", "float", 1e-3, "Adam's step size", low=0),
    HP("num_cells", "int", 40, "LSTM cells per layer", low=1),
    HP("num_layers", "int", 2, "LSTM layers", low=1),
    HP("dropout_rate", "float", 0.1, "dropout between LSTM layers in training", low=0, high=0.99),
    HP("likelihood", "str", "student-T", "the distribution of each step's value", choices=lik.NAMES),
    HP("embedding_dimension", "int", 10, "size of each categorical feature's embedding", low=1),
    HP("cardinality", "str", "auto", "categories of each cat field: auto (from the data), ignore, or a list [2, 3]"),
    HP("num_dynamic_feat", "str", "auto", "dynamic features: auto (from the data), ignore or their number"),
    HP("early_stopping_patience", "int", None, "stop after this many epochs without a lower loss (validation if "
       "given, else training) and keep the best epoch's model", low=1),
    HP("test_quantiles", "list", DEFAULT_QUANTILES, "quantiles scored by the test metrics (wQuantileLoss)"),
    HP("num_eval_samples", "int", 100, "sample paths per series for test metrics", low=1),
], check=_check)

CHOICES = HyperParameters([
    HP("test_quantiles", "list", DEFAULT_QUANTILES, "the quantiles the model forecasts by default"),
    HP("num_eval_samples", "int", 100, "sample paths per series by default", low=1),
    HP("model", "str", "best", "best (the best epoch's parameters under early stopping) or last",
       choices=("best", "last")),
])


def window_spec(hp: dict[str, Any]) -> WindowSpec:
    freq = Frequency.parse(hp["time_freq"])
    card, dyn = hp["cardinality"], hp["num_dynamic_feat"]
    return WindowSpec(hp["context_length"], hp["prediction_length"], max(freq.lags()), freq,
                      dynamic=None if dyn == "ignore" else (-1 if dyn == "auto" else int(dyn)),
                      cardinality=tuple(card) if isinstance(card, list) else None, auto_cat=card == "auto")


def window_length(hyperparameters: dict[str, Any]) -> int:
    """The length of a training window (lag history + context + prediction): the trainer's `n_features`."""
    return window_spec(HYPERPARAMETERS.parse(hyperparameters)).length


def examples(stream, hyperparameters: dict[str, Any]) -> SeriesWindows:
    """The trainer's hook: a stream of series records as batches of training windows."""
    return SeriesWindows(stream, window_spec(hyperparameters),
                         hyperparameters.get("min_batches_per_epoch", MIN_BATCHES))


def batches_of(records: Iterable[dict | SeriesRecord], hyperparameters: dict[str, Any],
               batch_size: int) -> Iterator[WindowBatch]:
    """Training windows of records in memory (dicts as JSON lines hold them), `batch_size` series at a time."""
    hp = HYPERPARAMETERS.parse(hyperparameters)
    spec, block = window_spec(hp), []
    for rec in _records(records) + [None]:
        if rec is not None:
            block.append(rec)
        if block and (rec is None or len(block) == batch_size):
            w = block_windows(block, spec)
            if w is not None:
                yield to_batch(w)
            block = []


def _records(records: Iterable[dict | SeriesRecord], horizon: int = 0) -> list[SeriesRecord]:
    """Dicts validated as the series reader validates a line (errors name the record's index)."""
    out, shape = [], {}
    for i, r in enumerate(records):
        out.append(r if isinstance(r, SeriesRecord) else from_dict(r, i + 1, horizon=horizon, shape=shape))
    return out


# ----------------------------------------------------------------------------------------------------- state

def init(hyperparameters: dict[str, Any], n_features: int, seed: int = 0,
         device: str | torch.device = "cpu") -> State:
    """An empty state for windows of `n_features` points; the network is built at the first batch, whose windows
    say how many categorical and dynamic features the series carry (cardinality and num_dynamic_feat auto)."""
    hp = HYPERPARAMETERS.parse(hyperparameters)
    spec = window_spec(hp)
    if n_features != spec.length:
        raise UsageError(f"deepar windows hold {spec.length} points (lag history {spec.history} + context "
                         f"{spec.context_length} + prediction {spec.prediction_length}), not {n_features}")
    rng = torch.Generator().manual_seed(seed).get_state()
    meta = {"n_features": n_features, "records_seen": 0, "seed": seed, "algorithm_version": VERSION, "step": 0,
            "epochs_done": 0, "epoch_loss": [0.0, 0.0], "final_loss": None, "best_loss": None, "bad_epochs": 0,
            "lags": spec.freq.lags(), "history": spec.history}
    return State(NAME, hp, {"rng": rng}, meta)


def _build(state: State, batch: WindowBatch, device: torch.device) -> None:
    """The network's parameters (and Adam's zero moments) for the batch's numbers of features and cat fields."""
    hp, meta = state.hyperparameters, state.meta
    n_cat, n_feat = batch.cat.shape[1], batch.features.shape[2]
    card = hp["cardinality"] if isinstance(hp["cardinality"], list) else [1] * n_cat
    g = torch.Generator().manual_seed(INIT_SEED)
    H, E = hp["num_cells"], hp["embedding_dimension"]
    n_in = len(meta["lags"]) + n_feat + n_cat * E + 1
    params: dict[str, torch.Tensor] = {}
    bound = 1 / math.sqrt(H)  # torch's LSTM and Linear initialisation, from a fixed generator
    for k in range(hp["num_layers"]):
        width = n_in if k == 0 else H
        for name, shape in ((f"weight_ih_l{k}", (4 * H, width)), (f"weight_hh_l{k}", (4 * H, H)),
                            (f"bias_ih_l{k}", (4 * H,)), (f"bias_hh_l{k}", (4 * H,))):
            params["lstm." + name] = (torch.rand(shape, generator=g) * 2 - 1) * bound
    k_out = lik.n_params(hp["likelihood"])
    params["head.weight"] = (torch.rand((k_out, H), generator=g) * 2 - 1) * bound
    params["head.bias"] = (torch.rand((k_out,), generator=g) * 2 - 1) * bound
    for j, c in enumerate(card):
        params[f"embed.{j}"] = torch.zeros(c, E)
    for name, p in params.items():
        state.tensors["net." + name] = p.to(device)
        state.tensors["adam_m." + name] = torch.zeros_like(p, device=device)
        state.tensors["adam_v." + name] = torch.zeros_like(p, device=device)
    meta.update(n_cat=n_cat, n_step_features=n_feat, n_inputs=n_in)


def _params(tensors: dict[str, torch.Tensor], prefix: str = "net.") -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def update(state: State, batch: Batch) -> State:
    """One Adam step on a mini-batch of windows (the state's tensors are replaced and returned)."""
    if not isinstance(batch, WindowBatch):
        raise UsageError("deepar trains on windows of series (JSON lines records {\"start\", \"target\"}), not rows")
    t, meta, hp = state.tensors, state.meta, state.hyperparameters
    device = t["net.head.weight"].device if "net.head.weight" in t else _device(t)
    if "net.head.weight" not in t:
        _build(state, batch, device)
    b = to_device(batch, device)
    _check_batch(state, b)
    _grow_embeddings(state, b.cat)
    params = {k: v.detach().requires_grad_(True) for k, v in _params(t).items()}
    with _rng(state, device):
        nll, weight = loss_sum(meta, hp, params, b, train=True)
        loss = nll / weight.clamp(min=1)
        names = list(params)
        grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    grads = [torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)]
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    factor = min(1.0, CLIP_NORM / (float(norm) + 1e-6))
    meta["step"] += 1
    _adam(t, names, grads, factor, hp["learning_rate"], meta["step"])
    meta["records_seen"] += len(b)
    meta["epoch_loss"] = [meta["epoch_loss"][0] + float(nll.detach()), meta["epoch_loss"][1] + float(weight)]
    return state


def _device(t: dict[str, torch.Tensor]) -> torch.device:
    return next((v.device for v in t.values() if v.dtype != torch.uint8), torch.device("cpu"))


def _check_batch(state: State, b: WindowBatch) -> None:
    meta = state.meta
    if b.features.shape[2] != meta["n_step_features"] or b.cat.shape[1] != meta["n_cat"]:
        raise UsageError(f"these series carry {b.cat.shape[1]} cat fields and {b.features.shape[2]} step features "
                         f"where the model has {meta['n_cat']} and {meta['n_step_features']} (time features + age + "
                         "dynamic features): the series must carry the same fields as those trained on")
    if state.hyperparameters["likelihood"] == "negative-binomial" and bool((b.x < 0).any()):
        raise UsageError("likelihood negative-binomial models counts: the series hold negative values")


def _grow_embeddings(state: State, cat: torch.Tensor) -> None:
    """cardinality auto: a code beyond an embedding table's rows grows the table (and its moments) with zero rows."""
    if not len(cat) or isinstance(state.hyperparameters["cardinality"], list):
        return
    for j, most in enumerate(cat.max(0).values.tolist()):
        for prefix in ("net.", "adam_m.", "adam_v."):
            table = state.tensors[f"{prefix}embed.{j}"]
            if most >= table.shape[0]:
                state.tensors[f"{prefix}embed.{j}"] = torch.cat([table, table.new_zeros(most + 1 - table.shape[0],
                                                                                         table.shape[1])])


@contextlib.contextmanager
def _rng(state: State, device: torch.device):
    """torch's generator set to the state's for the step (dropout), and the advanced state kept; the caller's own
    generator is left as it was. On a GPU the step's CUDA seed is drawn from the state's CPU generator."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.set_rng_state(state.tensors["rng"])
        if device.type == "cuda":
            torch.cuda.manual_seed(int(torch.randint(0, 2**62, (1,))))
        yield
        state.tensors["rng"] = torch.get_rng_state()


def _adam(t: dict[str, torch.Tensor], names: list[str], grads: list[torch.Tensor], factor: float, lr: float,
          step: int, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
    for name, g in zip(names, grads):
        g = g * factor
        m, v, p = t["adam_m." + name], t["adam_v." + name], t["net." + name]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        p.sub_((m / (1 - b1 ** step)) / ((v / (1 - b2 ** step)).sqrt_().add_(eps)), alpha=lr)


# ------------------------------------------------------------------------------------------ epochs, merge

def end_epoch(state: State, validation: Iterable[Batch] | None = None) -> tuple[State, bool]:
    """Close an epoch: its mean training loss (SageMaker's train:final_loss), the validation loss when a source is
    given, and under early_stopping_patience the best epoch's parameters and whether to stop."""
    meta, hp, t = state.meta, state.hyperparameters, state.tensors
    total, weight = meta["epoch_loss"]
    meta["final_loss"] = total / weight if weight else None
    meta["epoch_loss"] = [0.0, 0.0]
    meta["epochs_done"] += 1
    loss = meta["final_loss"]
    if validation is not None and "net.head.weight" in t:
        params, total, weight = _params(t), 0.0, 0.0
        with torch.no_grad():
            for b in validation:
                nll, w = loss_sum(meta, hp, params, to_device(b, _device(t)), train=False)
                total, weight = total + float(nll), weight + float(w)
        loss = meta["validation_loss"] = total / weight if weight else None
    patience = hp["early_stopping_patience"]
    if patience is None or loss is None:
        return state, False
    if meta["best_loss"] is None or loss < meta["best_loss"]:
        meta["best_loss"], meta["bad_epochs"], meta["best_epoch"] = loss, 0, meta["epochs_done"]
        for name, p in _params(t).items():
            t["best." + name] = p.clone()
    else:
        meta["bad_epochs"] += 1
    return state, meta["bad_epochs"] >= patience


def merge(a: State, b: State) -> State:
    """Parameters and Adam moments averaged, weighted by the windows each state trained on (see the docstring)."""
    check_mergeable(a, b, STRUCTURAL)
    if "net.head.weight" not in b.tensors:
        return a.copy()
    if "net.head.weight" not in a.tensors:
        return b.copy()
    if (a.meta["n_cat"], a.meta["n_step_features"]) != (b.meta["n_cat"], b.meta["n_step_features"]):
        raise IncompatibleStateError("cannot merge deepar states trained on series with different cat fields or "
                                     "dynamic features")
    out = a.copy()
    device = _device(a.tensors)
    na, nb = a.meta["records_seen"], b.meta["records_seen"]
    fa = na / (na + nb) if na + nb else 0.5
    for k, va in a.tensors.items():
        if not k.startswith(("net.", "adam_m.", "adam_v.")):
            continue
        vb = b.tensors[k].to(device)
        if va.shape != vb.shape:  # embedding tables grown apart: a row one side lacks is the other side's
            rows = max(va.shape[0], vb.shape[0])
            va, vb = _pad_rows(va, vb, rows), _pad_rows(vb, va, rows)
        out.tensors[k] = fa * va + (1 - fa) * vb
    for k in [k for k in out.tensors if k.startswith("best.")]:
        del out.tensors[k]  # the average is the estimate now; best epochs restart from it
    out.meta.update(records_seen=na + nb, step=max(a.meta["step"], b.meta["step"]), best_loss=None, bad_epochs=0,
                    epoch_loss=[x + y for x, y in zip(a.meta["epoch_loss"], b.meta["epoch_loss"])])
    return out


def _pad_rows(v: torch.Tensor, other: torch.Tensor, rows: int) -> torch.Tensor:
    if v.shape[0] == rows:
        return v
    return torch.cat([v, other[v.shape[0]:rows].to(v.device)])


# -------------------------------------------------------------------------------------------------- finalize

class DeepARModel(Model):
    """The network's parameters and what forecasting needs: `forecast(records)`, `predict_request(request)`."""

    algorithm = NAME
    json_key = "predictions"

    @property
    def hp(self) -> dict[str, Any]:
        return self.meta["hyperparameters"]

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise UsageError("deepar forecasts series records, not rows: use model.forecast(records) or "
                         "`onepass predict RUN --data series.jsonl`")

    def forecast(self, records: Iterable[dict | SeriesRecord], num_samples: int | None = None,
                 quantiles: Iterable[float | str] | None = None,
                 output_types: Iterable[str] = ("mean", "quantiles"), seed: int = 0,
                 batch_size: int = 256) -> list[dict[str, Any]]:
        """SageMaker's prediction objects for the prediction_length points after each series (dicts as JSON lines
        hold them, or `SeriesRecord`s): `mean`, `quantiles` ({"0.1": [...], ...}) and `samples`, as asked."""
        out = []
        block: list[SeriesRecord] = []
        for rec in _records(records, self.hp["prediction_length"]) + [None]:
            if rec is not None:
                block.append(rec)
            if block and (rec is None or len(block) == batch_size):
                out.extend(self._forecast(block, num_samples, quantiles, output_types, seed + len(out)))
                block = []
        return out

    def _forecast(self, recs, num_samples, quantiles, output_types, seed) -> list[dict[str, Any]]:
        hp, P = self.hp, self.hp["prediction_length"]
        spec = window_spec(hp)
        for rec in recs:
            spec.check(rec, horizon=P)
        batch = to_batch(stack([cut(r, spec, np.array([r.target.size + P]), horizon=P) for r in recs]))
        ns = int(num_samples or self.meta["num_eval_samples"])
        qs = [float(q) for q in (quantiles if quantiles is not None else self.meta["test_quantiles"])]
        params = {k: v for k, v in self.tensors.items()}
        batch = to_device(batch, params["head.weight"].device)
        _check_batch_model(self.meta, batch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            paths = sample_paths(self.meta, hp, params, batch, ns).cpu().double()
        types = set(output_types)
        unknown = types - {"mean", "quantiles", "samples"}
        if unknown:
            raise UsageError(f"output_types {sorted(unknown)}: valid values: mean, quantiles, samples")
        result = []
        qv = torch.quantile(paths, torch.tensor(qs, dtype=torch.float64), dim=1) if "quantiles" in types else None
        for i in range(len(recs)):
            r: dict[str, Any] = {}
            if "mean" in types:
                r["mean"] = paths[i].mean(0).tolist()
            if qv is not None:
                r["quantiles"] = {_qkey(q): qv[j, i].tolist() for j, q in enumerate(qs)}
            if "samples" in types:
                r["samples"] = paths[i].tolist()
            result.append(r)
        return result

    def forecast_stream(self, stream, configuration: dict[str, Any] | None = None,
                        batch_size: int = 256) -> Iterator[dict[str, Any]]:
        """Forecasts of every series record of a `Stream` (SageMaker's batch transform: one prediction a record, in
        order), `configuration` as in a request (num_samples, output_types, quantiles)."""
        c = configuration or {}
        block: list[SeriesRecord] = []
        n = 0
        for rec in _then_none(stream.series(horizon=self.hp["prediction_length"])):
            if rec is not None:
                block.append(rec)
            if block and (rec is None or len(block) == batch_size):
                yield from self._forecast(block, c.get("num_samples"), c.get("quantiles"),
                                          c.get("output_types", ("mean", "quantiles")), n)
                n, block = n + len(block), []

    def predict_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """SageMaker's endpoint contract: {"instances": [...], "configuration": {"num_samples", "output_types",
        "quantiles"}} -> {"predictions": [...]}, one entry per instance in order."""
        if not isinstance(request, dict) or not isinstance(request.get("instances"), list):
            raise UsageError('a DeepAR request is {"instances": [{"start": ..., "target": [...]}, ...], '
                             '"configuration": {...}}')
        c = request.get("configuration") or {}
        return {"predictions": self.forecast(request["instances"], c.get("num_samples"), c.get("quantiles"),
                                             c.get("output_types", ("mean", "quantiles")))}


def _then_none(it: Iterable) -> Iterator:
    yield from it
    yield None


def _qkey(q: float) -> str:
    return f"{q:g}"


def _check_batch_model(meta: dict[str, Any], b: WindowBatch) -> None:
    if b.features.shape[2] != meta["n_step_features"] or b.cat.shape[1] != meta["n_cat"]:
        raise UsageError(f"these series carry {b.cat.shape[1]} cat fields and {b.features.shape[2] - meta['n_time'] - 1}"
                         f" dynamic features where the model has {meta['n_cat']} and "
                         f"{meta['n_step_features'] - meta['n_time'] - 1}")
    if meta["n_cat"] and isinstance(meta["hyperparameters"]["cardinality"], str):
        rows = [meta["embedding_rows"][j] for j in range(meta["n_cat"])]
        for j in range(meta["n_cat"]):
            if bool((b.cat[:, j] >= rows[j]).any()):
                raise UsageError(f"cat[{j}] holds a code the model never saw in training (codes 0 to {rows[j] - 1})")


Model = DeepARModel


def finalize(state: State, **choice: Any) -> DeepARModel:
    """The forecasting model: the last parameters, or the best epoch's under early stopping (choice model=last gives
    the last anyway); test_quantiles and num_eval_samples are the model's defaults. The state is unchanged."""
    hp = state.hyperparameters
    base = {k: hp.get(k, v) for k, v in CHOICES.defaults().items()}
    c = CHOICES.parse({k: v for k, v in choice.items() if v is not None}, base=base)
    if "net.head.weight" not in state.tensors:
        raise UsageError("the state has seen no windows: nothing to finalize (series need prediction_length + 1 "
                         "points or more)")
    prefix = "best." if c["model"] == "best" and "best.head.weight" in state.tensors else "net."
    tensors = {k: v.clone() for k, v in _params(state.tensors, prefix).items()}
    meta = {k: state.meta[k] for k in ("lags", "history", "n_cat", "n_step_features", "n_inputs", "n_features")}
    meta.update(hyperparameters=hp, n_time=len(FEATURES[Frequency.parse(hp["time_freq"]).unit]),
                test_quantiles=[float(q) for q in c["test_quantiles"]], num_eval_samples=c["num_eval_samples"],
                windows=state.meta["records_seen"], epochs_done=state.meta["epochs_done"], choice=c,
                embedding_rows=[int(tensors[f"embed.{j}"].shape[0]) for j in range(state.meta["n_cat"])],
                parameters="best epoch" if prefix == "best." else "last")
    meta["validation"] = {k: state.meta[k] for k in ("final_loss", "validation_loss", "best_loss")
                          if state.meta.get(k) is not None}
    return DeepARModel(tensors, meta)


def evaluate(model: DeepARModel, batch: Batch) -> dict[str, Any]:
    """Sums for the test metrics over the windows that end at their series' end (the last prediction_length points
    forecast from the points before them)."""
    b = to_device(batch, model.tensors["head.weight"].device)
    keep = b.last
    if not bool(keep.any()):
        return {}
    b = WindowBatch(b.x[keep], observed=b.observed[keep], features=b.features[keep], cat=b.cat[keep])
    _check_batch_model(model.meta, b)
    H, C = model.meta["history"], model.hp["context_length"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(EVAL_SEED)
        paths = sample_paths(model.meta, model.hp, model.tensors, b, model.meta["num_eval_samples"]).double()
    y, o = b.x[:, H + C:].double(), b.observed[:, H + C:].double()
    qs = torch.tensor(model.meta["test_quantiles"] + [0.5], dtype=torch.float64, device=paths.device)
    pred = torch.quantile(paths, qs, dim=1)  # (Q, n, P)
    loss = 2 * ((y - pred) * ((y <= pred).double() - qs[:, None, None])).abs() * o
    err = (paths.mean(1) - y) * o
    return {"quantile_loss": loss[:-1].sum((1, 2)).cpu(), "abs_target": float((y.abs() * o).sum()),
            "abs_error_median": float(((pred[-1] - y).abs() * o).sum()), "squared_error": float((err ** 2).sum()),
            "points": float(o.sum()), "series": float(len(y))}


def metrics(model: DeepARModel, sums: dict[str, Any]) -> dict[str, float]:
    """SageMaker's test metric names from summed `evaluate` results."""
    if not sums:
        return {}
    out = {"RMSE": math.sqrt(sums["squared_error"] / max(sums["points"], 1))}
    denom = max(sums["abs_target"], 1e-12)
    wql = (sums["quantile_loss"] / denom).tolist()
    out["mean_wQuantileLoss"] = float(np.mean(wql))
    for q, v in zip(model.meta["test_quantiles"], wql):
        out[f"wQuantileLoss[{_qkey(q)}]"] = v
    out["ND"] = sums["abs_error_median"] / denom
    out["series"] = int(sums["series"])
    return out


def describe(state: State) -> dict[str, Any]:
    m = state.meta
    out = {"records_seen": m["records_seen"], "windows_seen": m["records_seen"], "steps": m["step"],
           "epochs_done": m["epochs_done"]}
    for k in ("final_loss", "validation_loss", "best_loss", "best_epoch"):
        if m.get(k) is not None:
            out[k] = m[k]
    return out


def summary(model: DeepARModel) -> list[str]:
    m, hp = model.meta, model.hp
    lines = [f"model: DeepAR, {hp['num_layers']} x {hp['num_cells']} LSTM, {hp['likelihood']} likelihood, "
             f"{hp['time_freq']} steps, context {hp['context_length']}, forecasts {hp['prediction_length']} "
             f"({m['parameters']} parameters after {m['windows']:,} windows, {m['epochs_done']} epochs)",
             f"  lags: {', '.join(map(str, m['lags']))}"]
    if m["validation"]:
        lines.append("  loss: " + ", ".join(f"{k} {v:.4g}" for k, v in m["validation"].items()))
    return lines
