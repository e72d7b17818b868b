"""scikit-learn's transformer over the neural topic model (`onepass.algorithms.ntm`), like LatentDirichletAllocation."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ..data.batches import Batch
from ..errors import UsageError
from ..state import State


def _ntm_counts(X) -> torch.Tensor:
    """Word counts as float32, sparse CSR for scipy sparse input (never densified)."""
    if sp.issparse(X):
        X = X.tocsr()
        return torch.sparse_csr_tensor(torch.from_numpy(X.indptr.astype(np.int64)),
                                       torch.from_numpy(X.indices.astype(np.int64)),
                                       torch.from_numpy(X.data.astype(np.float32)), size=X.shape,
                                       check_invariants=False)
    return torch.tensor(np.asarray(X), dtype=torch.float32)


class NTM(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """A neural topic model (see `onepass.algorithms.ntm`), shaped like scikit-learn's LatentDirichletAllocation.

    X is a document-word count matrix (dense or scipy sparse, never densified), or a list of raw documents
    (strings), tokenized and counted by onepass over a vocabulary built from them (`vocabulary_`) or given.

    n_components: topics. decoder: ``prodlda`` (default) or ``nvdm`` (SageMaker's). max_iter: passes of `fit`
    over X (`partial_fit` makes one). learning_rate, batch_size, encoder_layers, activation, sub_sample and
    weight_decay as `onepass train ntm`'s hyperparameters. vocabulary: the words of X's columns (or, for raw text,
    the words to count); vocab_size, min_df, max_df: the vocabulary built from raw text otherwise.

    Learned attributes: `components_` (n_components x n_words, each topic's word distribution, rows summing to 1;
    LatentDirichletAllocation's rows are unnormalized pseudo-counts), `topics_` (each topic's top 10 words),
    `vocabulary_`, `n_features_in_`, `n_batch_iter_`, `state_` (for `onepass.ntm` and `onepass merge`) and `model_`.

    >>> import numpy as np
    >>> from onepass.sklearn import NTM
    >>> rng = np.random.default_rng(0)
    >>> themes = [["pizza", "pasta", "cheese", "oven"], ["goal", "match", "team", "coach"],
    ...           ["stock", "market", "price", "bank"]]
    >>> docs = [" ".join(rng.choice(themes[rng.integers(3)], 20)) for _ in range(1500)]
    >>> ntm = NTM(n_components=3, max_iter=10, learning_rate=0.02, min_df=1, max_df=1.0).fit(docs)
    >>> sorted(sorted(t[:4]) for t in ntm.topics_)
    [['bank', 'market', 'price', 'stock'], ['cheese', 'oven', 'pasta', 'pizza'], ['coach', 'goal', 'match', 'team']]
    >>> food = [k for k, t in enumerate(ntm.topics_) if "pizza" in t[:4]]
    >>> [int(ntm.transform(["pizza oven cheese pasta " * 5]).argmax())] == food, ntm.components_.shape
    (True, (3, 12))
    """

    def __init__(self, n_components: int = 10, *, decoder: str = "prodlda", max_iter: int = 10,
                 learning_rate: float = 0.002, batch_size: int = 256, encoder_layers: str = "auto",
                 activation: str = "softplus", sub_sample: float = 1.0, weight_decay: float = 0.0,
                 vocabulary: list[str] | None = None, vocab_size: int = 2000, min_df: int = 2, max_df: float = 0.5,
                 random_state=None, device: str = "cpu"):
        self.n_components = n_components
        self.decoder = decoder
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.encoder_layers = encoder_layers
        self.activation = activation
        self.sub_sample = sub_sample
        self.weight_decay = weight_decay
        self.vocabulary = vocabulary
        self.vocab_size = vocab_size
        self.min_df = min_df
        self.max_df = max_df
        self.random_state = random_state
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.requires_fit = True
        return tags

    def fit(self, X, y=None):
        """Learn topics from X in `max_iter` passes."""
        for name in [n for n in self.__dict__ if n.endswith("_") and not n.startswith("_")]:
            del self.__dict__[name]
        X = self._counts(X, reset=True)
        for _ in range(self.max_iter):
            self._pass(X)
        return self._finish()

    def partial_fit(self, X, y=None):
        """One pass over one more chunk of documents."""
        self._pass(self._counts(X, reset=not hasattr(self, "state_")))
        return self._finish()

    def transform(self, X) -> np.ndarray:
        """Each document's topic weights (n, n_components), rows summing to 1."""
        check_is_fitted(self, "model_")
        return self.model_.transform(_ntm_counts(self._counts(X, reset=False))).cpu().numpy()

    def perplexity(self, X) -> float:
        """Perplexity from the evidence lower bound, exp(mean over documents of -ELBO / words)."""
        check_is_fitted(self, "model_")
        from ..algorithms import ntm
        batch = Batch(_ntm_counts(self._counts(X, reset=False)))
        return ntm.metrics(self.model_, ntm.evaluate(self.model_, batch))["perplexity"]

    def score(self, X, y=None) -> float:
        """The evidence lower bound summed over X's documents (higher is better), as LDA's `score`."""
        check_is_fitted(self, "model_")
        from ..algorithms import ntm
        sums = ntm.evaluate(self.model_, Batch(_ntm_counts(self._counts(X, reset=False))))
        return -(sums.get("recons_loss", 0.0) + sums.get("kl_divergence", 0.0))

    @property
    def _n_features_out(self) -> int:
        return self.n_components

    def _counts(self, X, reset: bool):
        """X as counts: raw documents counted over the vocabulary (built on the first fit), arrays checked."""
        from ..data import text
        if isinstance(X, (list, tuple)) and X and all(isinstance(d, str) for d in X):
            if reset:
                words = list(self.vocabulary) if self.vocabulary is not None else None
                if words is None:
                    sketch = text.MisraGries(text.SKETCH_FACTOR * self.vocab_size)
                    for doc in X:
                        sketch.add(set(text.tokenize(doc)))
                    words = sketch.vocabulary(self.vocab_size, self.min_df, self.max_df)
                    if not words:
                        raise ValueError("no word is in at least min_df and at most max_df of the documents")
                self.vocabulary_ = words
            index = {w: i for i, w in enumerate(self.vocabulary_)}
            rows, cols = [], []
            for r, doc in enumerate(X):
                ids = [index[t] for t in text.tokenize(doc) if t in index]
                rows += [r] * len(ids)
                cols += ids
            X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(X), len(self.vocabulary_)))
            X.sum_duplicates()
            self.n_features_in_ = X.shape[1]
            return X
        X = validate_data(self, X, reset=reset, accept_sparse="csr", dtype=[np.float32, np.float64],
                          ensure_min_samples=1)
        if reset:
            self.vocabulary_ = list(self.vocabulary) if self.vocabulary is not None else None
        values = X.data if sp.issparse(X) else X
        if (values < 0).any():
            raise ValueError("NTM takes word counts: X holds a negative value")
        return X

    def _pass(self, X) -> None:
        from ..algorithms import ntm
        if not hasattr(self, "state_"):
            hp = {"num_topics": self.n_components, "decoder": self.decoder, "learning_rate": self.learning_rate,
                  "mini_batch_size": self.batch_size, "encoder_layers": self.encoder_layers,
                  "encoder_layers_activation": self.activation, "sub_sample": self.sub_sample,
                  "weight_decay": self.weight_decay}
            seed = 0 if self.random_state is None else int(check_random_state(self.random_state).randint(2**31 - 1))
            try:
                self.state_: State = ntm.init(hp, X.shape[1], seed, self.device)
            except UsageError as e:
                raise ValueError(str(e)) from None
            if self.vocabulary_ is not None:
                ntm.set_vocabulary(self.state_, self.vocabulary_)
            self.n_batch_iter_ = 0
        for s in range(0, X.shape[0], self.batch_size):
            self.state_ = ntm.update(self.state_, Batch(_ntm_counts(X[s:s + self.batch_size])))
            self.n_batch_iter_ += 1

    def _finish(self):
        from ..algorithms import ntm
        self.model_ = ntm.finalize(self.state_)
        self.components_ = self.model_.topic_word().cpu().numpy()
        self.topics_ = self.model_.meta["topics"]
        return self


