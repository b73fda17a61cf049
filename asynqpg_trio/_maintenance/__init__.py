"""Maintenance: leader election (the elector) and the leader-only janitor and cleaner."""
