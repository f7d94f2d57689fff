"""A stand-in CVAT 2.80 server for the tests, spoken to by the real, unmodified cvat-sdk.

No CVAT server can run on our machines (it needs a Docker engine), and the CVAT project
publishes no mock, so this is a small in-memory implementation of the part of CVAT's
REST API that the project uses, written from ../shared/docs/cvat-api.md and the SDK's
own generated models (tests/test_cvat_server.py validates its responses against them).
It also plays the annotator (``annotate``, ``tag``, ``complete_jobs``) and injects the
faults users meet (``inject`` at a chosen request, ``inject_randomly`` anywhere); where
it behaves like CVAT is listed in ``server.py``.
"""

from .server import CvatStandIn

__all__ = ["CvatStandIn"]
