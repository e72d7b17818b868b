"""Neural topic model: a variational autoencoder over bag-of-words documents, trained on a stream by Adam.

Model.  A document is its word counts x (V words, `feature_dim`). An encoder, a multilayer perceptron of
`encoder_layers` (auto: 3K and 2K units for K = `num_topics`, SageMaker's default) with `encoder_layers_activation`
and optional batch normalization, maps x to the mean mu and log-variance log s^2 of a K-dimensional Gaussian
posterior q(z | x) (logistic-normal over the topic simplex). A sample z = mu + s * eps, eps ~ N(0, I)
(reparameterization), is decoded into word probabilities by one of two decoders:

- `nvdm` (Miao, Yu & Blunsom 2016; SageMaker's NTM): p(w | z) = softmax(z B + b), prior p(z) = N(0, I);
- `prodlda` (Srivastava & Sutton 2017): theta = softmax(z), p(w | z) = softmax(BN(theta B)), a product of experts
  whose logits are batch-normalized word by word (without scale or shift: batch statistics in training, running
  ones to predict), with the Laplace approximation of a Dirichlet(alpha = 1) prior in the softmax basis:
  N(0, (1 - 1/K) I).

Each document's loss is the negative evidence lower bound,

    L(x) = - sum_w x_w log p(w | z) + KL(q(z | x) || p(z)),    KL = 1/2 sum_k (s_k^2 + (mu_k - m_k)^2) / v_k
                                                                   - 1 + log v_k - log s_k^2,

with one sample z per document, averaged over the mini-batch. Topic k is row k of B (K x V); its top words are
its largest entries (for prodlda, of the normalized (B_k - mean) / sd). A document's `topic_weights` (SageMaker's prediction) are softmax(mu).

Update.  One step of the chosen optimizer (`adam` by default; also SageMaker's `adadelta`, `adagrad`, `rmsprop`,
`sgd`) on each mini-batch's mean loss, its gradient scaled by `rescale_gradient`, clipped element-wise to
`clip_gradient`, plus `weight_decay` times the parameter (L2). Parameters, optimizer moments, batch-norm running
statistics, the step count and the generator that draws eps (and the `sub_sample` choice of documents) are all
tensors of the state: a state saved after any batch and resumed gives the same state, bit for bit on the CPU, as
a run never stopped. The initial parameters come from a fixed generator, the same for every seed (the seed draws
eps and sub-samples), so that states trained apart start alike and can be averaged.

Packing.  `extra_num_topics` (e.g. 10,50,100) trains a network for each of those topic counts beside num_topics's,
in the same pass: each mini-batch is read, checked and sub-sampled once, then every network takes its own step on
it (SageMaker's model packing applied to topics; the networks differ in shape, so their steps run one after the
other, not fused). num_topics's network keeps its tensors' names and its generator, so it is bit for bit the
network an unpacked run trains; topic count K's live under "k{K}/" with their own generator. Every epoch scores each
network (validation perplexity, early stopping: training stops once none improves), `describe` (inspect) shows
each one's figures and topics, and finalize picks one without the data: `--num-topics K`, or `--select perplexity`
(lowest last validation perplexity) or `--select uniqueness` (highest topic uniqueness).

Input.  Word counts as sparse CSR batches (LibSVM, sparse RecordIO-protobuf; the first layer is a gather of the
present words' weights, never a dense batch) or dense rows (CSV, dense RecordIO). A count that is negative or not
finite, or a document of another width, is refused with a DataError naming the record; empty documents are
skipped (they carry no words to explain). A vocabulary (`vocab`, SageMaker's vocab.txt) names the words.

Merge.  A weighted average of the parameters, moments and statistics by the documents each side trained on:
local SGD's average, a documented approximation (exact when one side is empty). Measured on generated documents
(testing.CASES["ntm"], K = 4, batches of 100, defaults), perplexity on the whole stream of the merged halves
against the whole: 2 x 10,000 documents 30.4 against 23.1 (+32 %; each half alone 30.5: the loss is the halved
number of steps, not the average). Networks that drift apart average badly: at learning rate 0.02 the halves
reached 21.7 and 21.1 but their merge 41.4 (2 x 20,000: 21.0 and 20.9, merged 30.4). So merge states trained
apart briefly or slowly, and on several processes average often instead: AVERAGED makes `--sync-every K` average
the whole network every K mini-batches (local SGD), which keeps the processes' networks together.

Metrics.  Perplexity from the bound, exp(mean_d L(x_d) / N_d) (AVITM's per-document form; N_d = the words of
document d), on `--validation` every epoch and on `--test` (one sample per document from a fixed generator, so a
model scores the same data alike every time); SageMaker's `total_loss` (mean L), `recons_loss` and
`kl_divergence`; and topic uniqueness (Nan et al. 2019) of the top 10 words: TU = mean_k (1/10) sum_{w in top_k}
1 / cnt(w), cnt(w) the topics whose top 10 hold w, in [1/K, 1]. Early stopping compares each epoch's validation
loss (the training loss without a validation source) with the best so far: `num_patience_epochs` epochs without a
relative improvement above `tolerance` stop training.

Defaults, by measurement. On generated documents (20,000 of 60 words from 5 known topics over 100 words, Dirichlet
0.05 topics and 0.2 mixtures: datasets.topics; 10 epochs; cosine of each known topic with its Hungarian match),
ProdLDA without the decoder's batch normalization recovered all five at 0.95-0.99 (lr 0.02) and NVDM 0.42-0.94 at
any of lr 0.002-0.02. But on real reviews (benchmarks/run_ntm.py: 18,112 clothing reviews, 2,000 words, K = 20)
that ProdLDA collapsed, every topic the corpus's own word distribution (topic uniqueness 0.07, at lr 0.002 and
0.02, 5 to 15 epochs), and NVDM's topics were unique (0.92) but made of rare words (NPMI -0.43). With its authors'
batch normalization of the decoder's logits (AVITM; it bounds how peaked a topic can be, so its perplexity is the
worse: 46 against 18 on the generated documents, where it finds four topics at 0.81-0.98 and merges the fifth)
ProdLDA gave coherent topics on the reviews: NPMI -0.010 and uniqueness 0.70 at lr 0.002 (15 epochs), -0.023 and
0.69 at lr 0.02. So DEFAULT_DECODER = prodlda, batch-normalized, learning rate 0.002 (AVITM's), and softplus
(AVITM's) rather than SageMaker's sigmoid, which at 5 epochs had left a generated topic unlearnt (0.17).

    >>> import torch, onepass
    >>> g = torch.Generator().manual_seed(0)
    >>> topics = torch.eye(3).repeat_interleave(3, dim=1) / 3          # topic k: words 3k, 3k+1, 3k+2
    >>> mix = torch.rand(3000, 3, generator=g) ** 4; mix /= mix.sum(1, keepdim=True)
    >>> docs = torch.stack([torch.multinomial(m @ topics, 30, True, generator=g).bincount(minlength=9)
    ...                     for m in mix]).float()
    >>> state = onepass.ntm.init({"num_topics": 3, "learning_rate": 0.02}, n_features=9)  # small data: a large step
    >>> for epoch in range(3):
    ...     for i in range(0, 3000, 100):
    ...         state = onepass.ntm.update(state, onepass.Batch(docs[i:i + 100]))
    >>> model = onepass.ntm.finalize(state)
    >>> sorted(sorted(t[:3]) for t in model.meta["topics"])  # each topic's top 3 words (ids: no vocabulary)
    [['0', '1', '2'], ['3', '4', '5'], ['6', '7', '8']]
    >>> w = model.predict(docs[:1])["topic_weights"]
    >>> w.shape, round(float(w.sum()), 4)
    (torch.Size([1, 3]), 1.0)
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F

from ..data import text, vocabulary as vocab_file
from ..data.batches import Batch, Examples, Stream
from ..errors import DataError, IncompatibleStateError, UsageError
from ..hyperparameters import HP, HyperParameters
from ..state import State
from .base import Model, check_mergeable, takes_arrays

NAME = "ntm"
VERSION = 1
ACCEPTS_SPARSE = True
STRUCTURAL = ("num_topics", "extra_num_topics", "decoder", "encoder_layers", "encoder_layers_activation", "batch_norm",
              "feature_dim", "optimizer")
DEFAULT_DECODER = "prodlda"
TOP_WORDS = 10          # words per topic in the model's `topics` and in topic uniqueness (SageMaker's TU: 10)
PARAMETER_SEED = 0x5EED  # the initial parameters' generator: the same start for every run (see the docstring)
EPS = 1e-8
BN_MOMENTUM, BN_EPS = 0.1, 1e-5
ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "softplus": F.softplus}
OPTIMIZERS = ("adam", "adadelta", "adagrad", "rmsprop", "sgd")
AVERAGED = ("network",)  # --sync-every: every parameter, as one flat tensor (shared_parameters)


def _check(hp: dict[str, Any]) -> None:
    if hp["num_topics"] is None:
        raise UsageError("hyperparameter num_topics is required: the number of topics (2 to 1000)")
    topic_counts(hp)
    layers(hp)


def topic_counts(hp: dict[str, Any]) -> list[int]:
    """The topic counts the state trains: num_topics first, then `extra_num_topics` (model packing)."""
    try:
        extra = [int(k) for k in hp.get("extra_num_topics") or []]
    except ValueError:
        extra = [0]
    if any(not 2 <= k <= 1000 for k in extra) or len(set(extra + [hp["num_topics"]])) != len(extra) + 1:
        raise UsageError(f"hyperparameter extra_num_topics = {hp.get('extra_num_topics')!r} is invalid: expected "
                         "distinct topic counts from 2 to 1000 other than num_topics, e.g. 10,50,100")
    return [hp["num_topics"]] + extra


HYPERPARAMETERS = HyperParameters([
    HP("num_topics", "int", None, "topics K (required)", low=2, high=1000),
    HP("extra_num_topics", "list", [], "further topic counts trained in the same pass over the same batches, each "
       "its own network (SageMaker's model packing applied to topics), e.g. 10,50,100; finalize --num-topics K or "
       "--select perplexity|uniqueness picks one"),
    HP("feature_dim", "int", None, "vocabulary size V (required for LibSVM); checked against the data", low=1,
       high=1_000_000),
    HP("decoder", "str", DEFAULT_DECODER, "prodlda: softmax(softmax(z) B), a Dirichlet-like prior; nvdm: "
       "softmax(z B + b), a Gaussian prior (SageMaker's)", choices=("prodlda", "nvdm")),
    HP("encoder_layers", "str", "auto", "comma-separated hidden layer sizes (auto: 3K,2K)"),
    HP("encoder_layers_activation", "str", "softplus", "sigmoid (SageMaker's default), tanh, relu or softplus",
       choices=tuple(ACTIVATIONS)),
    HP("batch_norm", "bool", False, "batch normalization of the encoder's hidden layers"),
    HP("optimizer", "str", "adam", "adam, adadelta (SageMaker's default), adagrad, rmsprop or sgd",
       choices=OPTIMIZERS),
    HP("learning_rate", "float", 0.002, "step size", low=1e-6, high=1.0),
    HP("mini_batch_size", "int", 256, "documents per mini-batch", low=1, high=100_000),
    HP("epochs", "int", 50, "most passes over the data (early stopping may end sooner)", low=1),
    HP("num_patience_epochs", "int", 3, "epochs without improvement before stopping", low=1, high=100),
    HP("tolerance", "float", 0.001, "relative loss decrease that counts as an improvement", low=0.0, high=0.1),
    HP("clip_gradient", "float", math.inf, "clip each gradient entry to [-c, c]", low=1e-3),
    HP("rescale_gradient", "float", 1.0, "factor on the gradient", low=1e-3, high=1.0),
    HP("sub_sample", "float", 1.0, "share of the documents trained on each epoch (drawn at random)", low=1e-6,
       high=1.0),
    HP("weight_decay", "float", 0.0, "L2 penalty on the parameters", low=0.0, high=1.0),
    HP("vocab", "str", None, "a vocabulary file (SageMaker's vocab.txt: one word a line, in feature order): "
       "topics print as words, raw text is counted over it; kept in the state"),
    HP("vocab_size", "int", 2000, "raw text without --vocab: the most words of the vocabulary built from the head "
       "of the stream", low=1, high=1_000_000),
    HP("vocab_documents", "int", 100_000, "raw text without --vocab: the head documents the vocabulary is built "
       "from", low=1),
    HP("min_df", "int", 2, "raw text without --vocab: fewest head documents a word must appear in", low=1),
    HP("max_df", "float", 0.5, "raw text without --vocab: largest share of head documents a word may appear in",
       low=0.0, high=1.0),
], check=_check)

SELECT = ("perplexity", "uniqueness")
CHOICES = HyperParameters([
    HP("num_topics", "int", None, "which of the packed topic counts (num_topics, extra_num_topics) to finalize "
       "(default: num_topics, or the one --select picks)", low=2, high=1000),
    HP("select", "str", None, "pick the topic count by the last validation's perplexity (lowest; needs "
       "--validation in training) or its topic uniqueness (highest)", choices=SELECT),
])


def layers(hp: dict[str, Any]) -> list[int]:
    """The encoder's hidden layer sizes."""
    spec, k = str(hp["encoder_layers"]).strip().lower(), hp["num_topics"]
    if spec == "auto":
        return [3 * k, 2 * k]
    try:
        sizes = [int(s) for s in spec.replace(" ", "").split(",") if s]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise UsageError(f"hyperparameter encoder_layers = {hp['encoder_layers']!r} is invalid: expected auto or "
                         "comma-separated positive integers, e.g. 100,50")
    return sizes


