"""``make demo``: the first order → report loop in five minutes (issue 24; README.md)."""
