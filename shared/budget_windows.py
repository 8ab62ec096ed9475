"""Budget windows, pure: the UTC day or calendar month a budget charges, named as its counter's key ends.

The sidecar charges a budget's counter under the current window's name (`.../usd_day/2026-03-31`,
`.../usd_month/2026-03`), so a new window starts at zero; the controller reads spend back by the
same names. One function for both, so they never disagree about where a day ends.
"""

from __future__ import annotations

import calendar
import datetime as dt


def budget_window(measure: str, now_s: float) -> tuple[str, float]:
    """The UTC window a budget (`usd_day`, else `usd_month`) charges at `now_s`: its name and its end, in seconds."""
    now = dt.datetime.fromtimestamp(now_s, dt.UTC)
    if measure == "usd_day":
        start = dt.datetime(now.year, now.month, now.day, tzinfo=dt.UTC)
        return now.strftime("%Y-%m-%d"), (start + dt.timedelta(days=1)).timestamp()
    days = calendar.monthrange(now.year, now.month)[1]
    start = dt.datetime(now.year, now.month, 1, tzinfo=dt.UTC)
    return now.strftime("%Y-%m"), (start + dt.timedelta(days=days)).timestamp()