def _parameter_shapes(hp: dict[str, Any], V: int) -> dict[str, tuple[int, ...]]:
    K, sizes = hp["num_topics"], layers(hp)
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (a, b) in enumerate(zip([V] + sizes, sizes)):
        shapes[f"enc{i}.weight"], shapes[f"enc{i}.bias"] = (a, b), (b,)
    shapes["mu.weight"], shapes["mu.bias"] = (sizes[-1], K), (K,)
    shapes["logvar.weight"], shapes["logvar.bias"] = (sizes[-1], K), (K,)
    shapes["beta"] = (K, V)
    if hp["decoder"] == "nvdm":
        shapes["dec.bias"] = (V,)
    return shapes


# ----------------------------------------------------------------------------------------------- state

def init(hyperparameters: dict[str, Any], n_features: int, seed: int = 0,
         device: str | torch.device = "cpu") -> State:
    """A fresh network for `n_features` words: Xavier-uniform weights, zero biases, zero moments."""
    built = hyperparameters.get("vocabulary")  # a Words from `examples` (raw text), not a hyperparameter
    hp = HYPERPARAMETERS.parse({k: v for k, v in hyperparameters.items() if k != "vocabulary"})
    if hp["feature_dim"] is not None and hp["feature_dim"] != n_features:
        raise UsageError(f"hyperparameter feature_dim = {hp['feature_dim']} but the data has {n_features} words")
    tensors: dict[str, torch.Tensor] = {}
    for K in topic_counts(hp):
        pre = prefix(hp, K)
        tensors.update({pre + k: v for k, v in _network({**hp, "num_topics": K}, n_features, seed).items()})
    tensors = {k: (v if k.endswith("rng") else v.to(device)) for k, v in tensors.items()}
    meta = {"n_features": n_features, "records_seen": 0, "documents_trained": 0, "step": 0, "seed": seed,
            "algorithm_version": VERSION, "epochs_done": 0, "best_loss": None, "bad_epochs": 0}
    if len(topic_counts(hp)) > 1:  # each packed network's early-stopping record and latest validation
        meta["packed"] = {str(K): {"best_loss": None, "bad_epochs": 0} for K in topic_counts(hp)[1:]}
    state = State(NAME, hp, tensors, meta)
    if built is not None or hp["vocab"]:
        set_vocabulary(state, built.words if built is not None else vocab_file.read(hp["vocab"]))
    return state


