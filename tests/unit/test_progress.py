"""The CLI's progress reporter: plain lines off a terminal, a rich bar on one."""

from __future__ import annotations

import io

from ledger.cli.progress import progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal() -> None:
    """Off a terminal the reporter writes a line with counts and rate, and one at the end."""
    out = io.StringIO()
    with progress("import", 3, unit="orders", out=out, tty=io.StringIO()) as bar:
        for _ in range(3):
            bar.advance()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("import: 1/3 orders (")
    assert lines[-1].startswith("import: 3/3 orders (")
    assert lines[-1].endswith("orders/s)")


def test_unknown_total_is_updated_with_positions() -> None:
    """A reporter without a total (a rebuild) takes positions and the head as they come."""
    out = io.StringIO()
    with progress("rebuild all_sales", None, unit="events", out=out) as bar:
        bar.update(50, 100)
        bar.update(100, 100)
    assert out.getvalue().splitlines()[-1].startswith("rebuild all_sales: 100/100 events")


def test_rich_bar_on_a_terminal() -> None:
    """On a terminal a rich bar is drawn there, and nothing goes to the plain stream."""
    out, tty = io.StringIO(), FakeTerminal()
    with progress("ship-file", 2, unit="rows", out=out, tty=tty) as bar:
        bar.advance(2)
    assert out.getvalue() == ""
    assert "ship-file" in tty.getvalue()
    assert "2/2" in tty.getvalue()
