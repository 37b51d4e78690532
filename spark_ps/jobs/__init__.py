"""The batch jobs a team schedules: train, predict and evaluate from one TOML file (``jobs/*.py`` run them).

:mod:`~spark_ps.jobs.config` reads and validates the settings,
:mod:`~spark_ps.jobs.inputs` reads the input and builds the features,
:mod:`~spark_ps.jobs.evaluation` computes held-out metrics and the report,
and :mod:`~spark_ps.jobs.run` runs one job.
"""
