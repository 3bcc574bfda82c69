"""Constants the browser tests and their fixtures share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ledger.aggregates.values import Context

CTX = Context(actor="browser-test")
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
AXE = Path(__file__).parent / "vendor" / "axe.min.js"


def look(page: Any, tmp_path: Path, name: str) -> None:
    """What every page must pass, checked on the page as it is now: no sideways scroll of the page (at phone
    width too), no serious or critical axe-core finding; a screenshot saved under the test's directory."""
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("window.innerWidth")
    assert width <= viewport, f"{name}: the page scrolls sideways ({width} px in {viewport} px)"
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    found = page.evaluate(
        "async () => (await axe.run(document)).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ': ' + v.help + ' ' + v.nodes.map(n => n.target.join(' ')).join(', '))"
    )
    assert not found, f"{name}: axe-core found {found}"
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
