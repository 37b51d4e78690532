"""Arrow columns of Spark ML vectors, labels and weights to numpy arrays, validated.

``mapInArrow`` hands a ``VectorUDT`` column to Python as the UDT's serialized
struct (checked against Spark 4.0.1, see :data:`VECTOR_ARROW_TYPE`)::

    struct<type: int8 not null, size: int32,
           indices: list<element: int32 not null>,
           values: list<element: double not null>>

``type`` 0 is a sparse vector (``size``, ``indices`` and ``values`` set), 1 a
dense one (``size`` and ``indices`` null, ``values`` holds every entry). One
batch can mix both: ``VectorAssembler`` emits whichever form is smaller per row.

The conversion never loops over rows in Python: each row's values are one
segment of the ``values`` child array, so the CSR ``indptr`` is the rebased
list offsets and the CSR ``values`` a slice of the child. Only dense rows need
indices synthesised (their position inside the row).

**Explicit zeros are dropped** (dense rows' zeros and stored zeros of sparse
rows alike). A zero contributes nothing to a linear or FM score or gradient,
but pulling and pushing its key would still cost a round trip and, with
stateful optimizers (Adam moments, ...), still move the key's state.
Repeated indices inside a sparse row (which Spark itself refuses to build)
are summed into one entry, so every row's keys are unique.

Labels and sample weights become float64 arrays, with nulls, NaN/inf, labels
outside {0, 1} (for binary classification) and negative weights refused,
naming the column and the global row. :mod:`spark_ps.ml.csr` assembles these
into a :class:`~spark_ps.ml.csr.CSRBatch` and re-exports this module's
public names, so ``from spark_ps.ml.csr import vectors_to_csr`` keeps
working; the split keeps both modules under 500 lines.
"""

from __future__ import annotations

from typing import NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["VECTOR_ARROW_TYPE", "concat_csr", "labels_to_array", "vectors_to_csr", "weights_to_array"]

#: ``type`` codes of :class:`pyspark.ml.linalg.VectorUDT`'s serialized struct.
SPARSE, DENSE = 0, 1

#: Arrow type of a ``VectorUDT`` column inside ``mapInArrow`` (Spark 4.0.1).
VECTOR_ARROW_TYPE = pa.struct([
    pa.field("type", pa.int8(), nullable=False),
    pa.field("size", pa.int32()),
    pa.field("indices", pa.list_(pa.field("element", pa.int32(), nullable=False))),
    pa.field("values", pa.list_(pa.field("element", pa.float64(), nullable=False))),
])



def empty_csr() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays of zero rows: ``indptr == [0]``, no indices, no values."""
    return np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)


def concat_csr(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack ``(indptr, indices, values)`` triples row-wise (copies; a single triple is returned as is).

    Examples
    --------
    >>> import numpy as np
    >>> first = (np.array([0, 2]), np.array([1, 4]), np.array([0.5, 1.0]))
    >>> second = (np.array([0, 0, 1]), np.array([7]), np.array([2.0]))
    >>> [part.tolist() for part in concat_csr([first, second])]
    [[0, 2, 2, 3], [1, 4, 7], [0.5, 1.0, 2.0]]
    """
    if len(parts) == 1:
        return parts[0]
    starts = np.cumsum([0] + [len(p[1]) for p in parts])
    indptr = np.concatenate([np.zeros(1, np.int64)] + [p[0][1:] + s for p, s in zip(parts, starts)])
    return indptr, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


# --------------------------------------------------------------------------- vectors


