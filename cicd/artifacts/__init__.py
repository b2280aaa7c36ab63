"""Artifacts: what a run leaves besides its events, and how long it is kept.

A run leaves step logs (in the database, apart from the event rows) and, for a
git source, its workspace on disk. The retention policy removes both for old
runs and records each removal as an event; the run records stay.
"""
