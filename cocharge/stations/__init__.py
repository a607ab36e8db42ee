"""Stations, members and the session lifecycle, behind a version-neutral vocabulary."""