def vectors_to_csr(column: pa.Array | pa.ChunkedArray, *, column_name: str = "features",
                   num_features: int | None = None, row_offset: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert a ``VectorUDT`` column (as ``mapInArrow`` delivers it) to CSR arrays.

    Parameters
    ----------
    column : pyarrow.StructArray or ChunkedArray of it
        Struct of ``type``, ``size``, ``indices``, ``values`` (see
        :data:`VECTOR_ARROW_TYPE`); sliced arrays and chunks are fine.
    column_name : str
        Used in error messages only.
    num_features : int, optional
        If given, every index must be ``< num_features``.
    row_offset : int
        Global row number of the column's first row, for error messages.

    Returns
    -------
    indptr : ndarray of int64, shape (n + 1,)
    indices : ndarray of int64
        Strictly increasing within each row: rows that are not (possible only
        in hand-built Arrow data) are sorted and repeated indices summed.
    values : ndarray of float64
        Explicit zeros are dropped. May be a read-only view of the Arrow buffer.

    Raises
    ------
    ValueError
        Naming the column and the global row: null vector, unknown type code,
        sparse row with null size/indices or as many indices as values,
        NaN/inf value, negative index, index ``>= num_features``, or a sparse
        index ``>=`` the vector's own size.
    TypeError
        If the column is not a vector struct.

    Examples
    --------
    >>> import pyarrow as pa
    >>> col = pa.array([{"type": 0, "size": 6, "indices": [1, 5], "values": [0.5, 2.0]},
    ...                 {"type": 1, "size": None, "indices": None, "values": [3.0, 0.0, 4.0]}],
    ...                type=VECTOR_ARROW_TYPE)
    >>> indptr, indices, values = vectors_to_csr(col)
    >>> indptr.tolist(), indices.tolist(), values.tolist()
    ([0, 2, 4], [1, 5, 0, 2], [0.5, 2.0, 3.0, 4.0])
    """
    if num_features is not None and (int(num_features) != num_features or num_features < 1):
        raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
    if isinstance(column, pa.ChunkedArray):
        _check_vector_type(column.type, column_name)
        parts, offset = [], row_offset
        for chunk in column.chunks:
            parts.append(_struct_to_csr(chunk, column_name, num_features, offset))
            offset += len(chunk)
        if not parts:
            return empty_csr()
        return concat_csr(parts)
    return _struct_to_csr(column, column_name, num_features, row_offset)


def _check_vector_type(typ: pa.DataType, name: str) -> None:
    fields = {typ.field(i).name for i in range(typ.num_fields)} if pa.types.is_struct(typ) else set()
    if not {"type", "size", "indices", "values"} <= fields:
        raise TypeError(f"column {name!r} has Arrow type {typ}, not a Spark ML vector "
                        f"(expected {VECTOR_ARROW_TYPE}); pass a VectorUDT column, e.g. from VectorAssembler")


def first_true(mask: np.ndarray) -> int:
    """Position of the first True of a boolean array (0 if none)."""
    return int(np.argmax(mask))


def row_of_entry(offsets: np.ndarray, pos: int) -> int:
    """Row holding entry ``pos`` (the last row whose segment starts at or before it)."""
    return int(np.searchsorted(offsets, pos, side="right")) - 1


def _struct_to_csr(arr: pa.Array, name: str, num_features: int | None, row_offset: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check_vector_type(arr.type, name)
    n = len(arr)

    def fail(row: int, what: str) -> NoReturn:
        raise ValueError(f"column {name!r} row {row_offset + int(row)}: {what}")

    if arr.null_count:
        fail(first_true(pc.is_null(arr).to_numpy(zero_copy_only=False)),
             "null feature vector; drop or impute rows with null vectors first")
    # StructArray.field() applies the struct's own offset (sliced arrays), the
    # list .offsets below are absolute positions into the unsliced child.
    kind = arr.field("type").to_numpy(zero_copy_only=False)
    unknown = (kind != SPARSE) & (kind != DENSE)
    if unknown.any():
        row = first_true(unknown)
        fail(row, f"unknown vector type code {kind[row]} (0 = sparse, 1 = dense)")
    if n == 0:
        return empty_csr()
    is_dense = kind == DENSE
    has_dense = bool(is_dense.any())
    has_sparse = not bool(is_dense.all())

    vlist = arr.field("values")
    if vlist.null_count:
        fail(first_true(vlist.is_null().to_numpy(zero_copy_only=False)), "vector with a null values list")
    voff = vlist.offsets.to_numpy().astype(np.int64)
    lengths = np.diff(voff)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    nnz = int(indptr[-1])
    # Every row's values are used, so together they are one contiguous run.
    values = _child_numpy(vlist.values, int(voff[0]), nnz, np.float64, voff, "values", fail)

    if has_sparse:
        ilist = arr.field("indices")
        sparse_rows = ~is_dense
        null_idx = sparse_rows & ilist.is_null().to_numpy(zero_copy_only=False)
        if null_idx.any():
            fail(first_true(null_idx), "sparse vector (type 0) with null indices")
        ioff = ilist.offsets.to_numpy().astype(np.int64)
        mismatch = sparse_rows & (np.diff(ioff) != lengths)
        if mismatch.any():
            row = first_true(mismatch)
            fail(row, f"sparse vector with {ioff[row + 1] - ioff[row]} indices but {lengths[row]} values")
        size = arr.field("size")
        null_size = sparse_rows & size.is_null().to_numpy(zero_copy_only=False)
        if null_size.any():
            fail(first_true(null_size), "sparse vector (type 0) with null size")
        size = pc.fill_null(size, 0).to_numpy(zero_copy_only=False).astype(np.int64)

    if not has_dense:
        # Sparse rows have exactly one index per value: their index segments
        # are contiguous and line up with the value segments.
        indices = _child_numpy(ilist.values, int(ioff[0]), nnz, np.int64, ioff, "indices", fail)
    else:
        # Dense rows: an entry's index is its position inside its row.
        indices = np.arange(nnz, dtype=np.int64) - np.repeat(indptr[:-1], lengths)
        if has_sparse:
            in_sparse = np.repeat(~is_dense, lengths)
            # Dense rows' (null) index lists may still own child entries, so
            # gather the sparse rows' segments instead of slicing one run.
            src = np.repeat(ioff[:-1], lengths)[in_sparse] + indices[in_sparse]
            first = int(src[0]) if len(src) else 0  # src increases: sparse rows in order
            src -= first
            child = _child_numpy(ilist.values, first, int(src[-1]) + 1 if len(src) else 0, np.int64, ioff,
                                 "indices", fail, used=src)
            indices[in_sparse] = child[src]

    bad = ~np.isfinite(values)
    if bad.any():
        pos = first_true(bad)
        fail(row_of_entry(indptr, pos), f"non-finite feature value {values[pos]} (feature index {indices[pos]})")

    if nnz:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0:
            pos = first_true(indices < 0)
            fail(row_of_entry(indptr, pos), f"negative feature index {indices[pos]}")
        if num_features is not None and hi >= num_features:
            pos = first_true(indices >= num_features)
            row = row_of_entry(indptr, pos)
            what = (f"dense vector of size {lengths[row]}" if is_dense[row]
                    else f"sparse vector has feature index {indices[pos]}")
            fail(row, f"{what}, but num_features={num_features} (indices must be < num_features)")
        if has_sparse:
            own = np.where(is_dense, np.iinfo(np.int64).max, size)
            if hi >= own.min():
                bad = indices >= np.repeat(own, lengths)
                if bad.any():
                    pos = first_true(bad)
                    row = row_of_entry(indptr, pos)
                    fail(row, f"sparse vector of size {own[row]} has feature index {indices[pos]}")

    indptr, indices, values = sort_and_sum_rows(indptr, indices, values)
    return drop_zeros(indptr, indices, values)


def sort_and_sum_rows(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays whose rows have strictly increasing indices: unsorted rows sorted, repeats summed.

    Returns the input unchanged (no copy) when every row already increases,
    as Spark's own vectors always do.
    """
    if _has_repeated_index(indptr, indices):
        return _sum_duplicates(indptr, indices, values)
    return indptr, indices, values


def drop_zeros(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays without their explicit zeros (the input unchanged when there are none)."""
    nnz = len(values)
    if np.count_nonzero(values) == nnz:
        return indptr, indices, values
    keep = values != 0.0
    kept_before = np.zeros(nnz + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    return kept_before[indptr], indices[keep], values[keep]


def _has_repeated_index(indptr: np.ndarray, indices: np.ndarray) -> bool:
    """Whether some row's indices are not strictly increasing (so may repeat).

    Spark's SparseVector enforces strictly increasing indices, and dense rows'
    positions increase by construction, so this one pass is all real data pays.
    """
    if len(indices) < 2:
        return False
    not_increasing = indices[1:] <= indices[:-1]
    # Pair (p - 1, p) straddles two rows when p is a row start; those may decrease.
    starts = indptr[1:-1]
    not_increasing[starts[(starts > 0) & (starts < len(indices))] - 1] = False
    return bool(not_increasing.any())


def _sum_duplicates(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort each row by index and sum repeated indices into one entry.

    Keeps every row's keys unique, which the FM kernels need to match the
    dense formula (a repeated key would otherwise interact with itself).
    """
    n = len(indptr) - 1
    row = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    order = np.lexsort((indices, row))
    row, indices, values = row[order], indices[order], values[order]
    first = np.ones(len(indices), dtype=bool)
    first[1:] = (row[1:] != row[:-1]) | (indices[1:] != indices[:-1])
    starts = np.flatnonzero(first)
    out_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row[starts], minlength=n), out=out_indptr[1:])
    return out_indptr, indices[starts], np.add.reduceat(values, starts)


