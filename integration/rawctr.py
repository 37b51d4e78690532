"""Raw CTR events with a known truth, in Criteo's shape: integer counts and categorical strings, some missing.

Used by the raw-data parity test (our :class:`~spark_ps.ml.feature.FieldHasher`
against pyspark's ``FeatureHasher`` + MLlib) and by the jobs' tests and
examples, which read it as a headerless TSV (``label, i0..iK, c0..cM``), as
Criteo's files are laid out.

The truth: every categorical value has an effect drawn once, N(0, 0.7); the
value a row takes follows a Zipf-like law (a few common values, a long tail),
so most values are rare and a model must generalise through the common ones.
Integer fields add ``0.25 * log1p(count)`` each, the pair (c0, c1) has an
interaction effect of its own, and each field is missing (null) in 5% of the
rows. The label is a Bernoulli draw of the logistic of the sum, with the
intercept set for a click rate near 25%. Everything is vectorised numpy,
seeded, so a file is the same on every machine.

Examples
--------
>>> frame = events(1000, seed=1)
>>> list(frame.columns[:3]), len(frame), bool(0.1 < frame["label"].mean() < 0.4)
(['label', 'i0', 'i1'], 1000, True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Distinct values of each categorical field c0, c1, ...
CARDINALITIES = (20, 50, 200, 1000, 5000, 20000, 8, 300)
NUM_INTEGER_FIELDS = 3
MISSING_RATE = 0.05
INTERCEPT = -1.6


def integer_fields() -> list[str]:
    return [f"i{k}" for k in range(NUM_INTEGER_FIELDS)]


def categorical_fields() -> list[str]:
    return [f"c{k}" for k in range(len(CARDINALITIES))]


def schema_ddl() -> str:
    """The TSV's schema as Spark DDL: ``label double, i0 int, ..., c0 string, ...``."""
    return ", ".join(["label double", *(f"{f} int" for f in integer_fields()),
                      *(f"{f} string" for f in categorical_fields())])


def events(n: int, seed: int = 0, truth_seed: int = 2026) -> pd.DataFrame:
    """``n`` rows: ``label``, integer fields (int or None) and categorical fields (str or None).

    ``truth_seed`` fixes the effects, so a train and a test set drawn with two
    ``seed`` values share one truth.
    """
    truth = np.random.default_rng(truth_seed)
    effects = [truth.normal(0, 0.7, size) for size in CARDINALITIES]
    cross = truth.normal(0, 0.7, (CARDINALITIES[0], CARDINALITIES[1]))
    rng = np.random.default_rng(seed)
    margin = np.full(n, INTERCEPT)
    columns: dict[str, object] = {}
    for name in integer_fields():
        counts = np.floor(rng.lognormal(1.5, 1.2, n)).astype(np.int64)
        missing = rng.random(n) < MISSING_RATE
        margin += np.where(missing, 0.0, 0.25 * np.log1p(counts) - 0.4)
        ints = counts.astype(object)
        ints[missing] = None  # None, not pandas' NA: Spark would read NA as a NaN double
        columns[name] = ints
    picks = []
    for k, (name, size) in enumerate(zip(categorical_fields(), CARDINALITIES)):
        # Zipf-like: value v has weight 1 / (v + 1)^1.1.
        weights = 1.0 / np.arange(1, size + 1) ** 1.1
        value = rng.choice(size, n, p=weights / weights.sum())
        missing = rng.random(n) < MISSING_RATE
        margin += np.where(missing, 0.0, effects[k][value])
        picks.append((value, missing))
        labels = np.char.add(f"{name}_", value.astype(str)).astype(object)
        labels[missing] = None
        columns[name] = labels
    (v0, m0), (v1, m1) = picks[0], picks[1]
    margin += np.where(m0 | m1, 0.0, cross[v0, v1])
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-margin))).astype(np.float64)
    return pd.DataFrame({"label": label, **columns})


def write_tsv(path: str, n: int, seed: int = 0) -> str:
    """Write ``n`` events as a headerless TSV (empty field = missing), Criteo's layout; returns ``path``."""
    events(n, seed).to_csv(path, sep="\t", header=False, index=False, na_rep="")
    return path


if __name__ == "__main__":
    import sys

    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: python integration/rawctr.py OUT.tsv ROWS [SEED]")
    print(write_tsv(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 0))
