"""What a task (or the driver) uses to talk to the shards: Push/Pull, routing, group operations.

Runs in Spark's Python workers and on the driver; imports no pyspark, so a
plain Python process can use it too.
"""

from spark_ps.client.client import PSClient

__all__ = ["PSClient"]
