"""Constants the browser tests and their fixtures share."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UPS_TRACKING = "1Z999AA10123456784"
INJECTION = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>Eve'
