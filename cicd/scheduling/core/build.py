"""cffi build script of the C scheduling core (API mode): defines ``ffibuilder``.

``setup.py`` names it in ``cffi_modules``, so ``pip install .``, ``pip install -e .``
and ``python3 setup.py build_ext --inplace`` compile ``cicd.scheduling.core._native``.
Running this file compiles the module under ``build/cffi/cicd/scheduling/core/``
(``--tmpdir DIR`` to use another directory than ``build/cffi``), together with the
generated C source and object files.

Environment:
    CICD_SCHEDULER_SANITIZE=1  compile with AddressSanitizer and UndefinedBehaviorSanitizer
                               (see sanitize.sh, which also sets up the process to load them)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SANITIZE_VARIABLE = "CICD_SCHEDULER_SANITIZE"

# The declarations of scheduler.h that Python uses. In API mode cffi reads the
# numeric constants (`...`) from the real header when it compiles.
CDEF = """
#define SCHED_MAX_QUANTITY ...
#define SCHED_MIN_PRIORITY ...
#define SCHED_MAX_PRIORITY ...
#define SCHED_MAX_TIME_MS ...
#define SCHED_NO_AGING ...
#define SCHED_NO_LIMIT ...
#define SCHED_POLICY_FIFO ...
#define SCHED_POLICY_BINPACK ...
#define SCHED_POLICY_SPREAD ...
#define SCHED_NODE_CORDONED ...
#define SCHED_NODE_BREAKER_OPEN ...
#define SCHED_OUTCOME_ASSIGNED ...
#define SCHED_OUTCOME_WAITS ...
#define SCHED_OUTCOME_NEVER_FITS ...
#define SCHED_REASON_NONE ...
#define SCHED_REASON_CAPACITY ...
#define SCHED_REASON_LABELS ...
#define SCHED_REASON_TENANT_LIMIT ...
#define SCHED_REASON_NODE_UNAVAILABLE ...
#define SCHED_REASON_QUEUE_BLOCKED ...
#define SCHED_REASON_RESERVED ...
#define SCHED_REASON_NO_NODES ...
#define SCHED_REASON_CPU ...
#define SCHED_REASON_MEMORY ...
#define SCHED_REASON_CPU_AND_MEMORY ...
#define SCHED_OK ...
#define SCHED_ERR_NO_MEMORY ...
#define SCHED_ERR_OPTIONS ...
#define SCHED_ERR_NODE ...
#define SCHED_ERR_LABEL_CLASS ...
#define SCHED_ERR_TENANT ...
#define SCHED_ERR_JOB ...
#define SCHED_ERR_RESULT ...
#define SCHED_ERR_BUSY ...
#define SCHED_ONE_NOT_ASSIGNED ...

struct sched_nodes {
    int32_t count;
    const int64_t *cpu_capacity;
    const int64_t *memory_capacity;
    const int64_t *cpu_reserved;
    const int64_t *memory_reserved;
    const int64_t *cpu_allocated;
    const int64_t *memory_allocated;
    const uint8_t *flags;
    int32_t label_count;
    const int32_t *label_offsets;
    const int32_t *label_ids;
};

struct sched_label_classes {
    int32_t count;
    const int32_t *offsets;
    const int32_t *label_ids;
};

struct sched_tenants {
    int32_t count;
    const int64_t *running_jobs;
    const int64_t *cpu_allocated;
    const int64_t *memory_allocated;
    const int64_t *running_limit;
};

struct sched_jobs {
    int32_t count;
    const int64_t *cpu;
    const int64_t *memory;
    const int64_t *priority;
    const int64_t *runnable_at_ms;
    const int32_t *tenant;
    const int32_t *label_class;
};

struct sched_options {
    int32_t policy;
    int32_t backfill;
    int64_t now_ms;
    int64_t aging_interval_ms;
};

struct sched_result {
    int32_t *node;
    uint8_t *outcome;
    uint8_t *reason;
    int32_t *position;
    int64_t *latency_ns;
    int32_t *assigned;
    int32_t assigned_count;
    int32_t error_index;
};

struct sched_cluster;

int sched_cluster_new(const struct sched_nodes *nodes, struct sched_cluster **cluster,
                      int32_t *error_index);

void sched_cluster_free(struct sched_cluster *cluster);

int sched_place(struct sched_cluster *cluster,
                const struct sched_label_classes *classes,
                const struct sched_tenants *tenants,
                const struct sched_jobs *jobs,
                const struct sched_options *options,
                struct sched_result *result);

int sched_place_packed(struct sched_cluster *cluster, const char *packed, int64_t size,
                       const struct sched_options *options, struct sched_result *result);

int64_t sched_place_one(struct sched_cluster *cluster, const char *job, int64_t size,
                        int32_t policy, int32_t tenant_at_limit);
"""

# Python's own compiler flags may include -fwrapv, which defines signed overflow and
# so hides it from UndefinedBehaviorSanitizer: -fno-wrapv turns that check back on.
SANITIZER_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                   "-fno-omit-frame-pointer", "-g", "-fno-wrapv"]


def _sanitize() -> bool:
    return os.environ.get(SANITIZE_VARIABLE, "") not in ("", "0")


def _compile_args() -> list[str]:
    args = ["-O2", "-std=gnu11", "-Wall", "-Wextra"]
    return args + SANITIZER_FLAGS if _sanitize() else args


def _link_args() -> list[str]:
    return ["-fsanitize=address,undefined"] if _sanitize() else []


def make_builder(*, absolute: bool) -> FFI:
    """Return an FFI builder for the module. setuptools builds from the project root
    and rejects absolute source paths; ``FFI.compile`` changes into its temporary
    directory first, so a direct build needs absolute ones."""
    def path(target: Path) -> str:
        return str(target) if absolute else os.path.relpath(target)

    builder = FFI()
    builder.cdef(CDEF)
    builder.set_source(
        "cicd.scheduling.core._native",
        '#include "scheduler.h"',
        sources=[path(HERE / "scheduler.c")],
        include_dirs=[path(HERE)],
        depends=[path(HERE / "scheduler.h")],
        extra_compile_args=_compile_args(),
        extra_link_args=_link_args(),
    )
    return builder


ffibuilder = make_builder(absolute=False)


def main() -> None:
    parser = argparse.ArgumentParser(description="Compile cicd.scheduling.core._native.")
    parser.add_argument("--tmpdir", default="build/cffi",
                        help="directory to build in; the module lands under "
                             "TMPDIR/cicd/scheduling/core/ (default: build/cffi)")
    args = parser.parse_args()
    built = make_builder(absolute=True).compile(tmpdir=args.tmpdir, verbose=True)
    print(built)


if __name__ == "__main__":
    main()
