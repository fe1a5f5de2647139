"""The HTML pages chargen hands out (the server's page, the inspect and export pages): read, filled with their data,
and locked to their own script."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from importlib.resources import files

POLICY = "/*SCRIPT-HASH*/"  # where a template's Content-Security-Policy names the one script it may run


def template(package: str) -> str:
    """The page template beside a wing's code: `package`'s page.html."""
    return (files(package) / "page.html").read_text(encoding="utf-8")


def script_source(page: str) -> str:
    """The policy source that runs the page's one inline script and nothing else (no handler, no other script)."""
    script = re.search(r"<script>(.*)</script>", page, re.S).group(1)
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def locked(page: str) -> str:
    """`page` with its policy filled in: whatever data was inlined, only the script as written runs."""
    return page.replace(POLICY, script_source(page))


def filled(package: str, data) -> str:
    """`package`'s page with `data` inlined as JSON where its template holds /*DATA*/null, locked to its script.

    Every "<" in the data is written as \\u003c, so no text or name can close the script or open a comment in it, and
    the page's policy runs its one script by hash alone: a handler or a script smuggled in by the data never runs.
    """
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return locked(template(package).replace("/*DATA*/null", payload))
