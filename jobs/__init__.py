"""The spark-submit entry points (``spark-submit jobs/<name>.py``), also importable as ``jobs.<name>``.

A package so that pytest imports each job under that name when it runs the
docstring examples (the root ``conftest.py``): an example that ships one of
the job's functions to Spark's Python workers has them unpickle it from
``jobs.<name>``, importable from the repository root; without this file
pytest would import ``jobs/stream_train.py`` as a top-level ``stream_train``,
which the workers cannot find.
"""
