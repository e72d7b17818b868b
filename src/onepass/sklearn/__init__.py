"""scikit-learn estimators over onepass's algorithms (needs scikit-learn: `pip install onepass[sklearn]`).

>>> import numpy as np
>>> from onepass.sklearn import KMeans
>>> X = np.vstack([np.zeros((20, 2)), np.full((20, 2), 5.0)])
>>> km = KMeans(n_clusters=2, random_state=0).fit(X)
>>> sorted(np.bincount(km.labels_).tolist())
[20, 20]
>>> km.state_.meta["records_seen"]
40

Parameters take scikit-learn's names where it has them (`n_clusters`, `n_components`, `max_iter`, `tol`,
`n_init`, `batch_size`, `random_state`, `n_iter_no_change`, `validation_fraction`), and SageMaker's as aliases
(`k`, `num_components`, `local_lloyd_max_iter`, `epochs`, `mini_batch_size`, `early_stopping_patience`...):
an alias that disagrees with its scikit-learn parameter is an error. Values are checked at `fit`:

>>> KMeans(k=2).fit(X).cluster_centers_.shape
(2, 2)
>>> KMeans(n_clusters="2").fit(X)
Traceback (most recent call last):
...
TypeError: KMeans: n_clusters='2' should be an integer >= 1, not str

`fit` also takes a scipy sparse matrix (k-means: never densified when wider than 100 features) or a source (a path,
glob or folder, or a `Stream`) and streams it in fixed memory:
`KMeans(n_clusters=10).fit("data/*.csv")`, `LinearLearnerClassifier().fit("train/*.csv")` (the label first,
as SageMaker's). `partial_fit` absorbs one more chunk of data; the summary in `state_`
gives a model for any other k with `onepass.kmeans.finalize(km.state_, k=...)`.

PCA, exact or sketched, from arrays (dense or scipy sparse, never densified), chunks or sources:

>>> from onepass.sklearn import PCA
>>> X = np.random.default_rng(0).normal(size=(200, 5)) * [4.0, 2.0, 1.0, 0.5, 0.1]
>>> pca = PCA(n_components=2).fit(X)
>>> pca.explained_variance_ratio_.round(2).tolist()
[0.73, 0.2]
>>> pca.transform(X[:3]).shape, pca.inverse_transform(pca.transform(X[:3])).shape
((3, 2), (3, 5))
>>> round(pca.score(X), 2)      # average log-likelihood under probabilistic PCA, as scikit-learn's
-7.6
"""


from ._deepar import DeepAR
from ._fm import FMClassifier, FMRegressor
from ._kmeans import KMeans
from ._linear import LinearLearnerClassifier, LinearLearnerRegressor
from ._ntm import NTM
from ._pca import PCA

__all__ = ["DeepAR", "FMClassifier", "FMRegressor", "KMeans", "LinearLearnerClassifier", "LinearLearnerRegressor", "NTM",
           "PCA"]
