"""Files of the synthetic CTR data (:mod:`bench.ctr_data`): VectorUDT Parquet, int64-key Parquet, libsvm.

Output formats (:func:`write_dataset`):

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

    python -m bench.ctr_files --rows 400000 --test-rows 100000 --dim-log2 22 \
        --out bench/out/ctr_d22 --libsvm
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.ctr_data import Chunk, CTRSpec, iter_chunks
from bench.metrics import auc

#: Largest ``dim`` a Spark ``SparseVector`` can have (its size and indices are int32).
VECTOR_MAX_DIM = 2**31 - 1
#: Footer key under which Spark stores (and looks for) the Catalyst schema of a Parquet file.
SPARK_SCHEMA_KEY = "org.apache.spark.sql.parquet.row.metadata"
FORMATS = ("vector", "keys", "libsvm")


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
            "n_files": n_files, "chunk_rows": chunk_rows, "seconds": seconds,
            "oracle_auc": auc(labels, margins) if 0 < positives < n_rows else float("nan"),
            "spec": dataclasses.asdict(spec)}
    (root / "meta.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def ensure_dataset(path: str | pathlib.Path, n_rows: int, dim: int, seed: int, *, start_row: int = 0,
                   formats: Sequence[str] = ("vector",), n_files: int = 4, chunk_rows: int = 65_536,
                   spec: CTRSpec = CTRSpec()) -> dict:
    """:func:`write_dataset`, unless ``path/meta.json`` says those rows are there already; the summary either way.

    The benches keep their data between runs: a second run with the same
    rows, ``dim``, seed, row range, part files and data spec reads the files
    the first one wrote.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     first = ensure_dataset(tmp, 100, 2**18, seed=0, n_files=2)
    ...     again = ensure_dataset(tmp, 100, 2**18, seed=0, n_files=2)
    ...     other = ensure_dataset(tmp, 100, 2**18, seed=1, n_files=2)
    >>> first == again, first == other
    (True, False)
    """
    meta_path = pathlib.Path(path) / "meta.json"
    want = {"rows": n_rows, "dim": dim, "seed": seed, "start_row": start_row, "n_files": n_files,
            "chunk_rows": chunk_rows, "spec": dataclasses.asdict(spec)}
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    have = set(meta.get("formats", [])) | {n.split(":")[0] for n in meta.get("notes", [])}
    if any(meta.get(k) != v for k, v in want.items()) or not set(formats) <= have:
        meta = write_dataset(path, n_rows, dim, seed, start_row=start_row, formats=formats, n_files=n_files,
                             chunk_rows=chunk_rows, spec=spec)
    return meta


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write a train and a test split (the next row range) of one stream under ``--out``."""
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
