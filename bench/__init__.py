"""Benchmarks of the contacts service: ``python -m bench <name> [options]`` (``make bench``)."""