def _network(hp: dict[str, Any], n_features: int, seed: int) -> dict[str, torch.Tensor]:
    """One network's tensors: parameters from the fixed generator, zero moments, batch-norm statistics, the
    epoch's sums and the generator that draws eps."""
    gen = torch.Generator().manual_seed(PARAMETER_SEED)
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in _parameter_shapes(hp, n_features).items():
        if len(shape) == 2 and not name.startswith("logvar"):  # logvar starts at 0: s = 1 (AVITM)
            bound = math.sqrt(6 / sum(shape))
            tensors[name] = (torch.rand(shape, generator=gen) * 2 - 1) * bound
        else:
            tensors[name] = torch.zeros(shape)
    for name in list(tensors):
        tensors["m1." + name], tensors["m2." + name] = torch.zeros_like(tensors[name]), torch.zeros_like(tensors[name])
    if hp["batch_norm"]:
        for i, size in enumerate(layers(hp)):
            tensors[f"enc{i}.bn_mean"], tensors[f"enc{i}.bn_var"] = torch.zeros(size), torch.ones(size)
    if hp["decoder"] == "prodlda":
        tensors["dec.bn_mean"], tensors["dec.bn_var"] = torch.zeros(n_features), torch.ones(n_features)
    # loss, words, documents of the epoch so far (early stopping without a validation source)
    tensors["epoch_sums"] = torch.zeros(3, dtype=torch.float64)
    tensors["rng"] = torch.Generator().manual_seed(seed).get_state()
    return tensors


