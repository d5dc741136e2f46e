"""Ray's CLI (``python tests/ray_loopback.py start ...``), and a driver (:func:`keep_loopback`), with this
machine's address taken to be 127.0.0.1.

Ray 2.60 maps a loopback ``--node-ip-address`` to the machine's routable address whenever multi-node
clusters are on (``ray._private.services.resolve_ip_for_localhost``: 127.0.0.1 becomes, say, 192.0.2.2),
and refuses a second node when they are off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). Tests talk only to
127.0.0.1, so here the address Ray would look up for this machine is the loopback one; every Ray process
of the test's cluster is then started with, and binds, 127.0.0.1.
"""

from __future__ import annotations

import sys


def keep_loopback() -> None:
    """In this process, Ray takes 127.0.0.1 for this machine's address (before ``ray.init``)."""
    import ray._private.services as services

    services.node_ip_address_from_perspective = lambda address=None: "127.0.0.1"


if __name__ == "__main__":
    keep_loopback()
    from ray.scripts.scripts import main

    sys.argv[0] = "ray"
    sys.exit(main())
