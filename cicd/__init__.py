"""cicd: a self-hosted CI/CD server in one process.

Subpackages, one per bounded context:

- ``pipeline``: the pipeline file format, its model and parser (pure).
- ``events``: the event types every context appends to the log (pure).
- ``orchestration``: runs and jobs, their state machines and the run driver.
- ``scheduling``: placement of runnable jobs on nodes.
- ``workers``: providers that create and remove workers (Docker, local processes).
- ``execution``: steps inside a worker, their output, timeouts and signals.
- ``storage``: the SQLite event log, projections and step logs.
- ``telemetry``, ``security``, ``artifacts``, ``console``: later capabilities.
- ``cli``: the ``cicd`` command.
"""

__version__ = "0.1.0"
