"""Synthetic CTR-like data: hashed categorical fields, a sparse logistic ground truth.

Every row has ``n_fields`` categorical fields. Field ``f`` draws a value from a
bounded Zipf law over its own vocabulary (sizes range from a handful to
millions, so there are head values seen in most rows and a long tail seen once),
and the pair ``(f, value)`` is hashed with a 64-bit mix to a feature index in
``[0, dim)``. Feature values are 1.0; indices that collide inside one row are
merged (kept once, sorted), so a row has at most ``n_fields`` non-zeros.

Labels come from a ground-truth logistic model defined per ``(field, value)``
(not per hashed index, so small ``dim`` loses accuracy to collisions exactly as
the hashing trick does): most weights are zero or small, a few are large, all
derived from ``truth_seed`` by hashing, so the truth never has to be stored and
train and test share it whatever their size. A bias, calibrated once per truth
on a fixed sample, sets the expected CTR; per-row Gaussian noise on the margin
caps the achievable AUC. With the defaults, 400k training rows give a learned
AUC of about 0.8 (see ``integration/numpy_ftrl.py``).

All randomness is counter-based (hash of seed, row number, field), so row ``r``
of a stream is the same whatever the chunking, and train / test are disjoint
row ranges of one stream (``start_row``).

Output formats (``write_dataset``):

``vector``
    Parquet with ``label: double`` and ``features``: Spark ML ``VectorUDT``
    (sparse). Written by pyarrow alone: the column is VectorUDT's physical
    struct ``{type: int8, size: int32, indices: list<int32>, values: list<double>}``
    and the file carries Spark's own schema JSON under the footer key
    ``org.apache.spark.sql.parquet.row.metadata`` (what Spark itself writes),
    so ``spark.read.parquet`` returns a ``vector`` column with no conversion
    step. We chose this because Spark 4.0.1 refuses both
    ``CAST(struct AS vector)`` and ``DataFrame.to(schema)`` from a struct to
    the UDT, and any Python path (UDF, ``createDataFrame`` of ``SparseVector``
    objects) costs a Python object per row. Spark ``SparseVector`` indices
    and size are int32, so this format needs ``dim <= 2**31 - 1``.
``keys``
    Parquet with ``label: double``, ``indices: list<int64>`` (the hashed keys,
    any ``dim`` up to 2**63) and ``values: list<double>``; the footer records
    ``dim``. This is the input for ``dim`` beyond VectorUDT's int32 cap.
``libsvm``
    Text, ``label idx:val ...`` with 1-based ascending indices, as Spark's
    ``libsvm`` source reads it. Pass ``.option("numFeatures", dim)`` when
    reading: otherwise Spark scans the data for the largest index first, and
    the vector size is an int, so ``dim`` must again be ``<= 2**31 - 1``.

Examples
--------
Command line (train 400k rows, test 100k rows, ``dim = 2**22``)::

    python integration/ctr_data.py --rows 400000 --test-rows 100000 --dim-log2 22 \
        --out integration/out/ctr_d22 --libsvm

From Python:

>>> indptr, indices, values, labels = generate(1000, 2**22, seed=1)
>>> indptr.shape, labels.shape
((1001,), (1000,))
>>> bool(indices.max() < 2**22), bool((values == 1.0).all())
(True, True)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import pathlib
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Sibling module: integration/ is sys.path[0] when a script here runs, and pytest adds it too.
from metrics import auc

#: Largest ``dim`` a Spark ``SparseVector`` can have (its size and indices are int32).
VECTOR_MAX_DIM = 2**31 - 1
#: Footer key under which Spark stores (and looks for) the Catalyst schema of a Parquet file.
SPARK_SCHEMA_KEY = "org.apache.spark.sql.parquet.row.metadata"
FORMATS = ("vector", "keys", "libsvm")

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# Distinct salts so the feature hash, the truth and each random stream are independent functions.
_SALT_INDEX, _SALT_WEIGHT, _SALT_VALUE, _SALT_NOISE_A, _SALT_NOISE_B, _SALT_LABEL = (
    np.uint64(s) for s in (0x1D, 0x2B, 0x47, 0x59, 0x61, 0x7B))
_CALIBRATION_ROWS = 50_000
_CALIBRATION_SEED = 0x5EED_CA1B


@dataclasses.dataclass(frozen=True)
class CTRSpec:
    """Shape of the data and of the ground truth; everything except the row seed.

    Parameters
    ----------
    n_fields : int
        Categorical fields per row (upper bound on non-zeros per row).
    vocab_min, vocab_max : int
        Vocabulary sizes of the fields, log-spaced between these.
    zipf_min, zipf_max : float
        Zipf exponents; the smallest vocabulary gets ``zipf_max`` (a few values
        dominate), the largest ``zipf_min`` (long tail).
    p_nonzero : float
        Fraction of (field, value) pairs with a non-zero true weight.
    weight_scale : float
        Scale of the Laplace distribution of ordinary non-zero weights.
    p_large, large_scale : float
        Fraction of pairs with a large weight, and that weight's Laplace scale.
    noise_std : float
        Standard deviation of the Gaussian noise added to each row's margin.
    ctr : float
        Expected click rate; the bias is calibrated to it.
    truth_seed : int
        Seed of the ground-truth weights and of the feature hash.
    """

    n_fields: int = 30
    vocab_min: int = 8
    vocab_max: int = 3_000_000
    zipf_min: float = 1.05
    zipf_max: float = 1.6
    p_nonzero: float = 0.5
    weight_scale: float = 0.32
    p_large: float = 0.03
    large_scale: float = 1.2
    noise_std: float = 1.0
    ctr: float = 0.25
    truth_seed: int = 0

    def vocab_sizes(self) -> np.ndarray:
        return np.round(np.geomspace(self.vocab_min, self.vocab_max, self.n_fields)).astype(np.int64)

    def zipf_exponents(self) -> np.ndarray:
        return np.linspace(self.zipf_max, self.zipf_min, self.n_fields)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijection on uint64 with good avalanche.

    Parameters
    ----------
    x : numpy.ndarray of uint64

    Returns
    -------
    numpy.ndarray of uint64

    Examples
    --------
    >>> int(mix64(np.array([0], np.uint64))[0])
    0
    >>> len(set(mix64(np.arange(1000, dtype=np.uint64)).tolist()))
    1000
    """
    x = np.array(x, dtype=np.uint64)  # a copy: the steps below work in place
    # uint64 array arithmetic wraps modulo 2**64, which is what the mix needs.
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _stream(seed: int, salt: np.uint64, rows: np.ndarray, cols: np.ndarray | int) -> np.ndarray:
    """Counter-based uint64 random numbers for (seed, salt, row, column)."""
    s = mix64(np.array([np.uint64(seed % 2**64) ^ salt], np.uint64))[0]
    key = rows.astype(np.uint64)[:, None] * _GOLDEN + np.asarray(cols, np.uint64)
    return mix64(mix64(key ^ s) + s)


