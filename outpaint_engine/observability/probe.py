"""``python -m outpaint_engine.observability.probe [/healthz | /readyz]``: the container healthcheck.

Asks the health endpoint at ``$OUTPAINT_METRICS_HOST:$OUTPAINT_METRICS_PORT`` (loopback when the
server listens on every address; the image has no curl); exit status 0 when it answers 200, 1
otherwise. Without a port the endpoints are off, and the probe says so and passes (the service is
not checked rather than marked unhealthy forever).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 10.0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "/healthz"
    port = os.environ.get("OUTPAINT_METRICS_PORT", "").strip()
    if not port:
        print("health endpoints are off (OUTPAINT_METRICS_PORT is not set)")
        return 0
    host = os.environ.get("OUTPAINT_METRICS_HOST", "").strip()
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            print(response.read().decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as error:
        print(f"{url}: {error.code} {error.read().decode(errors='replace')}")
    except (OSError, ValueError) as error:
        print(f"{url}: {error}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
