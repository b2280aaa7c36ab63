"""Type stub of the compiled cffi module built from build.py (scheduler.h)."""

from typing import Any

class _Lib:
    SCHED_MAX_QUANTITY: int
    SCHED_MIN_PRIORITY: int
    SCHED_MAX_PRIORITY: int
    SCHED_MAX_TIME_MS: int
    SCHED_NO_AGING: int
    SCHED_NO_LIMIT: int
    SCHED_POLICY_FIFO: int
    SCHED_POLICY_BINPACK: int
    SCHED_POLICY_SPREAD: int
    SCHED_NODE_CORDONED: int
    SCHED_NODE_BREAKER_OPEN: int
    SCHED_OUTCOME_ASSIGNED: int
    SCHED_OUTCOME_WAITS: int
    SCHED_OUTCOME_NEVER_FITS: int
    SCHED_REASON_NONE: int
    SCHED_REASON_CAPACITY: int
    SCHED_REASON_LABELS: int
    SCHED_REASON_TENANT_LIMIT: int
    SCHED_REASON_NODE_UNAVAILABLE: int
    SCHED_REASON_QUEUE_BLOCKED: int
    SCHED_REASON_RESERVED: int
    SCHED_REASON_NO_NODES: int
    SCHED_REASON_CPU: int
    SCHED_REASON_MEMORY: int
    SCHED_REASON_CPU_AND_MEMORY: int
    SCHED_OK: int
    SCHED_ERR_NO_MEMORY: int
    SCHED_ERR_OPTIONS: int
    SCHED_ERR_NODE: int
    SCHED_ERR_LABEL_CLASS: int
    SCHED_ERR_TENANT: int
    SCHED_ERR_JOB: int
    SCHED_ERR_RESULT: int
    SCHED_ERR_BUSY: int
    SCHED_ONE_NOT_ASSIGNED: int

    def sched_cluster_new(self, nodes: Any, cluster: Any, error_index: Any, /) -> int: ...
    def sched_cluster_free(self, cluster: Any, /) -> None: ...
    def sched_place(self, cluster: Any, classes: Any, tenants: Any, jobs: Any, options: Any,
                    result: Any, /) -> int: ...
    def sched_place_packed(self, cluster: Any, packed: bytes, size: int, options: Any,
                           result: Any, /) -> int: ...
    def sched_place_one(self, cluster: Any, job: bytes, size: int, policy: int,
                        tenant_at_limit: int, /) -> int: ...

class _FFI:
    NULL: Any

    def new(self, cdecl: str, init: Any = ..., /) -> Any: ...
    def unpack(self, cdata: Any, length: int, /) -> list[int]: ...
    def gc(self, cdata: Any, destructor: Any, /) -> Any: ...
    def buffer(self, cdata: Any, size: int = ..., /) -> Any: ...
    def memmove(self, dest: Any, src: Any, n: int, /) -> None: ...
    def from_buffer(self, cdecl: str, python_buffer: Any, /) -> Any: ...

ffi: _FFI
lib: _Lib