def _uniform(h: np.ndarray) -> np.ndarray:
    """Top 53 bits of a hash as a double in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _pair_hash(field: np.ndarray, value: np.ndarray, salt: np.uint64, truth_seed: int) -> np.ndarray:
    # field < 2**16 and value < 2**48 pack into one word injectively; mix64 is a bijection,
    # so distinct pairs never share a 64-bit hash (only the final `% dim` can collide).
    packed = (field.astype(np.uint64) << np.uint64(48)) | value.astype(np.uint64)
    seed = mix64(np.array([np.uint64(truth_seed % 2**64) ^ salt], np.uint64))[0]
    return mix64(packed ^ seed)


def true_weights(field: np.ndarray, value: np.ndarray, spec: CTRSpec) -> np.ndarray:
    """Ground-truth weight of each (field, value) pair; deterministic in ``spec.truth_seed``.

    Parameters
    ----------
    field, value : numpy.ndarray of int
        Broadcastable arrays of field ids and value ids (Zipf ranks, 0 = most frequent).
    spec : CTRSpec

    Returns
    -------
    numpy.ndarray of float64

    Examples
    --------
    >>> w = true_weights(np.zeros(100_000, int), np.arange(100_000), CTRSpec())
    >>> 0.4 < float(np.mean(w == 0)) < 0.6
    True
    """
    field, value = np.broadcast_arrays(np.asarray(field), np.asarray(value))
    # One hash, three independent bit fields: 21 bits pick the weight class, 1 bit the sign,
    # the top 32 bits the magnitude (hashing three times costs most of the generator's time).
    h = _pair_hash(field, value, _SALT_WEIGHT, spec.truth_seed)
    u = (h & np.uint64(0x1FFFFF)).astype(np.float64) * 2.0**-21
    sign = np.where(h & np.uint64(1 << 21), 1.0, -1.0)
    v = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * 2.0**-32  # in (0, 1): the log is finite
    magnitude = -np.log(v)  # Laplace magnitude by inverse CDF
    scale = np.where(u < spec.p_large, spec.large_scale, np.where(u < spec.p_nonzero, spec.weight_scale, 0.0))
    return sign * magnitude * scale


def _raw_rows(start_row: int, n_rows: int, dim: int, seed: int, spec: CTRSpec
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashed indices ``(n_rows, n_fields)`` (unsorted, may repeat), true margins without bias, noise."""
    rows = np.arange(start_row, start_row + n_rows, dtype=np.int64)
    fields = np.arange(spec.n_fields, dtype=np.int64)
    u = _uniform(_stream(seed, _SALT_VALUE, rows, fields))
    # Bounded Zipf by inverting the continuous CDF of x**-s on [1, V + 1): rank = floor(x) - 1.
    one_minus_s = 1.0 - spec.zipf_exponents()
    top = (spec.vocab_sizes() + 1.0) ** one_minus_s
    x = (1.0 + u * (top - 1.0)) ** (1.0 / one_minus_s)
    value = np.minimum(np.floor(x).astype(np.int64) - 1, spec.vocab_sizes() - 1)
    field_grid = np.broadcast_to(fields, value.shape)
    index = (_pair_hash(field_grid, value, _SALT_INDEX, spec.truth_seed) % np.uint64(dim)).astype(np.int64)
    margin = true_weights(field_grid, value, spec).sum(axis=1)
    # Box-Muller noise; 1 - u1 is in (0, 1] so the log is finite.
    u1 = _uniform(_stream(seed, _SALT_NOISE_A, rows, 0))[:, 0]
    u2 = _uniform(_stream(seed, _SALT_NOISE_B, rows, 0))[:, 0]
    noise = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
    return index, margin, spec.noise_std * noise


