"""Sparse models trained through the parameter server.

Kept free of imports on purpose: training tasks import the submodules they
need (:mod:`spark_ps.ml.csr`, :mod:`spark_ps.ml.kernels`) without paying for
PySpark's ML package.
"""
