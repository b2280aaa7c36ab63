"""The browser console's server side: its WebSocket protocol and the reads behind it.

:mod:`cicd.console.protocol` and :mod:`cicd.console.ring` are pure (no Trio, no
SQLite): message types, frame encoding, the shared tail of a step's output. The
route in :mod:`cicd.api.console` serves the static files of ``web/`` and runs one
:class:`~cicd.console.session.ConsoleSession` per WebSocket. ``docs/console.md``
describes the protocol for client authors.
"""
