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
AUC of about 0.8 (see :mod:`bench.numpy_ftrl`).

All randomness is counter-based (hash of seed, row number, field), so row ``r``
of a stream is the same whatever the chunking, and train / test are disjoint
row ranges of one stream (``start_row``).

The rows are written to files (VectorUDT Parquet, int64-key Parquet, libsvm)
by :mod:`bench.ctr_files`.

Examples
--------
>>> indptr, indices, values, labels = generate(1000, 2**22, seed=1)
>>> indptr.shape, labels.shape
((1001,), (1000,))
>>> bool(indices.max() < 2**22), bool((values == 1.0).all())
(True, True)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence

import numpy as np

# SplitMix64, the same finaliser (and stream increment) spark-ps hashes keys with. It is a
# bijection on uint64 with good avalanche; the data depends on it, so it must not change.
from spark_ps.native.hashing import GOLDEN, mix64_array

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
        """Vocabulary size of each field, log-spaced from ``vocab_min`` to ``vocab_max``."""
        return np.round(np.geomspace(self.vocab_min, self.vocab_max, self.n_fields)).astype(np.int64)

    def zipf_exponents(self) -> np.ndarray:
        """Zipf exponent of each field, from ``zipf_max`` (smallest vocabulary) down to ``zipf_min``."""
        return np.linspace(self.zipf_max, self.zipf_min, self.n_fields)


def _stream(seed: int, salt: np.uint64, rows: np.ndarray, cols: np.ndarray | int) -> np.ndarray:
    """Counter-based uint64 random numbers for (seed, salt, row, column)."""
    s = mix64_array(np.array([np.uint64(seed % 2**64) ^ salt], np.uint64))[0]
    key = rows.astype(np.uint64)[:, None] * GOLDEN + np.asarray(cols, np.uint64)
    return mix64_array(mix64_array(key ^ s) + s)


def _uniform(h: np.ndarray) -> np.ndarray:
    """Top 53 bits of a hash as a double in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _pair_hash(field: np.ndarray, value: np.ndarray, salt: np.uint64, truth_seed: int) -> np.ndarray:
    # field < 2**16 and value < 2**48 pack into one word injectively; mix64 is a bijection,
    # so distinct pairs never share a 64-bit hash (only the final `% dim` can collide).
    packed = (field.astype(np.uint64) << np.uint64(48)) | value.astype(np.uint64)
    seed = mix64_array(np.array([np.uint64(truth_seed % 2**64) ^ salt], np.uint64))[0]
    return mix64_array(packed ^ seed)


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
