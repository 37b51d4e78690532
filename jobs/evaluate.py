"""spark-submit entry point of the evaluate job: ``jobs/evaluate.py --config conf/FILE.toml [--section.key=value ...]``.

The job itself is :func:`spark_ps.jobs.run.evaluate`; settings and flags are
described in :mod:`spark_ps.jobs.config` and the README ("Batch jobs").
"""

from spark_ps.jobs.run import main

if __name__ == "__main__":
    raise SystemExit(main("evaluate"))
