"""Progressive validation inside the training stage: each task scores its rows before anyone learns from them.

Decision: a micro-batch is scored by the training tasks themselves, in the
window between converting their partition and the barrier that starts
training. No task pushes before that barrier, so every score comes from the
committed model the batch starts from, exactly as a separate scoring job
would give, without that job: the trainer used to run ``transform`` plus
MLlib's evaluators on each batch, five Spark jobs (a sort for the AUC among
them) that cost more than the training itself on batches of 100k rows.

Each task sums what the metrics need into :class:`ProgressiveStats` (a few
sums and two histograms) and the driver adds the tasks' stats up, so
nothing per row leaves the executors. The AUC comes from the histograms of
the margins of positives and negatives (:data:`BINS` bins over
``[-MARGIN_RANGE, MARGIN_RANGE]``; pairs in one bin count one half): off the
exact (rank) AUC by at most the share of positive-negative pairs that fall
in one bin, below 1e-3 on CTR-like scores (see the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["BINS", "MARGIN_RANGE", "ProgressiveStats"]

#: Histogram bins of the margins (per class) and the margin range they cover; outside, the end bins.
BINS = 16_384
MARGIN_RANGE = 16.0
#: Probabilities are clipped to [EPS, 1 - EPS] in the log-loss, as scikit-learn does.
EPS = 1e-15


def _zeros() -> np.ndarray:
    return np.zeros(BINS)


@dataclass(frozen=True)
class ProgressiveStats:
    """Weighted sums of one task's (or one batch's) scores before training; add them with ``+``.

    Examples
    --------
    >>> import numpy as np
    >>> a = ProgressiveStats.of(np.array([2.0, -1.0]), np.array([1.0, 0.0]), None, binary=True)
    >>> b = ProgressiveStats.of(np.array([0.5]), np.array([0.0]), None, binary=True)
    >>> total = a + b
    >>> total.weight, round(total.metrics()["auc"], 4)
    (3.0, 1.0)
    >>> ProgressiveStats.of(np.array([1.0, 3.0]), np.array([1.0, 2.0]), None, binary=False).metrics()
    {'rmse': 0.7071067811865476, 'r2': -1.0}
    """

    binary: bool
    weight: float = 0.0
    #: Weighted log-loss sum (classification) or squared-error sum (regression).
    loss: float = 0.0
    label_sum: float = 0.0
    label_square_sum: float = 0.0
    positives: np.ndarray = field(default_factory=_zeros, repr=False)
    negatives: np.ndarray = field(default_factory=_zeros, repr=False)

    @classmethod
    def of(cls, margins: np.ndarray, labels: np.ndarray, weights: np.ndarray | None, binary: bool
           ) -> ProgressiveStats:
        """Stats of scored rows: ``margins`` (logits, or predictions for regression), labels and weights."""
        w = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
        y = np.asarray(labels, np.float64)
        m = np.asarray(margins, np.float64)
        if not binary:
            return cls(False, float(w.sum()), float(w @ (y - m) ** 2), float(w @ y), float(w @ (y * y)))
        p = np.clip(1.0 / (1.0 + np.exp(-m)), EPS, 1 - EPS)
        loss = float(-(w @ (y * np.log(p) + (1 - y) * np.log(1 - p))))
        bins = np.clip(((m + MARGIN_RANGE) * (BINS / (2 * MARGIN_RANGE))).astype(np.int64), 0, BINS - 1)
        positive = y > 0.5
        return cls(True, float(w.sum()), loss, float(w @ y), float(w @ (y * y)),
                   np.bincount(bins[positive], w[positive], BINS), np.bincount(bins[~positive], w[~positive], BINS))

    def __add__(self, other: ProgressiveStats) -> ProgressiveStats:
        return ProgressiveStats(self.binary, self.weight + other.weight, self.loss + other.loss,
                                self.label_sum + other.label_sum, self.label_square_sum + other.label_square_sum,
                                self.positives + other.positives, self.negatives + other.negatives)

    def to_row(self) -> dict:
        """The stats as one task-result row (plain floats and lists), for an Arrow batch."""
        return {"score_weight": self.weight, "score_loss": self.loss, "label_sum": self.label_sum,
                "label_square_sum": self.label_square_sum, "positives": self.positives.tolist(),
                "negatives": self.negatives.tolist()}

    @classmethod
    def from_row(cls, row, binary: bool) -> ProgressiveStats:
        """Inverse of :meth:`to_row` (a Spark ``Row`` or a dict)."""
        return cls(binary, row["score_weight"], row["score_loss"], row["label_sum"], row["label_square_sum"],
                   np.asarray(row["positives"], np.float64), np.asarray(row["negatives"], np.float64))

    def metrics(self) -> dict[str, float | None]:
        """``auc`` and ``logLoss`` (None without both classes / rows), or ``rmse`` and ``r2``."""
        if self.weight <= 0:
            return {"auc": None, "logLoss": None} if self.binary else {"rmse": None, "r2": None}
        if not self.binary:
            variance = self.label_square_sum - self.label_sum ** 2 / self.weight
            return {"rmse": math.sqrt(self.loss / self.weight),
                    "r2": 1.0 - self.loss / variance if variance > 0 else None}
        pos, neg = self.positives.sum(), self.negatives.sum()
        auc = None
        if pos > 0 and neg > 0:
            below = np.cumsum(self.negatives) - self.negatives  # negatives in lower bins
            auc = float((self.positives @ (below + 0.5 * self.negatives)) / (pos * neg))
        return {"auc": auc, "logLoss": self.loss / self.weight}
