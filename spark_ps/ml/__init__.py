"""Sparse models trained through the parameter server.

Kept free of imports on purpose: training tasks import the submodules they
need (:mod:`spark_ps.ml.csr`, :mod:`spark_ps.ml.kernels`) without paying for
PySpark's ML package.
"""


def __getattr__(name: str):
    """``spark_ps.ml.history`` and ``spark_ps.ml.Lineage`` (:mod:`spark_ps.ml.versions`), imported on first use.

    Examples
    --------
    >>> import spark_ps.ml
    >>> spark_ps.ml.Lineage(input_path="data/in").input_path
    'data/in'
    """
    if name in ("history", "Lineage"):
        from spark_ps.ml import versions

        return getattr(versions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
