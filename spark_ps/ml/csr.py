"""Mini-batches of sparse rows in CSR form, and one ``mapInArrow`` batch converted to one.

:class:`CSRBatch` is what the kernels and objectives consume: CSR arrays of
one batch of rows with their labels and sample weights, coerced to fixed
dtypes once, at construction, so every consumer can trust them.
:func:`record_batch_to_csr` builds one from an Arrow record batch, finding
the columns by name (a missing one raises :class:`MissingColumnError`, which
lists the batch's columns).

Slicing is cheap by design: ``indptr[0]`` is always 0, so a slice rebases
only ``indptr`` (n + 1 integers) and shares every other array with its
parent. Training keeps a partition's rows as one batch and its mini-batches
as slices of it for the whole fit (:func:`~spark_ps.ml.training.plan_batches`);
copies would hold the partition's indices and values twice.

The column conversions (vectors, labels, weights) live in
:mod:`spark_ps.ml.csrcolumns`, which documents Spark's ``VectorUDT`` layout
and what the conversion drops and refuses; their public names are
re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from spark_ps.errors import MissingColumnError
from spark_ps.ml.csrcolumns import VECTOR_ARROW_TYPE, concat_csr, labels_to_array, vectors_to_csr, weights_to_array
from spark_ps.ml.keycolumns import is_key_column, keys_to_csr

__all__ = ["CSRBatch", "MissingColumnError", "VECTOR_ARROW_TYPE", "labels_to_array", "record_batch_to_csr",
           "vectors_to_csr", "weights_to_array"]


@dataclass(frozen=True)
class CSRBatch:
    """Rows of sparse features in CSR form, with their labels and weights.

    Row ``r`` holds the features ``indices[indptr[r]:indptr[r + 1]]`` with
    values ``values[indptr[r]:indptr[r + 1]]``. ``indptr[0]`` is always 0, so
    a batch is self-contained even when it is a view into a larger one.

    Parameters
    ----------
    indptr : ndarray of int64, shape (n + 1,)
    indices : ndarray of int64, shape (nnz,)
        Feature keys; unsorted and duplicated keys inside a row are allowed.
    values : ndarray of float64, shape (nnz,)
    labels : ndarray of float64, shape (n,), or None
        None when the batch has no label column (scoring).
    weights : ndarray of float64, shape (n,), or None
        Sample weights; None means every row weighs 1.

    Arrays of other dtypes are converted; arrays that already have the right
    dtype are kept as they are (views stay views).

    Examples
    --------
    >>> import numpy as np
    >>> b = CSRBatch(np.array([0, 2, 3]), np.array([4, 7, 4]), np.array([1.0, 2.0, 3.0]),
    ...              np.array([1.0, 0.0]))
    >>> b.num_rows, b.nnz
    (2, 3)
    >>> b.slice_rows(1, 2).indices.tolist()
    [4]
    >>> CSRBatch.concat([b, b]).indptr.tolist()
    [0, 2, 3, 5, 6]
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    labels: np.ndarray | None
    weights: np.ndarray | None = None

    def __post_init__(self):
        # frozen=True forbids plain assignment; coercion happens once, here.
        for name, dtype in (("indptr", np.int64), ("indices", np.int64), ("values", np.float64),
                            ("labels", np.float64), ("weights", np.float64)):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, np.asarray(value, dtype=dtype))
        indptr = self.indptr
        if indptr.ndim != 1 or len(indptr) == 0:
            raise ValueError(f"indptr must be 1-D with n + 1 >= 1 entries, got shape {indptr.shape}")
        if self.indices.shape != self.values.shape or self.indices.ndim != 1:
            raise ValueError(f"indices {self.indices.shape} and values {self.values.shape} must be 1-D "
                             "and of equal length")
        if indptr[0] != 0 or indptr[-1] != len(self.indices):
            raise ValueError(f"indptr must run from 0 to nnz={len(self.indices)}, "
                             f"got {indptr[0]}..{indptr[-1]}")
        if len(indptr) > 1 and np.any(indptr[1:] < indptr[:-1]):
            raise ValueError("indptr must be non-decreasing")
        n = len(indptr) - 1
        for name in ("labels", "weights"):
            value = getattr(self, name)
            if value is not None and value.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) to match indptr, got {value.shape}")

    @property
    def num_rows(self) -> int:
        """Number of rows ``n``.

        Examples
        --------
        >>> CSRBatch([0, 2, 2, 3], [4, 7, 1], [1.0, 2.0, 3.0], None).num_rows    # the middle row is empty
        3
        """
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        """Number of stored (non-zero) entries.

        Examples
        --------
        >>> CSRBatch([0, 2, 2, 3], [4, 7, 1], [1.0, 2.0, 3.0], None).nnz
        3
        """
        return len(self.indices)

    def slice_rows(self, start: int, stop: int) -> CSRBatch:
        """Rows ``start:stop`` (Python slice semantics, step 1).

        ``indices``, ``values``, ``labels`` and ``weights`` are views; only
        ``indptr`` (n + 1 integers) is copied to rebase it to 0, and not even
        that when the slice starts at the first stored entry.

        Examples
        --------
        >>> b = CSRBatch([0, 2, 2, 3], [4, 7, 1], [1.0, 2.0, 3.0], [1.0, 0.0, 1.0])
        >>> part = b.slice_rows(1, 10)
        >>> part.indptr.tolist(), part.indices.tolist(), part.labels.tolist(), part.values.base is b.values
        ([0, 0, 1], [1], [0.0, 1.0], True)
        """
        start, stop, _ = slice(start, stop).indices(self.num_rows)
        stop = max(start, stop)
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        indptr = self.indptr[start:stop + 1]
        return CSRBatch(indptr - lo if lo else indptr, self.indices[lo:hi], self.values[lo:hi],
                        None if self.labels is None else self.labels[start:stop],
                        None if self.weights is None else self.weights[start:stop])

    @classmethod
    def concat(cls, batches: Iterable[CSRBatch]) -> CSRBatch:
        """Stack batches row-wise into one batch (copies; a single batch is returned as is).

        All batches must agree on whether they have labels and weights.

        Examples
        --------
        >>> a = CSRBatch([0, 1], [3], [1.0], [1.0])
        >>> b = CSRBatch([0, 2], [0, 5], [2.0, 4.0], [0.0])
        >>> both = CSRBatch.concat([a, b])
        >>> both.indptr.tolist(), both.indices.tolist(), both.labels.tolist()
        ([0, 1, 3], [3, 0, 5], [1.0, 0.0])
        >>> CSRBatch.concat([a, CSRBatch([0, 1], [3], [1.0], None)])
        Traceback (most recent call last):
        ...
        ValueError: cannot concat batches where only some have labels
        """
        batches = list(batches)
        if not batches:
            raise ValueError("CSRBatch.concat needs at least one batch")
        if len(batches) == 1:
            return batches[0]
        optional = {}
        for name in ("labels", "weights"):
            present = [getattr(b, name) is not None for b in batches]
            if any(present) and not all(present):
                raise ValueError(f"cannot concat batches where only some have {name}")
            optional[name] = np.concatenate([getattr(b, name) for b in batches]) if all(present) else None
        indptr, indices, values = concat_csr([(b.indptr, b.indices, b.values) for b in batches])
        return cls(indptr, indices, values, optional["labels"], optional["weights"])


