"""Before submitting an online run: does W&B accept the API key? (plain HTTP, no wandb import)

W&B's own check: POST {base}/graphql, basic auth "api:<key>", `viewer` non-null for a key it
accepts. A rejected key stops the launch (exit 2) while the user is still at the terminal; a
service this machine cannot reach is only noted: the workers try, and fall back to offline.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from enum import StrEnum

DEFAULT_BASE_URL = "https://api.wandb.ai"
CHECK_TIMEOUT_S = 10.0
QUERY = {"query": "query Viewer { viewer { id } }", "operationName": "Viewer"}


class KeyCheck(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNREACHABLE = "unreachable"


def check_key(key: str, base_url: str | None = None,
              timeout_s: float = CHECK_TIMEOUT_S) -> tuple[KeyCheck, str]:
    """What W&B says of `key`, and a line saying why."""
    base = (base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    auth = base64.b64encode(f"api:{key}".encode()).decode()
    request = urllib.request.Request(
        f"{base}/graphql", data=json.dumps(QUERY).encode(), method="POST",
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return KeyCheck.REJECTED, f"{base} answered HTTP {err.code}"
        return KeyCheck.UNREACHABLE, f"{base} answered HTTP {err.code}"
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
        return KeyCheck.UNREACHABLE, f"{base}: {getattr(err, 'reason', err)}"
    viewer = (body.get("data") or {}).get("viewer") if isinstance(body, dict) else None
    if viewer:
        return KeyCheck.ACCEPTED, f"{base} accepted the key"
    return KeyCheck.REJECTED, f"{base} knows no account for this key"
