/*
 * Placement of pending jobs on nodes: the C core of cicd.scheduling.core.
 *
 * sched_cluster_new() prepares a snapshot of the nodes once; each call of
 * sched_place() then decides a whole batch of jobs against it. Inputs are
 * parallel arrays (one array per field), so the Python wrapper can fill each with
 * one ffi.new() call. The rules (queue order, policies,
 * backfill, reasons, tie-breaking) are written down in docs/scheduling.md, and
 * reference.py implements the same rules in Python; both must decide alike.
 *
 * Units: CPU in millicores, memory in bytes, times in milliseconds. Every score
 * is an integer (shares in parts per million), so results never depend on
 * floating-point rounding.
 */
#ifndef CICD_SCHEDULER_H
#define CICD_SCHEDULER_H

#include <stdint.h>

/* Limits of the inputs; values outside them are rejected. */
#define SCHED_MAX_QUANTITY 4611686018427387904LL  /* 2**62: CPU, memory, job counts */
#define SCHED_MIN_PRIORITY (-2147483647LL - 1)
#define SCHED_MAX_PRIORITY 2147483647LL
#define SCHED_MAX_TIME_MS 4611686018427387904LL   /* 2**62 */
#define SCHED_NO_AGING (-1LL)                     /* value of now_ms that turns aging off */
#define SCHED_NO_LIMIT (-1LL)                     /* value of running_limit: no limit */

#define SCHED_POLICY_FIFO 0
#define SCHED_POLICY_BINPACK 1
#define SCHED_POLICY_SPREAD 2

#define SCHED_NODE_CORDONED 1
#define SCHED_NODE_BREAKER_OPEN 2

#define SCHED_OUTCOME_ASSIGNED 0
#define SCHED_OUTCOME_WAITS 1
#define SCHED_OUTCOME_NEVER_FITS 2

#define SCHED_REASON_NONE 0
/* Reasons to wait. */
#define SCHED_REASON_CAPACITY 1
#define SCHED_REASON_LABELS 2
#define SCHED_REASON_TENANT_LIMIT 3
#define SCHED_REASON_NODE_UNAVAILABLE 4
#define SCHED_REASON_QUEUE_BLOCKED 5
#define SCHED_REASON_RESERVED 6
/* Reasons a job never fits (SCHED_REASON_LABELS is shared with the waits). */
#define SCHED_REASON_NO_NODES 7
#define SCHED_REASON_CPU 8
#define SCHED_REASON_MEMORY 9
#define SCHED_REASON_CPU_AND_MEMORY 10

/* Return codes. On an input error, the error index names the offending node, label
 * class, tenant or job, or is -1 when the error concerns no single element. */
#define SCHED_OK 0
#define SCHED_ERR_NO_MEMORY (-1)
#define SCHED_ERR_OPTIONS (-2)
#define SCHED_ERR_NODE (-3)
#define SCHED_ERR_LABEL_CLASS (-4)
#define SCHED_ERR_TENANT (-5)
#define SCHED_ERR_JOB (-6)
#define SCHED_ERR_RESULT (-7)
#define SCHED_ERR_BUSY (-8)              /* another call on the same cluster is running */

struct sched_nodes {
    int32_t count;
    const int64_t *cpu_capacity;
    const int64_t *memory_capacity;
    const int64_t *cpu_reserved;      /* kept free: at most the capacity */
    const int64_t *memory_reserved;
    const int64_t *cpu_allocated;     /* may exceed capacity minus reserve: the node is full */
    const int64_t *memory_allocated;
    const uint8_t *flags;             /* SCHED_NODE_* bits; any bit set: no new work */
    int32_t label_count;              /* label ids are 0 .. label_count - 1 */
    const int32_t *label_offsets;     /* count + 1 entries, starting at 0 */
    const int32_t *label_ids;         /* strictly ascending within each node */
};

/* The distinct sets of required labels. Class 0 must be the empty set. A class may
 * name the id label_count, which no node has, for a label unknown to every node. */
struct sched_label_classes {
    int32_t count;
    const int32_t *offsets;           /* count + 1 entries, starting at 0 */
    const int32_t *label_ids;         /* strictly ascending within each class */
};

struct sched_tenants {
    int32_t count;
    const int64_t *running_jobs;
    const int64_t *cpu_allocated;
    const int64_t *memory_allocated;
    const int64_t *running_limit;     /* SCHED_NO_LIMIT or 0 .. SCHED_MAX_QUANTITY */
};

struct sched_jobs {
    int32_t count;
    const int64_t *cpu;
    const int64_t *memory;
    const int64_t *priority;          /* higher first */
    const int64_t *runnable_at_ms;
    const int32_t *tenant;            /* index into struct sched_tenants */
    const int32_t *label_class;       /* index into struct sched_label_classes */
};