def _child_numpy(child: pa.Array, start: int, length: int, dtype, offsets: np.ndarray, what: str, fail,
                 used: np.ndarray | None = None) -> np.ndarray:
    """``child[start:start + length]`` as numpy, refusing nulls among the ``used`` positions.

    ``offsets`` are the list's absolute offsets, to name the row of a null.
    """
    part = child.slice(start, length)
    if part.null_count:
        null = part.is_null().to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(null) if used is None else used[null[used]]
        if len(bad):
            fail(row_of_entry(offsets, start + int(bad[0])), f"null element inside the {what} list of a vector")
        part = pc.fill_null(part, 0)  # nulls only where no row reads
    return part.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


# --------------------------------------------------------------------------- labels, weights


def _numeric_column(column, name: str, role: str, row_offset: int) -> np.ndarray:
    typ = column.type
    if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ)
            or pa.types.is_decimal(typ)):
        raise TypeError(f"{role} column {name!r} has Arrow type {typ}; expected a numeric column")
    if column.null_count:
        row = first_true(pc.is_null(column).to_numpy(zero_copy_only=False))
        raise ValueError(f"{role} column {name!r} row {row_offset + row}: null {role}")
    if typ != pa.float64():
        column = column.cast(pa.float64())
    out = column.to_numpy()
    if isinstance(column, pa.ChunkedArray):
        out = np.ascontiguousarray(out)
    bad = ~np.isfinite(out)
    if bad.any():
        row = first_true(bad)
        raise ValueError(f"{role} column {name!r} row {row_offset + row}: non-finite {role} {out[row]}")
    return out


