"""Container health check: `python -m scripts.healthcheck` exits 0 when the server on this machine
answers GET /health/ready with 200 (every model loaded), else 1 with the reason on stderr.

The Dockerfile's HEALTHCHECK and docker-compose.yml run it; it needs nothing beyond the standard
library, and reads PORT (default 8000) and HEALTHCHECK_URL (to check another address).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("PORT", "8000")
    url = os.environ.get("HEALTHCHECK_URL") or f"http://127.0.0.1:{port}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        print(f"not ready: {url} answered {e.code}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:
        print(f"not ready: {url}: {getattr(e, 'reason', e)}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
