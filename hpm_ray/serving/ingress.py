"""Direct ingress: each ingress replica of the app also answers HTTP on its own port, with no proxy hop.

Through Serve's HTTP proxy every request costs a second process's CPU (about 4 ms per 100-row request on 2
cores, more than a whole plain uvicorn server spends). Serve's direct-ingress mode keeps the proxy on the
configured host and port and gives each ingress replica (the A/B router) a port of its own in
30000-31000 (``RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT`` / ``..._MAX_HTTP_PORT``), bound to the same host.
The same app answers on both, token checks included. With it on, Serve runs its proxy on the head node only.

Serve reads the flag when its controller and replicas start: it must be in the environment before Ray starts
(``hpm-ray serve --direct-ingress`` puts it in its own process's environment, which a local instance it starts
inherits; a cluster needs it on ``ray start``).
"""

from __future__ import annotations

import time

ENV = "RAY_SERVE_ENABLE_DIRECT_INGRESS"
_REPLICA = "SERVE_REPLICA::"


def replica_urls(app_name: str, host: str, timeout: float = 5.0) -> list[str]:
    """Base URLs (route prefix included) of the app's ingress replicas; empty if direct ingress is off.

    Serve 2.60 publishes the replica ports only as "target groups" for load balancers
    (:func:`hpm_ray._compat.serve_target_groups`); a replica lists its port once its HTTP server is up, hence
    the wait.
    """
    import ray

    from hpm_ray._compat import serve_target_groups

    here = ray.util.get_node_ip_address()

    def address(ip: str) -> str:  # a replica binds the configured host on its own node
        return host if ip == here and host != "0.0.0.0" else ip

    deadline = time.monotonic() + timeout
    while True:
        groups = serve_target_groups(app_name)
        urls = [
            f"http://{address(t.ip)}:{t.port}{g.route_prefix.rstrip('/')}"
            for g in groups
            if g.protocol == "HTTP"
            for t in g.targets
            if t.name.startswith(_REPLICA)
        ]
        if urls or time.monotonic() >= deadline:
            return sorted(urls)
        time.sleep(0.2)
