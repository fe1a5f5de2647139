"""The HTML pages chargen hands out (the server's page, the inspect page): read, and locked to their own script."""

from __future__ import annotations

import base64
import hashlib
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
