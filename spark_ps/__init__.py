"""spark-ps: parameter-server sidecars for PySpark.

The public surface is imported lazily so that the sidecar process, which only
needs the server side, starts without importing PySpark.

Examples
--------
>>> import spark_ps
>>> sorted(spark_ps.__all__)[:2]
['PSClient', 'PSContext']
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "configure_spark_with_ps": "spark_ps.spark.session",
    "PSContext": "spark_ps.spark.context",
    "PSClient": "spark_ps.client.client",
    "ServerInfo": "spark_ps.spark.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'spark_ps' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