struct sched_options {
    int32_t policy;                   /* SCHED_POLICY_* */
    int32_t backfill;                 /* 0 or 1; 1 needs binpack or spread */
    int64_t now_ms;                   /* SCHED_NO_AGING, or 0 .. SCHED_MAX_TIME_MS */
    int64_t aging_interval_ms;        /* waiting this long adds 1 to the priority; 0: no aging */
};

/* Per-job outputs, each an array of jobs->count entries owned by the caller. */
struct sched_result {
    int32_t *node;                    /* node index, or -1 when the job is not placed */
    uint8_t *outcome;                 /* SCHED_OUTCOME_* */
    uint8_t *reason;                  /* SCHED_REASON_*; SCHED_REASON_NONE when placed */
    int32_t *position;                /* 0-based position of the job in queue order */
    int64_t *latency_ns;              /* NULL, or the monotonic time spent on each job */
    int32_t *assigned;                /* NULL, or room for jobs->count job indices: the
                                       * assigned jobs, in queue order */
    int32_t assigned_count;           /* set by every successful call */
    int32_t error_index;              /* set on SCHED_ERR_LABEL_CLASS .. SCHED_ERR_JOB */
};

/* A snapshot of the nodes prepared for many calls: the derived state (usable and
 * free capacity, shares, block summaries) is computed once, and each call of
 * sched_place() restores it before returning. */
struct sched_cluster;

/* Copy and prepare the nodes. Returns SCHED_OK and sets *cluster, or
 * SCHED_ERR_NODE (with *error_index set) or SCHED_ERR_NO_MEMORY. */
int sched_cluster_new(const struct sched_nodes *nodes, struct sched_cluster **cluster,
                      int32_t *error_index);

void sched_cluster_free(struct sched_cluster *cluster);

/* Decide every job of one batch against the cluster. Returns SCHED_OK or a negative
 * SCHED_ERR_* code; on error the result arrays hold no meaningful values. The
 * cluster is the same after the call as before it, but it is modified during the
 * call (its cache of per-label-set results grows, and it keeps its working arrays,
 * grown to the largest call so far), so calls on one cluster must not overlap: a
 * call that starts while another runs on the same cluster returns SCHED_ERR_BUSY
 * at once and changes nothing. Calls on different clusters may run in parallel.
 * The job arrays are only read during the call. */
int sched_place(struct sched_cluster *cluster,
                const struct sched_label_classes *classes,
                const struct sched_tenants *tenants,
                const struct sched_jobs *jobs,
                const struct sched_options *options,
                struct sched_result *result);

/* A packed queue: the job, tenant and label class arrays of one sched_place() call
 * in a single buffer, so that a caller passes one pointer instead of three structs.
 * The buffer is 8-byte aligned and holds, in native byte order:
 *
 *   int64_t header[4]    job count n, tenant count t, label class count c, and l,
 *                        the number of label ids of all classes together
 *   int64_t cpu[n], memory[n], priority[n], runnable_at_ms[n]
 *   int64_t running_jobs[t], cpu_allocated[t], memory_allocated[t], running_limit[t]
 *   int32_t tenant[n], label_class[n], class_offsets[c + 1], class_label_ids[l]
 *   zero to four bytes of padding, up to a multiple of 8 bytes
 *
 * Returns as sched_place() does, or SCHED_ERR_JOB with error_index -1 when the
 * buffer is misaligned or its size does not match its header. */
int sched_place_packed(struct sched_cluster *cluster, const char *packed, int64_t size,
                       const struct sched_options *options, struct sched_result *result);

/* The base of sched_place_one()'s result for a job it does not assign: the result
 * is this value minus (outcome << 8 | reason), below any SCHED_ERR_* code. */
#define SCHED_ONE_NOT_ASSIGNED (-1024)

/* Decide one job alone: the decision sched_place() makes for a batch of just this
 * job, without building a queue. The job is `size` bytes, in native byte order
 * and with no alignment required:
 *
 *   int64_t cpu, memory
 *   int32_t label_ids[k]  the ids of its required labels, strictly ascending, each
 *                         at most the cluster's label_count; size is 16 + 4 * k
 *
 * `tenant_at_limit` is 1 when the job's tenant already runs as many jobs as its
 * limit allows. Backfill and aging change nothing for a single job, so the policy
 * is the only option.
 *
 * Returns the node index (0 or more) when the job is assigned. For a job that
 * waits or never fits it returns a value at or below SCHED_ONE_NOT_ASSIGNED (see
 * above). On an error it returns SCHED_ERR_OPTIONS (policy), SCHED_ERR_JOB (the
 * job's bytes), SCHED_ERR_NO_MEMORY or SCHED_ERR_BUSY. Like sched_place(), it may grow the
 * cluster's cache of per-label-set results. */
int64_t sched_place_one(struct sched_cluster *cluster, const char *job, int64_t size,
                        int32_t policy, int32_t tenant_at_limit);

#endif /* CICD_SCHEDULER_H */
