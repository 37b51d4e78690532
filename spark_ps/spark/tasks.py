"""Spark's tasks as a fit sees them: how many can run at once, and what a failed job says about them.

:func:`task_slots` is the widest a barrier stage may be, and :func:`barrier_input`
gives it input partitions it can run on.

A task that died and a task that raised reach a PySpark driver the same way: a ``Py4JJavaError``
("An error occurred while calling o151.collectToPython") whose text holds a
Java stack trace, and inside it, when the task raised, the Python traceback
of the ``PythonException``. A user who passed a label of -1 should see our
``ValueError`` ("label column 'label' row 0: label -1.0 is not 0 or 1"), not
that wrapper: :func:`task_error` rebuilds it. A task whose process died
raised nothing: :func:`task_died` tells the two apart, so a fit can run again
only what may succeed on a second try.
"""

from __future__ import annotations

import builtins
import re

from spark_ps import errors

#: The first line of a Python traceback's exception: ``ValueError: ...`` or ``spark_ps.errors.X: ...``.
_RAISED = re.compile(r"^((?:spark_ps\.errors\.)?[A-Za-z_]\w*(?:Error|Exception)): (.*)$", re.MULTILINE)
_TRACEBACK = "Traceback (most recent call last):"


def task_died(exc: BaseException) -> bool:
    """Whether ``exc`` says a stage failed because a task's process died, not because the task raised.

    A task that raised comes back as pyspark's ``PythonException`` (our code
    refused the input, say): running it again would fail again. A Python
    worker killed, or an executor lost, fails the job with a Java
    ``SparkException`` ("Job aborted due to stage failure").

    Examples
    --------
    >>> task_died(ValueError("label column 'label' row 3: label 2.0 is not 0 or 1"))
    False
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors.exceptions.captured import PythonException

    if isinstance(exc, PythonException) or not isinstance(exc, Py4JJavaError):
        return False
    text = str(exc)
    return "Job aborted due to stage failure" in text and "PythonException" not in text


def task_error(exc: BaseException) -> BaseException | None:
    """The exception a task raised, rebuilt from the Python traceback in ``exc``'s text; None if there is none.

    Only builtin exception types and those of :mod:`spark_ps.errors` are
    rebuilt, with the first line of their message (the line that names the
    column, the row and the value); anything else stays Spark's error.

    Examples
    --------
    >>> wrapped = RuntimeError("An error occurred while calling o151.collectToPython.\\n"
    ...     "org.apache.spark.api.python.PythonException: Traceback (most recent call last):\\n"
    ...     '  File "training.py", line 12, in train\\n'
    ...     "ValueError: label column 'label' row 0: label -1.0 is not 0 or 1\\n"
    ...     "\\tat org.apache.spark.api.python.BasePythonRunner...")
    >>> task_error(wrapped)
    ValueError("label column 'label' row 0: label -1.0 is not 0 or 1")
    >>> type(task_error(RuntimeError(f"{_TRACEBACK}\\nspark_ps.errors.MissingColumnError: column 'x' not found")))
    <class 'spark_ps.errors.MissingColumnError'>
    >>> task_error(RuntimeError("Job aborted due to stage failure: executor lost")) is None
    True
    """
    text = str(exc)
    at = text.rfind(_TRACEBACK)
    if at < 0:
        return None
    match = _RAISED.search(text, at)
    if match is None:
        return None
    name, message = match.groups()
    cls = getattr(errors, name.rsplit(".", 1)[-1], None) if name.startswith("spark_ps.errors.") \
        else getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        return None
    try:
        return cls(message)
    except TypeError:  # an exception type whose constructor wants more than a message: Spark's error stands
        return None


def task_slots(spark) -> int:
    """Tasks the cluster can run at once: the most a barrier stage may ask for.

    Not ``defaultParallelism``, which is only a partitioning hint (and a
    setting): a barrier stage wider than the slots waits forever for them.

    Examples
    --------
    >>> task_slots(spark)             # local[2]: two task threads in the driver's executor
    2
    """
    jsc = spark.sparkContext._jsc.sc()
    profile = jsc.resourceProfileManager().defaultResourceProfile()
    return max(1, int(jsc.maxNumConcurrentTasks(profile)))


def _stage_partitions(frame) -> set[int]:
    """The partition counts of the RDDs in the last stage of ``frame``'s plan (followed through narrow dependencies).

    A barrier stage runs only if they are all the same (Spark's
    ``BarrierJobUnsupportedRDDChainException``: a ``union``, a ``coalesce``
    or a pruned partition ancestor in the stage fails the job).
    """
    rdd = frame._jdf.queryExecution().toRdd()
    shuffle = frame.sparkSession.sparkContext._jvm.org.apache.spark.ShuffleDependency
    counts, seen, todo = set(), set(), [rdd]
    while todo:
        current = todo.pop()
        if current.id() in seen:
            continue
        seen.add(current.id())
        counts.add(int(current.getNumPartitions()))
        dependencies = current.dependencies()
        for i in range(dependencies.size()):
            dependency = dependencies.apply(i)
            if not shuffle._java_lang_class.isInstance(dependency):
                todo.append(dependency.rdd())
    return counts


def barrier_input(frame, workers: int, fewer: bool = False):
    """``(frame, partitions)``: ``frame`` in partitions a barrier stage of at most ``workers`` tasks can run on.

    The stage gets ``workers`` partitions, or with ``fewer`` as many as
    ``frame`` has, between 1 and ``workers`` (one task per partition, no
    shuffle for a small input). ``frame`` is kept as it is when it has that
    many and nothing in its last stage has a different number; else it is
    repartitioned to that many (a shuffle, paid once: a barrier stage cannot
    sit behind a ``union`` or a ``coalesce``, see :func:`_stage_partitions`).

    Examples
    --------
    >>> one = spark.range(10, numPartitions=1)
    >>> [barrier_input(f, 2)[1] for f in (spark.range(10, numPartitions=2), one.union(one), one)]
    [2, 2, 2]
    >>> barrier_input(one, 2, fewer=True)[1], barrier_input(spark.range(10).coalesce(1), 2, fewer=True)[1]
    (1, 2)
    >>> empty = spark.sparkContext.emptyRDD().toDF("id long")         # no partition: one empty task
    >>> empty.rdd.getNumPartitions(), barrier_input(empty, 2, fewer=True)[1]
    (0, 1)
    >>> barrier_input(one.union(one), 2)[0].mapInArrow(lambda b: b, "id long", barrier=True).count()
    20
    """
    counts = _stage_partitions(frame)
    partitions = max(counts)
    target = min(max(partitions, 1), workers) if fewer else workers
    if counts == {target}:
        return frame, target
    return frame.repartition(target), target
