"""What a model computes per mini-batch: linear or FM scores, and their loss.

An :class:`Objective` couples a scoring function (linear, or factorization
machine) with a loss (logistic or squared). Training calls :meth:`step`;
scoring calls :meth:`margins`. Both work on a :class:`~spark_ps.ml.csr.CSRBatch`
and the rows pulled for the batch's unique features, so the same code scores
in training and in ``transform``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spark_ps.ml import kernels
from spark_ps.ml.csr import CSRBatch
from spark_ps.ml.keycolumns import BIAS_KEY  # re-exported: the intercept row
from spark_ps.native.factorize import sorted_unique_inverse


@dataclass(frozen=True)
class Objective:
    """Scoring function plus loss.

    Parameters
    ----------
    loss : {"logistic", "squared"}
    factor_size : int
        0 for a linear model; k for an FM (rows are ``[w_i, v_i1..v_ik]``).
    fit_linear : bool
        FM only: whether linear terms are learned.
    offset : float
        Constant added to every margin: where the intercept starts. Training
        keeps it outside the (zero-initialised) intercept row, which then
        learns the difference; the fitted intercept is the row plus ``offset``.

    Examples
    --------
    >>> import numpy as np
    >>> from spark_ps.ml.csr import CSRBatch
    >>> batch = CSRBatch(np.array([0, 2]), np.array([3, 5]), np.array([1.0, 1.0]), np.array([1.0]), None)
    >>> obj = Objective("logistic")
    >>> keys, col = obj.keys_of(batch, fit_intercept=True)
    >>> keys.tolist() == [BIAS_KEY, 3, 5]    # the intercept's row first
    True
    """

    loss: str
    factor_size: int = 0
    fit_linear: bool = True
    offset: float = 0.0

    def __post_init__(self):
        if self.loss not in ("logistic", "squared"):
            raise ValueError(f"unknown loss {self.loss!r}")
        if self.factor_size < 0:
            raise ValueError(f"factorSize must be >= 0, got {self.factor_size}")

    @property
    def width(self) -> int:
        """Floats per row on the shards: the linear weight, then ``factor_size`` factors.

        Examples
        --------
        >>> Objective("logistic").width, Objective("logistic", factor_size=8).width
        (1, 9)
        """
        return 1 + self.factor_size

    @staticmethod
    def keys_of(batch: CSRBatch, fit_intercept: bool) -> tuple[np.ndarray, np.ndarray]:
        """Sorted unique keys to pull (bias first) and each non-zero's feature row.

        Examples
        --------
        >>> import numpy as np
        >>> batch = CSRBatch(np.array([0, 2, 3]), np.array([9, 2, 9]), np.ones(3), np.zeros(2))
        >>> [a.tolist() for a in Objective.keys_of(batch, fit_intercept=False)]
        [[2, 9], [1, 0, 1]]
        >>> [a.tolist() for a in Objective.keys_of(batch, fit_intercept=True)]     # row 0: the bias, INT64_MIN
        [[-9223372036854775808, 2, 9], [2, 1, 2]]
        """
        # Hashing, not np.unique's sort of every entry (see spark_ps.native.factorize); not
        # pandas' factorize either: importing pandas costs a fresh Python worker 0.3-1.4 s.
        uniq, col = sorted_unique_inverse(batch.indices)
        if fit_intercept:
            return np.concatenate(([BIAS_KEY], uniq)).astype(np.int64), col + 1
        return uniq, col

    def margins(self, batch: CSRBatch, col: np.ndarray, rows: np.ndarray, bias: float) -> np.ndarray:
        """Raw scores of ``batch`` given pulled ``rows`` (indexed by ``col``).

        Examples
        --------
        >>> import numpy as np
        >>> batch = CSRBatch(np.array([0, 2, 3]), np.array([9, 2, 9]), np.array([1.0, 2.0, 3.0]), None)
        >>> keys, col = Objective.keys_of(batch, fit_intercept=False)     # keys [2, 9]
        >>> Objective("logistic").margins(batch, col, np.array([[0.5], [-1.0]]), bias=0.25).tolist()
        [0.25, -2.75]
        """
        return self._forward(batch, col, rows, bias)[0]

    def _forward(self, batch, col, rows, bias):
        bias = bias + self.offset
        if self.factor_size == 0:
            return kernels.margins_linear(batch, col, rows[:, 0], bias), None
        return kernels.fm_forward(batch, col, rows, bias)

    def step(self, batch: CSRBatch, col: np.ndarray, rows: np.ndarray, bias: float
             ) -> tuple[float, np.ndarray, float]:
        """Loss sum, per-pulled-row gradient ``(len(rows), width)`` and bias gradient.

        Examples
        --------
        >>> import numpy as np
        >>> batch = CSRBatch(np.array([0, 1, 2]), np.array([2, 9]), np.array([1.0, 1.0]), np.array([3.0, -1.0]))
        >>> keys, col = Objective.keys_of(batch, fit_intercept=False)
        >>> loss, grads, g_bias = Objective("squared").step(batch, col, np.zeros((2, 1)), bias=0.0)
        >>> loss, grads.ravel().tolist(), g_bias
        (5.0, [-3.0, 1.0], -2.0)
        """
        margin, cache = self._forward(batch, col, rows, bias)
        if self.loss == "logistic":
            loss, dmargin = kernels.logistic_loss_and_dmargin(margin, batch.labels, batch.weights)
        else:
            loss, dmargin = kernels.squared_loss_and_dmargin(margin, batch.labels, batch.weights)
        if self.factor_size == 0:
            grads, g_bias = kernels.grad_linear(batch, col, dmargin, len(rows))
        else:
            grads, g_bias = kernels.grad_fm(batch, col, rows, cache, dmargin)
            if not self.fit_linear:
                grads[:, 0] = 0.0
        return float(loss), grads, float(g_bias)
