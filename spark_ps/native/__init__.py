"""Native (numba) kernels that both ends use: key hashing, the key index, prefetching, factorisation.

Imports nothing of spark-ps but :mod:`spark_ps.errors`, so that the sidecar
(:mod:`spark_ps.server`) and the tasks (:mod:`spark_ps.client`,
:mod:`spark_ps.ml`) share them without importing each other.
"""
