"""What both ends of a connection agree on: the frame format, the handshake, the table spec.

Runs in the sidecar and in every client process; imports only
:mod:`spark_ps.errors` and :mod:`spark_ps.native`.
"""