# --------------------------------------------------------------------------- record batches


def _get_column(batch: pa.RecordBatch, name: str, role: str) -> pa.Array:
    index = batch.schema.get_field_index(name)
    if index < 0:
        raise MissingColumnError(f"{role} column {name!r} not found in the Arrow batch; "
                                 f"available columns: {batch.schema.names}")
    return batch.column(index)


def record_batch_to_csr(batch: pa.RecordBatch, features_col: str, label_col: str | None = None,
                        weight_col: str | None = None, *, num_features: int | None = None,
                        binary_labels: bool = False, row_offset: int = 0) -> CSRBatch:
    """Convert one ``mapInArrow`` batch to a validated :class:`CSRBatch`.

    Parameters
    ----------
    batch : pyarrow.RecordBatch
    features_col : str
        ``VectorUDT`` column (see :func:`vectors_to_csr`), or a column of
        64-bit keys (see :func:`~spark_ps.ml.keycolumns.keys_to_csr`).
    label_col, weight_col : str, optional
        Numeric columns; without ``label_col`` the batch's labels are None.
    num_features : int, optional
        Upper bound (exclusive) on vector indices (key columns have none).
    binary_labels : bool
        Require labels in {0, 1}.
    row_offset : int
        Global row number of the batch's first row, for error messages.

    Raises
    ------
    MissingColumnError
        (a ``KeyError`` and ``ValueError``) naming the column and listing the batch's columns.
    ValueError
        On invalid data, naming the column and row (see :func:`vectors_to_csr`).

    Examples
    --------
    >>> import pyarrow as pa
    >>> feats = pa.array([{"type": 0, "size": 4, "indices": [3], "values": [1.0]}], type=VECTOR_ARROW_TYPE)
    >>> rb = pa.RecordBatch.from_arrays([feats, pa.array([1.0])], names=["features", "label"])
    >>> b = record_batch_to_csr(rb, "features", "label", binary_labels=True)
    >>> b.indices.tolist(), b.labels.tolist(), b.weights
    ([3], [1.0], None)
    """
    features = _get_column(batch, features_col, "features")
    labels = None if label_col is None else _get_column(batch, label_col, "label")
    weights = None if weight_col is None else _get_column(batch, weight_col, "weight")
    if is_key_column(features.type):
        indptr, indices, values = keys_to_csr(features, column_name=features_col, row_offset=row_offset)
    else:
        indptr, indices, values = vectors_to_csr(features, column_name=features_col, num_features=num_features,
                                                 row_offset=row_offset)
    y = None if labels is None else labels_to_array(labels, column_name=label_col, binary=binary_labels,
                                                    row_offset=row_offset)
    w = None if weights is None else weights_to_array(weights, column_name=weight_col, row_offset=row_offset)
    return CSRBatch(indptr, indices, values, y, w)