def prefix(hp: dict[str, Any], K: int) -> str:
    """Where topic count K's tensors live in the state: num_topics's under their own names (a packed state's
    first network is the unpacked state's, bit for bit), a packed K's under "k{K}/"."""
    return "" if K == hp["num_topics"] else f"k{K}/"


def packed(state: State, K: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Topic count K's tensors (the state's own objects: in-place changes reach the state) and hyperparameters."""
    hp = state.hyperparameters
    if K not in topic_counts(hp):
        raise UsageError(f"num_topics = {K}: the state trained {', '.join(map(str, topic_counts(hp)))} topics "
                         "(num_topics, extra_num_topics)")
    pre = prefix(hp, K)
    t = {k[len(pre):]: v for k, v in state.tensors.items() if k.startswith(pre) and (pre or "/" not in k)}
    return t, {**hp, "num_topics": K}


def examples(stream: Stream, hyperparameters: dict[str, Any],
             state: State | Model | None = None) -> Stream | Examples:
    """Counts as they come (LibSVM, RecordIO-protobuf, CSV rows), or raw text (a stream with a `text_column`, or
    plain text files) counted over the vocabulary: the state's (or model's, to predict) when there is one, else
    `vocab`, else one built from the head of the stream (data/text.py), handed to `init` in `hyperparameters`."""
    if stream.text_column is None and stream.format != "text":
        return stream
    hp = hyperparameters
    if state is not None:
        if "vocabulary" not in state.tensors:
            raise UsageError(f"{stream.name}: the {'state' if isinstance(state, State) else 'model'} was trained on "
                             "word counts without a vocabulary; raw text needs the vocabulary its words are counted "
                             "over")
        hp["vocabulary"] = vocab_file.Words(vocabulary(state))
    elif hp.get("vocab") and "vocabulary" not in hp:
        hp["vocabulary"] = vocab_file.Words(vocab_file.read(hp["vocab"]))

    def words() -> list[str]:
        if "vocabulary" not in hp:
            if not stream.rereadable:
                raise UsageError(f"{stream.name} can be read once: the vocabulary cannot be built from its head and "
                                 "then counted over; give --vocab FILE")
            hp["vocabulary"] = vocab_file.Words(text.build_vocabulary(
                stream, stream.text_column, hp["vocab_size"], hp["vocab_documents"], hp["min_df"], hp["max_df"]))
        return hp["vocabulary"].words
    return text.TextExamples(stream, stream.text_column, words)


def set_vocabulary(state: State, words: list[str]) -> None:
    """Name the state's features; the vocabulary must have one word per feature."""
    if len(words) != state.meta["n_features"]:
        raise UsageError(f"the vocabulary has {len(words):,} words but the data {state.meta['n_features']:,} "
                         "features (feature_dim): line i of vocab.txt names feature i")
    state.tensors["vocabulary"] = vocab_file.to_tensor(words)


def vocabulary(state_or_model: State | Model) -> list[str]:
    """The words of the features, or their ids as strings when no vocabulary was given."""
    t = state_or_model.tensors.get("vocabulary")
    return vocab_file.from_tensor(t) if t is not None else [str(i) for i in range(state_or_model.meta["n_features"])]


