"""The report page's cache: rows recomputed only once they are older than the refresh."""

from deeptrust.console.report_page import CachedRows


def test_rows_are_reused_until_they_are_older_than_the_refresh():
    now = [100.0]
    computed = []

    def compute():
        computed.append(now[0])
        return [("flag precision", f"computed at {now[0]:.0f}")]

    cached = CachedRows(compute, lambda: now[0], refresh_s=60)
    assert cached() == ([("flag precision", "computed at 100")], 0.0)
    now[0] = 159.0
    assert cached() == ([("flag precision", "computed at 100")], 59.0)
    now[0] = 160.0
    assert cached() == ([("flag precision", "computed at 160")], 0.0)
    assert computed == [100.0, 160.0]
