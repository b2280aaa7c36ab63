"""The server process: the composition root that starts every context in order."""