def labels_to_array(column: pa.Array | pa.ChunkedArray, *, column_name: str = "label", binary: bool = False,
                    row_offset: int = 0) -> np.ndarray:
    """Labels as float64, refusing nulls, NaN/inf and (if ``binary``) values outside {0, 1}.

    Parameters
    ----------
    column : pyarrow numeric Array or ChunkedArray
    column_name : str
        Used in error messages only.
    binary : bool
        Logistic loss: labels must be exactly 0 or 1.
    row_offset : int
        Global row number of the first row, for error messages.

    Examples
    --------
    >>> import pyarrow as pa
    >>> labels_to_array(pa.array([1, 0, 1]), binary=True).tolist()
    [1.0, 0.0, 1.0]
    >>> labels_to_array(pa.array([1.0, 2.0]), binary=True)
    Traceback (most recent call last):
    ...
    ValueError: label column 'label' row 1: label 2.0 is not 0 or 1 (binary classification needs labels in {0, 1})
    """
    y = _numeric_column(column, column_name, "label", row_offset)
    if binary:
        bad = (y != 0.0) & (y != 1.0)
        if bad.any():
            row = first_true(bad)
            raise ValueError(f"label column {column_name!r} row {row_offset + row}: label {y[row]} is not 0 or 1 "
                             "(binary classification needs labels in {0, 1})")
    return y


def weights_to_array(column: pa.Array | pa.ChunkedArray, *, column_name: str = "weight",
                     row_offset: int = 0) -> np.ndarray:
    """Sample weights as float64, refusing nulls, NaN/inf and negative weights.

    Examples
    --------
    >>> import pyarrow as pa
    >>> weights_to_array(pa.array([1.0, 0.5])).tolist()
    [1.0, 0.5]
    """
    w = _numeric_column(column, column_name, "weight", row_offset)
    negative = w < 0.0
    if negative.any():
        row = first_true(negative)
        raise ValueError(f"weight column {column_name!r} row {row_offset + row}: negative weight {w[row]}")
    return w