def parameters(tensors: dict[str, torch.Tensor], hp: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network's trainable tensors, by name."""
    return {k: tensors[k] for k in _parameter_shapes(hp, tensors["beta"].shape[1])}


def update(state: State, batch: Batch) -> State:
    """One optimizer step of each packed network on the mini-batch's mean negative ELBO (the state's tensors
    change in place). The documents (and `sub_sample`'s choice, drawn by num_topics's generator) are the same for
    every topic count; each draws its own eps."""
    t, hp, meta = state.tensors, state.hyperparameters, state.meta
    x = checked_counts(batch, t["beta"].device, meta["n_features"], meta["records_seen"])
    meta["records_seen"] += x.shape[0]
    if "oov_tokens" in batch.position:  # raw text: the tokens of this epoch so far, and those out of the vocabulary
        meta["text"] = {k: batch.position[k] for k in ("tokens", "oov_tokens")}
    gen = torch.Generator()
    gen.set_state(t["rng"])
    if hp["sub_sample"] < 1.0:
        x = _rows(x, torch.rand(x.shape[0], generator=gen) < hp["sub_sample"])
    x = _rows(x, _lengths(x) > 0)  # an empty document has nothing to explain
    n = x.shape[0]
    if n == 0:
        t["rng"] = gen.get_state()
        return state
    meta["step"] += 1
    words = _lengths(x).sum()  # a tensor: no read from a GPU each batch
    for K in topic_counts(hp):
        tk, hk = packed(state, K)
        if K != hp["num_topics"]:
            gen = torch.Generator()
            gen.set_state(tk["rng"])
        t[prefix(hp, K) + "rng"] = _step(tk, hk, x, gen, meta["step"], words)
    meta["documents_trained"] += n
    return state


def _step(t: dict[str, torch.Tensor], hp: dict[str, Any], x: torch.Tensor, gen: torch.Generator, step: int,
          words: torch.Tensor) -> torch.Tensor:
    """One network's optimizer step on the non-empty documents x; returns its generator's new state."""
    eps = torch.randn(x.shape[0], hp["num_topics"], generator=gen).to(x.device)
    params = {k: v.detach().requires_grad_(True) for k, v in parameters(t, hp).items()}
    rec, kl = _losses(params, t, hp, x, eps, training=True)
    loss = (rec + kl).mean()
    grads = torch.autograd.grad(loss, list(params.values()))
    with torch.no_grad():
        for (name, p), g in zip(parameters(t, hp).items(), grads):
            _optimize(hp, step, p, g, t["m1." + name], t["m2." + name])
        sums = t["epoch_sums"]
        sums += torch.stack([(rec + kl).sum().to(sums), words.to(sums), torch.tensor(x.shape[0]).to(sums)])
    return gen.get_state()


def checked_counts(batch: Batch, device: torch.device, n_features: int, before: int) -> torch.Tensor:
    """The batch's counts on `device`, float32; a negative or non-finite count, or another width, is refused,
    naming the record (its number in the stream, and its source and line where the batch says)."""
    x = batch.x.to(device, torch.float32)
    if x.shape[1] != n_features:
        raise DataError(f"documents of {x.shape[1]} words where the vocabulary has {n_features} (feature_dim)",
                        source=batch.position.get("path"), reason="wrong width")
    values = x.values() if x.layout == torch.sparse_csr else x
    bad = ~torch.isfinite(values) | (values < 0)
    if bool(bad.any()):
        flat = int(bad.flatten().nonzero()[0])
        if x.layout == torch.sparse_csr:
            row = int(torch.searchsorted(x.crow_indices(), flat, right=True)) - 1
            col, value = int(x.col_indices()[flat]), float(values[flat])
        else:
            row, col = divmod(flat, x.shape[1])
            value = float(x[row, col])
        line = batch.position.get("line")
        where = f"line {line - len(batch) + row}" if isinstance(line, int) and batch.position.get("path") else \
            f"record {before + row + 1:,} of the stream"
        raise DataError(f"{where}: word {col} has count {value} (counts must be finite and not negative)",
                        source=batch.position.get("path"), reason="bad count")
    return x


def _lengths(x: torch.Tensor) -> torch.Tensor:
    """Words per document."""
    if x.layout == torch.sparse_csr:
        rows = torch.repeat_interleave(torch.arange(x.shape[0], device=x.device), x.crow_indices().diff())
        return torch.zeros(x.shape[0], device=x.device).index_add_(0, rows, x.values())
    return x.sum(1)


def _rows(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The rows of a dense or sparse CSR matrix where `keep` holds."""
    keep = keep.to(x.device)
    if bool(keep.all()):
        return x
    if x.layout != torch.sparse_csr:
        return x[keep]
    crow, counts = x.crow_indices(), x.crow_indices().diff()
    take = torch.repeat_interleave(keep, counts)
    new_crow = torch.cat([crow.new_zeros(1), counts[keep].cumsum(0)])
    return torch.sparse_csr_tensor(new_crow, x.col_indices()[take], x.values()[take],
                                   size=(int(keep.sum()), x.shape[1]), check_invariants=False)


def _encode(p: dict[str, torch.Tensor], t: dict[str, torch.Tensor], hp: dict[str, Any], x: torch.Tensor,
            training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """mu and log s^2 of q(z | x). A sparse batch meets the first layer as a weighted gather of its words' rows."""
    act = ACTIVATIONS[hp["encoder_layers_activation"]]
    h = x
    for i in range(len(layers(hp))):
        W, b = p[f"enc{i}.weight"], p[f"enc{i}.bias"]
        if h.layout == torch.sparse_csr:
            h = F.embedding_bag(h.col_indices(), W, h.crow_indices(), per_sample_weights=h.values(), mode="sum",
                                include_last_offset=True) + b
        else:
            h = h @ W + b
        if hp["batch_norm"]:
            h = _batch_norm(h, t, f"enc{i}", training)
        h = act(h)
    return h @ p["mu.weight"] + p["mu.bias"], h @ p["logvar.weight"] + p["logvar.bias"]


def _batch_norm(h: torch.Tensor, t: dict[str, torch.Tensor], name: str, training: bool) -> torch.Tensor:
    """Batch normalization without scale or shift: batch statistics in training (which update the running ones
    in `t`), running statistics otherwise."""
    mean, var = t[f"{name}.bn_mean"], t[f"{name}.bn_var"]
    if training and h.shape[0] > 1:
        bm, bv = h.mean(0), h.var(0, unbiased=False)
        with torch.no_grad():
            mean.mul_(1 - BN_MOMENTUM).add_(bm.detach(), alpha=BN_MOMENTUM)
            var.mul_(1 - BN_MOMENTUM).add_(bv.detach() * h.shape[0] / (h.shape[0] - 1), alpha=BN_MOMENTUM)
        return (h - bm) / torch.sqrt(bv + BN_EPS)
    return (h - mean) / torch.sqrt(var + BN_EPS)


def _log_word_probabilities(p: dict[str, torch.Tensor], t: dict[str, torch.Tensor], hp: dict[str, Any],
                            z: torch.Tensor, training: bool) -> torch.Tensor:
    if hp["decoder"] == "nvdm":
        return torch.log_softmax(z @ p["beta"] + p["dec.bias"], dim=1)
    # ProdLDA as its authors train it: the logits batch-normalized, word by word (see the docstring, "Defaults")
    return torch.log_softmax(_batch_norm(torch.softmax(z, dim=1) @ p["beta"], t, "dec", training), dim=1)


def _losses(p: dict[str, torch.Tensor], t: dict[str, torch.Tensor], hp: dict[str, Any], x: torch.Tensor,
            eps: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per document: the reconstruction loss -sum_w x_w log p(w | z) and KL(q || prior)."""
    mu, logvar = _encode(p, t, hp, x, training)
    z = mu + torch.exp(0.5 * logvar) * eps
    logp = _log_word_probabilities(p, t, hp, z, training)
    if x.layout == torch.sparse_csr:
        rows = torch.repeat_interleave(torch.arange(x.shape[0], device=x.device), x.crow_indices().diff())
        picked = logp[rows, x.col_indices()] * x.values()
        rec = -torch.zeros(x.shape[0], device=x.device, dtype=picked.dtype).index_add(0, rows, picked)
    else:
        rec = -(x * logp).sum(1)
    K = hp["num_topics"]
    prior_var = 1.0 - 1.0 / K if hp["decoder"] == "prodlda" else 1.0
    kl = 0.5 * ((logvar.exp() + mu * mu) / prior_var - 1 + math.log(prior_var) - logvar).sum(1)
    return rec, kl


def _optimize(hp: dict[str, Any], step: int, p: torch.Tensor, g: torch.Tensor, m1: torch.Tensor,
              m2: torch.Tensor) -> None:
    """One step of the optimizer on p, in place: the gradient rescaled, clipped and L2-penalized first."""
    g = g * hp["rescale_gradient"]
    if math.isfinite(hp["clip_gradient"]):
        g = g.clamp(-hp["clip_gradient"], hp["clip_gradient"])
    if hp["weight_decay"]:
        g = g + hp["weight_decay"] * p
    lr, opt = hp["learning_rate"], hp["optimizer"]
    if opt == "adam":  # Kingma & Ba, beta = (0.9, 0.999), bias-corrected
        m1.mul_(0.9).add_(g, alpha=0.1)
        m2.mul_(0.999).addcmul_(g, g, value=0.001)
        p.sub_(lr / (1 - 0.9 ** step) * m1 / ((m2 / (1 - 0.999 ** step)).sqrt() + EPS))
    elif opt == "adadelta":  # Zeiler 2012, rho 0.9, eps 1e-6; the update times learning_rate (as torch's)
        m1.mul_(0.9).addcmul_(g, g, value=0.1)
        delta = ((m2 + 1e-6).sqrt() / (m1 + 1e-6).sqrt()) * g
        m2.mul_(0.9).addcmul_(delta, delta, value=0.1)
        p.sub_(lr * delta)
    elif opt == "adagrad":
        m2.addcmul_(g, g)
        p.sub_(lr * g / (m2.sqrt() + EPS))
    elif opt == "rmsprop":
        m2.mul_(0.9).addcmul_(g, g, value=0.1)
        p.sub_(lr * g / (m2.sqrt() + EPS))
    else:
        p.sub_(lr * g)


# ------------------------------------------------------------------------------------------ epochs, merge

def end_epoch(state: State, validation: Iterable[Batch] | None = None) -> tuple[State, bool]:
    """Close an epoch: score the validation source (or take the epoch's training loss) with every packed
    network, and say whether to stop: when none of them improved for `num_patience_epochs` epochs."""
    hp, meta = state.hyperparameters, state.meta
    counts = topic_counts(hp)
    if validation is not None:
        models = {K: finalize(state, num_topics=K) for K in counts}
        sums: dict[int, dict[str, float]] = {K: {} for K in counts}
        for batch in validation:
            for K, model in models.items():
                for k, v in evaluate(model, batch).items():
                    sums[K][k] = sums[K].get(k, 0.0) + v
        scores = {K: metrics(models[K], sums[K]) for K in counts}
    else:
        scores = {}
        for K in counts:
            loss, words, docs = (float(v) for v in packed(state, K)[0]["epoch_sums"])
            scores[K] = {"total_loss": loss / docs if docs else math.nan}
    meta["epochs_done"] += 1
    stop = True
    for K in counts:
        packed(state, K)[0]["epoch_sums"].zero_()
        record = meta if K == hp["num_topics"] else meta["packed"][str(K)]
        record["validation"] = scores[K]
        loss, best = scores[K]["total_loss"], record["best_loss"]
        if math.isfinite(loss) and (best is None or loss < best - hp["tolerance"] * abs(best)):
            record["best_loss"], record["bad_epochs"] = loss, 0
        else:
            record["bad_epochs"] += 1
        stop = stop and record["bad_epochs"] >= hp["num_patience_epochs"]
    return state, stop


def merge(a: State, b: State) -> State:
    """Parameters, moments and batch-norm statistics averaged, weighted by the documents each side trained on."""
    check_mergeable(a, b, STRUCTURAL)
    va, vb = a.tensors.get("vocabulary"), b.tensors.get("vocabulary")
    if (va is None) != (vb is None) or (va is not None and not torch.equal(va, vb)):
        raise IncompatibleStateError("cannot merge states with different vocabularies "
                                     f"({_vocab_name(a)} vs {_vocab_name(b)})")
    out = a.copy()
    na, nb = a.meta["documents_trained"], b.meta["documents_trained"]
    wb = nb / (na + nb) if na + nb else 0.0
    for name, ta in out.tensors.items():
        if name.endswith("rng") or name == "vocabulary":
            continue
        tb = b.tensors[name].to(ta.device)
        if name.endswith("epoch_sums"):
            ta.add_(tb)
        else:
            ta.mul_(1 - wb).add_(tb, alpha=wb)
    out.meta["records_seen"] = a.meta["records_seen"] + b.meta["records_seen"]
    out.meta["documents_trained"] = na + nb
    out.meta["step"] = max(a.meta["step"], b.meta["step"])
    return out


def _all_parameters(state: State) -> list[torch.Tensor]:
    """Every packed network's trainable tensors."""
    return [p for K in topic_counts(state.hyperparameters) for p in parameters(*packed(state, K)).values()]


def shared_parameters(state: State) -> dict[str, torch.Tensor]:
    """The networks as one flat tensor (fresh), for averaging over processes (`--sync-every`)."""
    return {"network": torch.cat([p.reshape(-1) for p in _all_parameters(state)])}


def set_shared_parameters(state: State, shared: dict[str, torch.Tensor]) -> None:
    flat, at = shared["network"], 0
    for p in _all_parameters(state):
        p.copy_(flat[at:at + p.numel()].view(p.shape))
        at += p.numel()


def _vocab_name(state: State) -> str:
    v = state.tensors.get("vocabulary")
    return "no vocabulary" if v is None else f"vocabulary {vocab_file.digest(vocab_file.from_tensor(v))}"


# -------------------------------------------------------------------------------------------- finalize

class NTMModel(Model):
    """The encoder and decoder; predicts SageMaker's `topic_weights` (softmax of the posterior mean)."""

    algorithm = NAME
    json_key = "predictions"  # SageMaker's NTM answers {"predictions": [{"topic_weights": [...]}, ...]}

    @property
    def hp(self) -> dict[str, Any]:
        return self.meta["hyperparameters"]

    @takes_arrays
    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Topic weights (n, K), rows summing to 1; x dense or sparse CSR counts."""
        dev = self.tensors["beta"].device
        with torch.no_grad():
            mu, _ = _encode(parameters(self.tensors, self.hp), self.tensors, self.hp,
                            x.to(dev, torch.float32), training=False)
        return torch.softmax(mu, dim=1)

    @takes_arrays
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"topic_weights": self.transform(x)}

    def topic_word(self) -> torch.Tensor:
        """Each topic's distribution over the words (K x V, rows summing to 1): the decoder's for a document of
        that topic alone."""
        t = self.tensors
        if "dec.bias" in t:
            return torch.softmax(t["beta"] + t["dec.bias"], dim=1)
        return torch.softmax((t["beta"] - t["dec.bn_mean"]) / torch.sqrt(t["dec.bn_var"] + BN_EPS), dim=1)

    def top_words(self, n: int = TOP_WORDS) -> list[list[str]]:
        """Each topic's n words of largest weight, largest first: in B for nvdm (without the background b), in
        the batch-normalized logits (B - mean) / sd for prodlda (the decoder's view of the topic)."""
        return [[w for w, _ in topic] for topic in self.top_word_weights(n)]

    def top_word_weights(self, n: int = TOP_WORDS) -> list[list[tuple[str, float]]]:
        """Each topic's n top words (as `top_words`) with their weights: the softmax of the scores they are
        ranked by, the share of the topic's word distribution each holds (for nvdm, without the background)."""
        words = vocabulary(self)
        t = self.tensors
        scores = t["beta"] if "dec.bias" in t or "dec.bn_mean" not in t else \
            (t["beta"] - t["dec.bn_mean"]) / torch.sqrt(t["dec.bn_var"] + BN_EPS)
        top = torch.softmax(scores.double(), dim=1).topk(min(n, scores.shape[1]), dim=1)
        return [[(words[i], w) for i, w in zip(ids, ws)] for ids, ws in zip(top.indices.tolist(), top.values.tolist())]


Model = NTMModel


def finalize(state: State, **choice: Any) -> NTMModel:
    """One topic count's network as a model (num_topics's, the one asked for, or the one `select` picks), with
    each topic's top words and their uniqueness; the state is unchanged."""
    K = chosen_topics(state, choice)
    t, hp = packed(state, K)
    tensors = {k: v.detach().clone() for k, v in parameters(t, hp).items()}
    for k in t:
        if k.endswith((".bn_mean", ".bn_var")):
            tensors[k] = t[k].clone()
    if "vocabulary" in state.tensors:
        tensors["vocabulary"] = state.tensors["vocabulary"].clone()
    keep = ("num_topics", "decoder", "encoder_layers", "encoder_layers_activation", "batch_norm")
    record = state.meta if K == hp["num_topics"] else state.meta["packed"][str(K)]
    meta = {"n_features": state.meta["n_features"], "num_topics": K,
            "hyperparameters": {k: hp[k] for k in keep}, "documents_trained": state.meta["documents_trained"],
            "validation": record.get("validation", {})}
    model = NTMModel(tensors, meta)
    topics = model.top_words()
    model.meta["topics"] = topics
    model.meta["topic_uniqueness"] = topic_uniqueness(topics)
    return model


def chosen_topics(state: State, choice: dict[str, Any]) -> int:
    """The topic count finalize makes a model of: asked for, picked by `select`, or num_topics."""
    c = CHOICES.parse({k: v for k, v in choice.items() if v is not None})
    counts = topic_counts(state.hyperparameters)
    if c["num_topics"] is not None and c["select"] is not None:
        raise UsageError("finalize: give num_topics or select, not both")
    if c["num_topics"] is not None:
        packed(state, c["num_topics"])  # refuses a count the state did not train
        return c["num_topics"]
    if c["select"] is None or len(counts) == 1:
        return counts[0]
    if c["select"] == "uniqueness":
        return max(counts, key=lambda K: (topic_uniqueness(_top_words(state, K)), -K))
    seen = {K: (state.meta if i == 0 else state.meta["packed"][str(K)]).get("validation", {}).get("perplexity")
            for i, K in enumerate(counts)}
    if any(v is None or not math.isfinite(v) for v in seen.values()):
        raise UsageError("select = perplexity needs each topic count's validation perplexity: train with "
                         "--validation (or choose with --num-topics K or --select uniqueness)")
    return min(counts, key=lambda K: (seen[K], K))


def _top_words(state: State, K: int) -> list[list[str]]:
    t, _ = packed(state, K)
    return NTMModel({**t, **({"vocabulary": state.tensors["vocabulary"]} if "vocabulary" in state.tensors else {})},
                    {"n_features": state.meta["n_features"]}).top_words()


def topic_uniqueness(topics: list[list[str]]) -> float:
    """TU (Nan et al. 2019): mean over topics of the mean over their top words of 1 / (topics holding the word)."""
    counts: dict[str, int] = {}
    for words in topics:
        for w in words:
            counts[w] = counts.get(w, 0) + 1
    return sum(sum(1 / counts[w] for w in words) / len(words) for words in topics) / len(topics)


def evaluate(model: NTMModel, batch: Batch) -> dict[str, float]:
    """Sums over the batch's non-empty documents of the loss terms and of the per-word bound (for perplexity).
    eps comes from a generator seeded alike for every batch: a model scores the same data alike every time."""
    hp = model.hp
    x = checked_counts(batch, model.tensors["beta"].device, model.meta["n_features"], 0)
    x = _rows(x, _lengths(x) > 0)
    if x.shape[0] == 0:
        return {"documents": 0.0}
    eps = torch.randn(x.shape[0], hp["num_topics"], generator=torch.Generator().manual_seed(0)).to(x.device)
    with torch.no_grad():
        rec, kl = _losses(parameters(model.tensors, hp), model.tensors, hp, x, eps, training=False)
    words = _lengths(x)
    return {"documents": float(x.shape[0]), "words": float(words.sum()), "recons_loss": float(rec.sum()),
            "kl_divergence": float(kl.sum()), "per_word": float(((rec + kl) / words).double().sum())}


def metrics(model: NTMModel, sums: dict[str, float]) -> dict[str, float]:
    """Perplexity from the bound, SageMaker's total_loss (mean negative ELBO per document) and its two terms."""
    n = sums.get("documents", 0.0)
    if not n:
        return {"perplexity": math.nan, "total_loss": math.nan}
    return {"perplexity": math.exp(sums["per_word"] / n), "total_loss": (sums["recons_loss"] + sums["kl_divergence"])
            / n, "recons_loss": sums["recons_loss"] / n, "kl_divergence": sums["kl_divergence"] / n,
            "topic_uniqueness": model.meta["topic_uniqueness"]}


def describe(state: State) -> dict[str, Any]:
    """What a user wants to see of a state (`onepass inspect`, and every epoch's line of metrics.jsonl): counts,
    the latest validation, and each topic's top 10 words as they stand."""
    m = state.meta
    out = {"records_seen": m["records_seen"], "documents_trained": m["documents_trained"], "steps": m["step"],
           "num_topics": state.hyperparameters["num_topics"], "decoder": state.hyperparameters["decoder"],
           "vocabulary": m["n_features"], "topics": _top_words(state, state.hyperparameters["num_topics"])}
    if m.get("validation"):
        out.update({f"validation_{k}": v for k, v in m["validation"].items()})
    if m.get("packed"):  # every packed topic count's figures, num_topics's too, for choosing one
        out["topic_counts"] = {}
        for K in topic_counts(state.hyperparameters):
            topics, record = _top_words(state, K), m if K == state.hyperparameters["num_topics"] else \
                m["packed"][str(K)]
            out["topic_counts"][str(K)] = {"topic_uniqueness": topic_uniqueness(topics), "topics": topics,
                                           **{f"validation_{k}": v for k, v in record.get("validation", {}).items()}}
    if m.get("text"):
        out["tokens"], out["oov_tokens"] = m["text"]["tokens"], m["text"]["oov_tokens"]
        out["oov_share"] = m["text"]["oov_tokens"] / max(m["text"]["tokens"], 1)
    return out


def summary(model: NTMModel) -> list[str]:
    """Lines for the command line: each topic's top words."""
    m = model.meta
    lines = [f"model: {m['num_topics']} topics ({m['hyperparameters']['decoder']}) over {m['n_features']:,} words, "
             f"topic uniqueness {m['topic_uniqueness']:.3f}"]
    lines += [f"  topic {k}: {' '.join(words)}" for k, words in enumerate(m["topics"][:50])]
    if len(m["topics"]) > 50:
        lines.append(f"  ... {len(m['topics']) - 50} more (onepass inspect)")
    return lines
