"""Wiring for the contacts service: settings, embedded servers, HTTP app and CLI."""
