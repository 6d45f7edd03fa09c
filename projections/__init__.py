"""Projectors: events in, read tables out, tracking position committed with the rows."""
