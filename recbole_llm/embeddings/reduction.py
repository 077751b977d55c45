"""Dimensionality reduction of item embeddings, as the paper compares them.

Each reducer is a scikit-learn transformer (``BaseEstimator``: ``get_params`` / ``set_params`` / ``clone``;
``TransformerMixin``: ``fit_transform``), so it drops into a scikit-learn pipeline or search, and each is
deterministic given ``random_state`` without touching the process's global random state.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import SettingError

logger = logging.getLogger(__name__)

REDUCTIONS = ("none", "pca", "lda", "autoencoder", "random")


class _Reducer(TransformerMixin, BaseEstimator):
    """Shared input checks: a finite 2-d float array, the same number of features at transform as at fit.
    Output is float32 whatever the input (what the embedding files store)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def _fit_input(self, X):
        return validate_data(self, X, dtype=[np.float64, np.float32])

    def _transform_input(self, X, fitted: str):
        check_is_fitted(self, fitted)
        return validate_data(self, X, dtype=[np.float64, np.float32], reset=False)


class PCAReducer(_Reducer):
    def __init__(self, n_components: int = 2, random_state: int = 0):
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X, y=None):
        """At most min(items, features) components: a larger target (the paper's 512 for a
        384-d embedder) is capped, with a warning, and ``n_components_`` says what was produced."""
        from sklearn.decomposition import PCA

        X = self._fit_input(X)
        self.n_components_ = min(self.n_components, *X.shape)
        if self.n_components_ < self.n_components:
            logger.warning("PCA gives at most min(items, features) = %d components; capped %d -> %d",
                           self.n_components_, self.n_components, self.n_components_)
        self.pca_ = PCA(n_components=self.n_components_, random_state=self.random_state).fit(X)
        return self

    def transform(self, X):
        return self.pca_.transform(self._transform_input(X, "pca_")).astype(np.float32)


class LDAReducer(_Reducer):
    """Supervised by item classes. LDA yields at most n_classes - 1 components:
    a larger target is capped, with a warning, and ``n_components_`` says what
    was produced."""

    def __init__(self, n_components: int = 2, random_state: int = 0):
        self.n_components = n_components
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def fit(self, X, y=None):
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        if y is None:
            raise SettingError("LDAReducer requires y to be passed, but the target y is None: LDA reduction needs item "
                             "classes (embedding_class_field)")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        cap = min(len(np.unique(y)) - 1, X.shape[1])
        if cap < 1:
            raise SettingError(f"LDA reduction needs at least two item classes and {len(X)} sample(s) in more than "
                             "one class were given")
        self.n_components_ = min(self.n_components, cap)
        if self.n_components_ < self.n_components:
            logger.warning(
                "LDA gives at most n_classes-1 = %d components; capped %d -> %d",
                cap, self.n_components, self.n_components_,
            )
        self.lda_ = LinearDiscriminantAnalysis(n_components=self.n_components_).fit(X, y)
        return self

    def transform(self, X):
        return self.lda_.transform(self._transform_input(X, "lda_")).astype(np.float32)


class AutoencoderReducer(_Reducer):
    """A one-hidden-layer autoencoder; the code is the reduced embedding.
    ``l2`` penalises the code's norm (the paper's optional regulariser)."""

    def __init__(self, n_components: int = 2, random_state: int = 0, epochs: int = 200, lr: float = 1e-3,
                 l2: float = 0.0, batch_size: int = 256):
        self.n_components = n_components
        self.random_state = random_state
        self.epochs = epochs
        self.lr = lr
        self.l2 = l2
        self.batch_size = batch_size

    def fit(self, X, y=None):
        with torch.random.fork_rng(devices=[]):  # seeded initialisation; the caller's random state is untouched
            torch.manual_seed(self.random_state)
            return self._fit(self._fit_input(X))

    def _fit(self, X):
        generator = torch.Generator().manual_seed(self.random_state)
        X = torch.as_tensor(np.asarray(X, dtype=np.float32))
        self.mean_ = X.mean(0)
        d, hidden = X.shape[1], max(self.n_components * 2, 16)
        self.encoder_ = torch.nn.Sequential(
            torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, self.n_components)
        )
        decoder = torch.nn.Sequential(
            torch.nn.Linear(self.n_components, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, d)
        )
        params = list(self.encoder_.parameters()) + list(decoder.parameters())
        optimizer = torch.optim.Adam(params, lr=self.lr)
        Xc = X - self.mean_
        for _ in range(self.epochs):
            for index in torch.randperm(len(Xc), generator=generator).split(self.batch_size):
                code = self.encoder_(Xc[index])
                loss = torch.nn.functional.mse_loss(decoder(code), Xc[index]) + self.l2 * code.pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.reconstruction_error_ = float(loss.detach())
        return self

    def transform(self, X):
        X = self._transform_input(X, "encoder_")
        with torch.no_grad():
            X = torch.as_tensor(np.asarray(X, dtype=np.float32))
            return self.encoder_(X - self.mean_).numpy().astype(np.float32)


class RandomProjectionReducer(_Reducer):
    def __init__(self, n_components: int = 2, random_state: int = 0):
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X, y=None):
        from sklearn.random_projection import GaussianRandomProjection

        X = self._fit_input(X)
        self.projection_ = GaussianRandomProjection(self.n_components, random_state=self.random_state).fit(X)
        return self

    def transform(self, X):
        return self.projection_.transform(self._transform_input(X, "projection_")).astype(np.float32)


def make_reducer(method: str, n_components: int, random_state: int = 0, **options):
    classes = {
        "pca": PCAReducer,
        "lda": LDAReducer,
        "autoencoder": AutoencoderReducer,
        "random": RandomProjectionReducer,
    }
    if method not in classes:
        raise SettingError(f"Unknown reduction '{method}': choose one of {', '.join(REDUCTIONS)}")
    return classes[method](n_components, random_state=random_state, **options)