@functools.lru_cache(maxsize=16)
def calibrated_bias(spec: CTRSpec) -> float:
    """Bias that gives ``spec.ctr`` as the expected click rate, fitted on a fixed sample.

    The sample depends only on ``spec`` (its own seed, the feature hash is not
    involved), so train and test of any size and ``dim`` share the bias.

    Examples
    --------
    >>> round(calibrated_bias(CTRSpec()), 2) < 0
    True
    """
    _, margin, noise = _raw_rows(0, _CALIBRATION_ROWS, 2**20, _CALIBRATION_SEED, spec)
    margin = margin + noise
    lo, hi = -30.0, 30.0
    # The mean of sigmoid(margin + b) is increasing in b: bisect to double precision.
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if np.mean(_sigmoid(margin + mid)) < spec.ctr:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _to_csr(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row's indices and drop repeats (hash collisions inside the row)."""
    index = np.sort(index, axis=1)
    keep = np.ones(index.shape, dtype=bool)
    keep[:, 1:] = index[:, 1:] != index[:, :-1]
    indptr = np.zeros(len(index) + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    return indptr, index[keep]


@dataclasses.dataclass
class Chunk:
    """Rows ``[start_row, start_row + len(labels))`` in CSR form.

    ``margins`` is the true margin with bias but without the noise: the
    Bayes-optimal score given the features (``P(y=1 | x)`` is increasing in
    it), so its AUC is the ceiling any model can reach.
    """

    start_row: int
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    margins: np.ndarray


def iter_chunks(n_rows: int, dim: int, seed: int, *, start_row: int = 0, chunk_rows: int = 65_536,
                spec: CTRSpec = CTRSpec()) -> Iterator[Chunk]:
    """Yield the rows ``[start_row, start_row + n_rows)`` of stream ``seed`` in chunks.

    Parameters
    ----------
    n_rows : int
        Rows to produce.
    dim : int
        Feature space size; indices are in ``[0, dim)``. Any value in ``[2, 2**63)``.
    seed : int
        Row stream seed. The ground truth does not depend on it (see ``spec.truth_seed``).
    start_row : int
        First row number of the stream; use disjoint ranges for train and test.
    chunk_rows : int
        Rows per chunk (memory is about ``chunk_rows * n_fields * 60`` bytes).
    spec : CTRSpec

    Yields
    ------
    Chunk

    Examples
    --------
    >>> a = list(iter_chunks(10, 2**18, 7, chunk_rows=3))
    >>> [len(c.labels) for c in a]
    [3, 3, 3, 1]
    >>> b = next(iter_chunks(10, 2**18, 7))
    >>> bool(np.array_equal(np.concatenate([c.indices for c in a]), b.indices))
    True
    """
    if not 2 <= dim < 2**63:
        raise ValueError(f"dim must be in [2, 2**63), got {dim}")
    if spec.n_fields >= 2**16:
        raise ValueError("n_fields must be < 65536 (the field id is packed into 16 bits)")
    bias = calibrated_bias(spec)
    for lo in range(start_row, start_row + n_rows, chunk_rows):
        m = min(chunk_rows, start_row + n_rows - lo)
        index, margin, noise = _raw_rows(lo, m, dim, seed, spec)
        margin = margin + bias
        indptr, indices = _to_csr(index)
        u = _uniform(_stream(seed, _SALT_LABEL, np.arange(lo, lo + m, dtype=np.int64), 0))[:, 0]
        labels = (u < _sigmoid(margin + noise)).astype(np.float64)
        yield Chunk(lo, indptr, indices, np.ones(len(indices)), labels, margin)


def generate(n_rows: int, dim: int, seed: int, *, start_row: int = 0, spec: CTRSpec = CTRSpec(),
             chunk_rows: int = 65_536) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All rows of :func:`iter_chunks` as one CSR matrix plus labels.

    Parameters
    ----------
    n_rows, dim, seed, start_row, spec, chunk_rows
        As in :func:`iter_chunks`.

    Returns
    -------
    indptr : numpy.ndarray of int64, shape (n_rows + 1,)
    indices : numpy.ndarray of int64
        Sorted and unique within each row, in ``[0, dim)``.
    values : numpy.ndarray of float64
        All 1.0.
    labels : numpy.ndarray of float64
        0.0 or 1.0.

    Examples
    --------
    >>> indptr, indices, values, labels = generate(2000, 2**40, seed=3)
    >>> bool(np.all(np.diff(indptr) <= 30)), bool(indices.max() < 2**40)
    (True, True)
    >>> 0.15 < float(labels.mean()) < 0.35
    True
    """
    chunks = list(iter_chunks(n_rows, dim, seed, start_row=start_row, chunk_rows=chunk_rows, spec=spec))
    return _concat(chunks)[:4]


def _concat(chunks: Sequence[Chunk]) -> tuple[np.ndarray, ...]:
    if not chunks:
        return (np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0))
    offsets = np.cumsum([0] + [c.indptr[-1] for c in chunks[:-1]])
    indptr = np.concatenate([chunks[0].indptr[:1]] + [c.indptr[1:] + o for c, o in zip(chunks, offsets)])
    return (indptr, np.concatenate([c.indices for c in chunks]), np.concatenate([c.values for c in chunks]),
            np.concatenate([c.labels for c in chunks]), np.concatenate([c.margins for c in chunks]))


# --- writers ---------------------------------------------------------------

def vector_schema_json() -> str:
    """Spark's schema JSON for ``label: double, features: vector`` (what Spark writes in the footer).

    Built by hand rather than through ``pyspark.ml.linalg.VectorUDT().json()``
    so that generating data does not import pyspark; the bench checks that
    Spark reads the result as ``VectorUDT``.

    Examples
    --------
    >>> json.loads(vector_schema_json())["fields"][1]["type"]["class"]
    'org.apache.spark.ml.linalg.VectorUDT'
    """
    def array(element: str) -> dict:
        return {"type": "array", "elementType": element, "containsNull": False}

    sql_type = {"type": "struct", "fields": [
        {"name": "type", "type": "byte", "nullable": False, "metadata": {}},
        {"name": "size", "type": "integer", "nullable": True, "metadata": {}},
        {"name": "indices", "type": array("integer"), "nullable": True, "metadata": {}},
        {"name": "values", "type": array("double"), "nullable": True, "metadata": {}}]}
    udt = {"type": "udt", "class": "org.apache.spark.ml.linalg.VectorUDT",
           "pyClass": "pyspark.ml.linalg.VectorUDT", "sqlType": sql_type}
    return json.dumps({"type": "struct", "fields": [
        {"name": "label", "type": "double", "nullable": False, "metadata": {}},
        {"name": "features", "type": udt, "nullable": False, "metadata": {}}]})


def _list_array(offsets: np.ndarray, flat: np.ndarray, arrow_type: pa.DataType) -> pa.ListArray:
    # "element" and non-null match the 3-level LIST layout Spark writes for array<T, containsNull=false>.
    list_type = pa.list_(pa.field("element", arrow_type, nullable=False))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat, arrow_type), type=list_type)


def _vector_table(c: Chunk, dim: int) -> pa.Table:
    n = len(c.labels)
    features = pa.StructArray.from_arrays(
        [pa.array(np.zeros(n, np.int8)),  # type 0 = sparse in VectorUDT's encoding
         pa.array(np.full(n, dim, np.int32)),
         _list_array(c.indptr, c.indices.astype(np.int32), pa.int32()),
         _list_array(c.indptr, c.values, pa.float64())],
        fields=[pa.field("type", pa.int8(), nullable=False), pa.field("size", pa.int32()),
                pa.field("indices", pa.list_(pa.field("element", pa.int32(), nullable=False))),
                pa.field("values", pa.list_(pa.field("element", pa.float64(), nullable=False)))])
    table = pa.Table.from_arrays([pa.array(c.labels), features], schema=pa.schema(
        [pa.field("label", pa.float64(), nullable=False), pa.field("features", features.type, nullable=False)]))
    return table.replace_schema_metadata({SPARK_SCHEMA_KEY: vector_schema_json()})


def _keys_table(c: Chunk, dim: int) -> pa.Table:
    table = pa.table({"label": pa.array(c.labels),
                      "indices": _list_array(c.indptr, c.indices, pa.int64()),
                      "values": _list_array(c.indptr, c.values, pa.float64())})
    return table.replace_schema_metadata({"spark_ps.dim": str(dim)})


# Dictionary-encode only the low-cardinality columns: on the hashed indices a dictionary
# is nearly as large as the data and costs a third of the write time.
_DICTIONARY_COLUMNS = ["label", "values.list.element", "features.type", "features.size",
                       "features.values.list.element"]
_POW10 = 10 ** np.arange(1, 19, dtype=np.int64)


def libsvm_bytes(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, labels: np.ndarray) -> bytes:
    """Rows as libsvm text (1-based indices), formatted with numpy, not per row in Python.

    The vectorised path needs labels in {0, 1} and all values 1.0 (what
    :func:`generate` produces); anything else takes a plain Python path.

    Examples
    --------
    >>> libsvm_bytes(np.array([0, 2, 3]), np.array([0, 41, 9]), np.ones(3), np.array([1.0, 0.0]))
    b'1 1:1 42:1\\n0 10:1\\n'
    >>> libsvm_bytes(np.array([0, 0, 1]), np.array([2**40 - 1]), np.ones(1), np.array([0.0, 1.0]))
    b'0\\n1 1099511627776:1\\n'
    """
    n = len(labels)
    if not (np.all(values == 1.0) and np.all((labels == 0.0) | (labels == 1.0))):
        lines = []
        for r in range(n):
            feats = " ".join(f"{i + 1}:{v:.17g}" for i, v in zip(indices[indptr[r]:indptr[r + 1]],
                                                                  values[indptr[r]:indptr[r + 1]]))
            lines.append(f"{labels[r]:.17g} {feats}".rstrip() + "\n")
        return "".join(lines).encode()
    one_based = indices.astype(np.int64) + 1
    ndig = np.searchsorted(_POW10, one_based, side="right") + 1
    maxd = int(ndig.max(initial=1))
    # Every feature token " <digits>:1" right-aligned in a fixed-width byte matrix; a mask
    # then drops the left padding, so the tokens come out concatenated in row order.
    width = maxd + 3
    tok = np.empty((len(indices), width), np.uint8)
    rest = one_based.copy()
    for j in range(maxd, 0, -1):
        tok[:, j] = ord("0") + (rest % 10).astype(np.uint8)
        rest //= 10
    tok[:, maxd + 1] = ord(":")
    tok[:, maxd + 2] = ord("1")
    tok[np.arange(len(indices)), maxd - ndig] = ord(" ")
    token_bytes = tok[np.arange(width)[None, :] >= (maxd - ndig)[:, None]]
    # Row r is: label byte, its tokens, newline.
    row_of = np.repeat(np.arange(n), np.diff(indptr))
    row_len = np.bincount(row_of, weights=ndig + 3, minlength=n).astype(np.int64) + 2
    starts = np.zeros(n + 1, np.int64)
    np.cumsum(row_len, out=starts[1:])
    buf = np.empty(starts[-1], np.uint8)
    buf[starts[:-1]] = ord("0") + labels.astype(np.uint8)
    buf[starts[1:] - 1] = ord("\n")
    body = np.ones(len(buf), bool)
    body[starts[:-1]] = False
    body[starts[1:] - 1] = False
    buf[body] = token_bytes
    return buf.tobytes()


def write_dataset(path: str | pathlib.Path, n_rows: int, dim: int, seed: int, *, start_row: int = 0,
                  formats: Sequence[str] = ("vector", "keys"), n_files: int = 4, chunk_rows: int = 65_536,
                  spec: CTRSpec = CTRSpec()) -> dict:
    """Write rows of one stream in the requested formats under ``path``.

    Creates ``path/vector/part-NNNNN.parquet``, ``path/keys/part-NNNNN.parquet``
    and ``path/libsvm/part-NNNNN.libsvm`` as requested; each format has the
    same ``n_files`` row ranges (so Spark gets that many input splits
    without a shuffle). ``vector`` is skipped with a note when ``dim`` exceeds
    :data:`VECTOR_MAX_DIM`.

    Parameters
    ----------
    path : str or pathlib.Path
        Output directory (created; existing part files are overwritten).
    n_rows, dim, seed, start_row, chunk_rows, spec
        As in :func:`iter_chunks`.
    formats : sequence of {"vector", "keys", "libsvm"}
    n_files : int
        Part files per format.

    Returns
    -------
    dict
        Summary: rows, nnz, positive rate, formats written, seconds and the
        AUC of the true noiseless margin, the ceiling any model can reach
        (``oracle_auc``).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     info = write_dataset(tmp, 1000, 2**20, seed=0, formats=("keys", "libsvm"), n_files=2)
    ...     sorted(p.name for p in pathlib.Path(tmp, "keys").iterdir())
    ['part-00000.parquet', 'part-00001.parquet']
    >>> info["rows"], info["formats"]
    (1000, ['keys', 'libsvm'])
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; choose from {FORMATS}")
    formats = [f for f in FORMATS if f in formats]
    skipped = []
    if "vector" in formats and dim > VECTOR_MAX_DIM:
        formats.remove("vector")
        skipped.append(f"vector: dim {dim} > {VECTOR_MAX_DIM} (Spark SparseVector indices are int32)")
    if "libsvm" in formats and dim > VECTOR_MAX_DIM:
        # Still written (other tools read it); Spark's libsvm source cannot build vectors this wide.
        skipped.append(f"libsvm written, but Spark cannot read it: dim {dim} > {VECTOR_MAX_DIM}")
    root = pathlib.Path(path)
    for fmt in formats:
        (root / fmt).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bounds = np.linspace(start_row, start_row + n_rows, max(1, n_files) + 1).round().astype(np.int64)
    nnz, positives, labels_all, margins_all = 0, 0.0, [], []
    for part, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        name = f"part-{part:05d}"
        writers: dict[str, object] = {}
        try:
            for c in iter_chunks(int(hi - lo), dim, seed, start_row=int(lo), chunk_rows=chunk_rows, spec=spec):
                nnz += len(c.indices)
                positives += float(c.labels.sum())
                labels_all.append(c.labels)
                margins_all.append(c.margins.astype(np.float32))
                for fmt in formats:
                    if fmt == "libsvm":
                        if fmt not in writers:
                            writers[fmt] = open(root / fmt / f"{name}.libsvm", "wb")
                        writers[fmt].write(libsvm_bytes(c.indptr, c.indices, c.values, c.labels))
                        continue
                    table = _vector_table(c, dim) if fmt == "vector" else _keys_table(c, dim)
                    if fmt not in writers:
                        writers[fmt] = pq.ParquetWriter(root / fmt / f"{name}.parquet", table.schema,
                                                        use_dictionary=_DICTIONARY_COLUMNS)
                    writers[fmt].write_table(table, row_group_size=chunk_rows)
        finally:
            for w in writers.values():
                w.close()
    seconds = time.perf_counter() - start
    labels = np.concatenate(labels_all) if labels_all else np.zeros(0)
    margins = np.concatenate(margins_all) if margins_all else np.zeros(0)
    info = {"rows": n_rows, "dim": dim, "seed": seed, "start_row": start_row, "nnz": nnz,
            "positive_rate": positives / max(n_rows, 1), "formats": formats, "notes": skipped,
            "n_files": n_files, "seconds": seconds,
            "oracle_auc": auc(labels, margins) if 0 < positives < n_rows else float("nan"),
            "spec": dataclasses.asdict(spec)}
    (root / "meta.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000, help="training rows")
    parser.add_argument("--test-rows", type=int, default=100_000, help="held-out rows (the next row range)")
    parser.add_argument("--dim-log2", type=int, default=22, help="dim = 2**DIM_LOG2 (18 to 40)")
    parser.add_argument("--seed", type=int, default=0, help="row stream seed")
    parser.add_argument("--truth-seed", type=int, default=0, help="ground-truth seed (keep it for comparable sets)")
    parser.add_argument("--out", required=True, help="output directory; gets train/ and test/")
    parser.add_argument("--formats", default="vector,keys", help=f"comma-separated subset of {FORMATS}")
    parser.add_argument("--libsvm", action="store_true", help="also write libsvm text")
    parser.add_argument("--files", type=int, default=4, help="part files per format and split")
    args = parser.parse_args(argv)
    if not 1 <= args.dim_log2 <= 62:
        parser.error("--dim-log2 must be in [1, 62]")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()] + (["libsvm"] if args.libsvm else [])
    spec = CTRSpec(truth_seed=args.truth_seed)
    dim = 2**args.dim_log2
    out = pathlib.Path(args.out)
    for split, n, start in (("train", args.rows, 0), ("test", args.test_rows, args.rows)):
        info = write_dataset(out / split, n, dim, args.seed, start_row=start, formats=formats,
                             n_files=args.files, spec=spec)
        print(f"{split}: {n:,} rows, {info['nnz'] / max(n, 1):.1f} nnz/row, CTR {info['positive_rate']:.3f}, "
              f"oracle AUC {info['oracle_auc']:.4f}, {info['formats']} in {info['seconds']:.2f} s "
              f"({n / info['seconds'] / 1e6:.2f} M rows/s) -> {out / split}")
        for note in info["notes"]:
            print(f"  note: {note}")


if __name__ == "__main__":
    main()
