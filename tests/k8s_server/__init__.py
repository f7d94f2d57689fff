"""A stand-in Kubernetes API server for the Jobs of batch/v1, spoken to by the real, unmodified ``kubernetes`` client.

No cluster can run on our machines, so this is a small in-memory implementation of the part
of the REST API the ``kubernetes`` provider uses (create, read status, delete Jobs; the
batch/v1 discovery document its validation reads), with bearer-token authentication.
Requests and responses are checked against the client's own models (``check_model``).
It also plays the Job controller (``finish``).
"""

from .server import KubernetesStandIn, check_model

__all__ = ["KubernetesStandIn", "check_model"]
