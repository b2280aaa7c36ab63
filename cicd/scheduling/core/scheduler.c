/*
 * The C core of cicd.scheduling.core: see scheduler.h for the interface and
 * docs/scheduling.md for the rules. reference.py is the same algorithm in Python,
 * and the tests require both to return identical decisions.
 *
 * Speed comes from exact shortcuts, none of which changes a decision:
 * - Nodes are grouped in blocks of 64, each summarised by its maximum free CPU and
 *   memory and its highest and lowest share. A scan skips blocks in which no node
 *   fits the job or none can beat the best node found so far.
 * - Allocations only grow within a call, so a job shape (CPU, memory, label class)
 *   that found no node finds none later in the call either: it is remembered. A
 *   shape that found one remembers it, and the next job of that shape checks the
 *   placements made since instead of scanning (cached_best()).
 * - Which nodes have a set of required labels, and the Pareto fronts used for
 *   "never fits" and "node unavailable", depend only on the nodes and the labels,
 *   so the cluster caches them per label set.
 * - Once no node but the reserved one has room for the smallest request of the
 *   call, nothing more can be placed: the rest of the queue is decided without
 *   scans, in one sort (finish_frozen()).
 * - A one-job call (sched_place_one()) visits the blocks best first, in orders
 *   computed with the cluster, and stops at a block that cannot hold a better node.
 * reference.py has the first three, except the remembered best node.
 */
#define _POSIX_C_SOURCE 200809L

#include "scheduler.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_SCAN 1
#else
#define HAVE_AVX2_SCAN 0
#endif

#define PPM 1000000
#define BLOCK 64                            /* nodes per block summary */
#define LABEL_SETS_MAX 1024                 /* label sets a cluster keeps results for */
#define LABEL_SET_SLOTS (2 * LABEL_SETS_MAX)
#define SMALL_QUANTITY ((int64_t)1 << 44)   /* below this, value * PPM fits in 64 bits */

/* Shares multiply quantities of up to 2**62 by 10**6, which needs more than 64
 * bits. GCC and Clang provide 128-bit integers on 64-bit targets. */
__extension__ typedef unsigned __int128 u128;

/* The nodes that take new work (no flag set), in ascending node index. Their
 * positions here are "slots"; blocks group BLOCK consecutive slots. */
struct pool {
    int32_t count;
    int32_t *node;
    int64_t *free_cpu;
    int64_t *free_memory;
    int64_t *score;               /* CPU share + memory share, in ppm each */
    uint64_t *binpack_key;        /* see set_score() */
    uint64_t *spread_key;
    int64_t *cpu_allocated;
    int64_t *memory_allocated;
    int64_t *cpu_usable;          /* capacity minus reserve */
    int64_t *memory_usable;
};

struct blocks {
    int32_t count;
    int64_t *free_cpu;            /* maximum free CPU of a slot in the block */
    int64_t *free_memory;
    int64_t *max_score;
    int64_t *min_score;
};

/* The Pareto front of (usable CPU, usable memory) over a set of nodes: a job fits
 * some node of the set when empty exactly when it fits under one point. */
struct frontier {
    int32_t count;
    int64_t *cpu;                 /* strictly decreasing */
    int64_t *memory;              /* strictly increasing */
};

struct fronts {
    struct frontier all;          /* every node with the labels */
    struct frontier available;    /* only nodes that take new work */
};

/* Results derived from one set of required labels, built on first use. */
struct label_set {
    int used;
    int32_t id_count;
    uint64_t hash;
    int32_t *ids;                 /* NULL in a set owned by one call */
    int fronts_built;
    struct fronts fronts;
    uint64_t *mask;               /* per block: bit i set when slot BLOCK * b + i has the labels */
};

struct node_point {
    int64_t cpu;
    int64_t memory;
    int32_t index;
};

struct sched_cluster {
    int32_t node_count;
    int32_t label_count;
    uint8_t *flags;
    int32_t *label_offsets;
    int32_t *label_ids;
    u128 total_cpu;               /* usable capacity of every node, flags aside */
    u128 total_memory;
    struct node_point *by_size;   /* every node, largest usable CPU first */
    struct node_point *scratch;   /* room for two fronts while one is built */
    struct pool pool;
    struct blocks blocks;
    struct label_set *sets;       /* LABEL_SET_SLOTS entries, open addressing */
    int32_t set_count;
    struct run_buffers *buffers;  /* working arrays of sched_place(), reused by each call */
    int32_t *binpack_order;       /* blocks by highest score, then index: see scan_one() */
    int32_t *spread_order;        /* blocks by lowest score, then index */
    int avx2_scan;                /* use best_key_in_avx2(); see sched_cluster_new() */
    int busy;                     /* a call is running; atomic, see cluster_enter() */
};

struct shape {
    int64_t cpu;
    int64_t memory;
    int32_t label_class;
    int32_t used;
    int32_t slot;                 /* in run.fits: the best slot a scan found */
    size_t seen;                  /* in run.fits: run.undo_count when it was last checked */
};

/* Open-addressing hash table of job shapes: those known to fit on no node in this
 * call (run.failed), and the best slot last found for a shape (run.fits). */
struct shape_set {
    struct shape *slots;
    size_t capacity;              /* a power of two */
    size_t size;
};

struct queued_job {
    int64_t neg_priority;         /* minus the effective priority, so ascending order works */
    int64_t runnable_at_ms;
    int32_t tenant;
    int32_t index;
};

struct tenant_state {
    u128 cpu;
    u128 memory;
    u128 share;                   /* dominant share of the cluster, in ppm */
    int64_t running;
    int64_t limit;
    int32_t next;                 /* next entry of the tenant's range in run.order */
    int32_t end;
    int32_t rank;                 /* see finish_frozen() */
};

/* The old values of a slot that a placement changed, to restore the cluster. */
struct undo {
    int32_t slot;
    int64_t free_cpu;
    int64_t free_memory;
    int64_t score;
    int64_t cpu_allocated;
    int64_t memory_allocated;
};

/* Working arrays of sched_place(), kept with the cluster and grown to the largest
 * call seen. Allocating them on every call costs a page fault for each new page,
 * which was a large part of a call on a small cluster. Each capacity counts items. */
struct run_buffers {
    struct tenant_state *tenants;
    size_t tenants_capacity;
    int32_t *heap;
    size_t heap_capacity;
    struct queued_job *order;
    size_t order_capacity;
    uint64_t *keys;               /* two keys per job, for the radix sorts */
    size_t keys_capacity;
    int32_t *by_priority;         /* job indices by effective priority, runnable time, index */
    size_t by_priority_capacity;
    int64_t *neg_priority;        /* per job: minus its effective priority */
    size_t neg_priority_capacity;
    struct label_set **sets;
    size_t sets_capacity;
    struct shape *failed;         /* a power of two of slots */
    size_t failed_capacity;
    struct shape *fits;           /* a power of two of slots */
    size_t fits_capacity;
    struct undo *undo;
    size_t undo_capacity;
};

/* The layout of radix_sort_queue()'s keys, for sorting the rest of the queue again
 * once no job can be placed any more (see finish_frozen()). */
struct key_layout {
    int usable;                   /* 0: finish_frozen() cannot sort the queue's rest */
    int index_bits;
    int priority_bits;
    int64_t min_priority;
};

struct run {
    struct sched_cluster *cluster;
    const struct sched_label_classes *classes;
    const struct sched_jobs *jobs;
    const struct sched_options *options;
    struct sched_result *result;

    struct tenant_state *tenants;
    struct queued_job *order;
    int32_t *heap;
    int32_t heap_size;

    struct label_set **sets;      /* per label class, NULL until looked up */
    struct label_set *owned_sets; /* per label class, when the cluster has no room */

    struct shape_set failed;
    struct shape_set fits;
    size_t replay_limit;          /* see cached_best() */
    struct undo *undo;
    size_t undo_count;
    size_t undo_capacity;

    int head_seen;                /* a job has waited for capacity already */
    int queue_blocked;            /* strict order: nothing more is placed */
    int reservation_pending;      /* backfill: the head's node is not chosen yet */
    int64_t head_cpu;
    int64_t head_memory;
    int32_t head_class;
    int32_t reserved;             /* slot held for the head, or -1 */

    /* A call is "frozen" once no block has a slot with both the least CPU and the
     * least memory that any job of the call requests. No job can be placed any
     * more then, so the rest of the queue needs no scan. */
    int64_t min_cpu;
    int64_t min_memory;
    int32_t roomy_blocks;         /* blocks whose free maxima hold (min_cpu, min_memory) */
    int frozen;
    struct key_layout layout;
};

/* ---- arithmetic --------------------------------------------------------------- */

/* value * PPM / divisor, for 0 <= value <= divisor. */
static int64_t ppm_of(int64_t value, int64_t divisor)
{
    if (value < SMALL_QUANTITY)
        return (int64_t)((uint64_t)value * PPM / (uint64_t)divisor);
    return (int64_t)((u128)value * PPM / (u128)divisor);
}

static int64_t share_ppm(int64_t allocated, int64_t usable)
{
    return allocated >= usable ? PPM : ppm_of(allocated, usable);
}

static int64_t shortfall_ppm(int64_t request, int64_t free, int64_t usable)
{
    /* A candidate's usable capacity is at least the request, so usable > 0 here. */
    return request <= free ? 0 : ppm_of(request - free, usable);
}

static int64_t free_of(int64_t usable, int64_t allocated)
{
    return usable > allocated ? usable - allocated : 0;
}

/* value * PPM / total, or 0 for a total of 0. A 128-bit division is a library
 * call, several times slower than a 64-bit one, so it runs only when needed. */
static u128 share_of(u128 value, u128 total)
{
    if (!total)
        return 0;
    u128 scaled = value * PPM;
    if ((scaled >> 64) == 0 && (total >> 64) == 0)
        return (uint64_t)scaled / (uint64_t)total;
    return scaled / total;
}

static u128 tenant_share(const struct sched_cluster *c, const struct tenant_state *t)
{
    u128 cpu = share_of(t->cpu, c->total_cpu);
    u128 memory = share_of(t->memory, c->total_memory);
    return cpu > memory ? cpu : memory;
}

static int64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* value / divisor for value < 2**63, given reciprocal = UINT64_MAX / divisor: a
 * multiplication instead of a division per job, which cost several nanoseconds each.
 * The product's high half is at most one below the quotient, so one correction
 * step makes it exact. */
static uint64_t divide_by(uint64_t value, uint64_t divisor, uint64_t reciprocal)
{
    uint64_t quotient = (uint64_t)(((u128)value * reciprocal) >> 64);
    if (value - quotient * divisor >= divisor)
        quotient++;
    return quotient;
}

/* ---- input checks ------------------------------------------------------------- */

static int in_range(int64_t value, int64_t low, int64_t high)
{
    return value >= low && value <= high;
}

/* Mark the cluster as used by this call; false if another call uses it. One atomic
 * exchange, so a caller needs no lock of its own for the common case. */
static int cluster_enter(struct sched_cluster *c)
{
    return !__atomic_exchange_n(&c->busy, 1, __ATOMIC_ACQUIRE);
}

static void cluster_leave(struct sched_cluster *c)
{
    __atomic_store_n(&c->busy, 0, __ATOMIC_RELEASE);
}

/* Check a list of id lists: offsets start at 0 and never fall, ids ascend strictly
 * within a list and lie in [0, max_id]. On failure, *bad names the list. */
static int check_id_lists(int32_t count, const int32_t *offsets, const int32_t *ids,
                          int32_t max_id, int32_t *bad)
{
    if (offsets[0] != 0) {
        *bad = 0;
        return 0;
    }
    for (int32_t i = 0; i < count; i++) {
        if (offsets[i + 1] < offsets[i]) {
            *bad = i;
            return 0;
        }
        for (int32_t p = offsets[i]; p < offsets[i + 1]; p++) {
            if (ids[p] < 0 || ids[p] > max_id || (p > offsets[i] && ids[p] <= ids[p - 1])) {
                *bad = i;
                return 0;
            }
        }
    }
    return 1;
}

static int check_nodes(const struct sched_nodes *nodes, int32_t *bad)
{
    *bad = -1;
    if (nodes->count < 0 || nodes->label_count < 0)
        return 0;
    for (int32_t i = 0; i < nodes->count; i++) {
        *bad = i;
        if (!in_range(nodes->cpu_capacity[i], 0, SCHED_MAX_QUANTITY)
            || !in_range(nodes->memory_capacity[i], 0, SCHED_MAX_QUANTITY)
            || !in_range(nodes->cpu_reserved[i], 0, nodes->cpu_capacity[i])
            || !in_range(nodes->memory_reserved[i], 0, nodes->memory_capacity[i])
            || !in_range(nodes->cpu_allocated[i], 0, SCHED_MAX_QUANTITY)
            || !in_range(nodes->memory_allocated[i], 0, SCHED_MAX_QUANTITY)
            || nodes->flags[i] > (SCHED_NODE_CORDONED | SCHED_NODE_BREAKER_OPEN))
            return 0;
    }
    return check_id_lists(nodes->count, nodes->label_offsets, nodes->label_ids,
                          nodes->label_count - 1, bad);
}

static int check_call(const struct sched_cluster *cluster, const struct sched_label_classes *classes,
                      const struct sched_tenants *tenants, const struct sched_jobs *jobs,
                      const struct sched_options *options, struct sched_result *result)
{
    result->error_index = -1;
    if (!in_range(options->policy, SCHED_POLICY_FIFO, SCHED_POLICY_SPREAD)
        || !in_range(options->backfill, 0, 1)
        || (options->backfill && options->policy == SCHED_POLICY_FIFO)
        || (options->now_ms != SCHED_NO_AGING && !in_range(options->now_ms, 0, SCHED_MAX_TIME_MS))
        || !in_range(options->aging_interval_ms, 0, SCHED_MAX_TIME_MS))
        return SCHED_ERR_OPTIONS;

    /* Class 0 is the empty set; a class may name label_count, which no node has. */
    result->error_index = 0;
    if (classes->count < 1 || classes->offsets[0] != 0 || classes->offsets[1] != 0)
        return SCHED_ERR_LABEL_CLASS;
    if (!check_id_lists(classes->count, classes->offsets, classes->label_ids,
                        cluster->label_count, &result->error_index))
        return SCHED_ERR_LABEL_CLASS;

    result->error_index = -1;
    if (tenants->count < 0)
        return SCHED_ERR_TENANT;
    for (int32_t t = 0; t < tenants->count; t++) {
        result->error_index = t;
        if (!in_range(tenants->running_jobs[t], 0, SCHED_MAX_QUANTITY)
            || !in_range(tenants->cpu_allocated[t], 0, SCHED_MAX_QUANTITY)
            || !in_range(tenants->memory_allocated[t], 0, SCHED_MAX_QUANTITY)
            || !in_range(tenants->running_limit[t], SCHED_NO_LIMIT, SCHED_MAX_QUANTITY))
            return SCHED_ERR_TENANT;
    }

    result->error_index = -1;
    if (jobs->count < 0)
        return SCHED_ERR_JOB;
    for (int32_t j = 0; j < jobs->count; j++) {
        result->error_index = j;
        if (!in_range(jobs->cpu[j], 0, SCHED_MAX_QUANTITY)
            || !in_range(jobs->memory[j], 0, SCHED_MAX_QUANTITY)
            || !in_range(jobs->priority[j], SCHED_MIN_PRIORITY, SCHED_MAX_PRIORITY)
            || !in_range(jobs->runnable_at_ms[j], 0, SCHED_MAX_TIME_MS)
            || !in_range(jobs->tenant[j], 0, (int64_t)tenants->count - 1)
            || !in_range(jobs->label_class[j], 0, (int64_t)classes->count - 1))
            return SCHED_ERR_JOB;
    }

    result->error_index = -1;
    if (jobs->count > 0 && (!result->node || !result->outcome || !result->reason || !result->position))
        return SCHED_ERR_RESULT;
    return SCHED_OK;
}

/* ---- labels ---------------------------------------------------------------------- */

/* Whether node `index` has every label in [need, need_end). Both lists ascend. */
static int labels_match(const struct sched_cluster *c, int32_t index,
                        const int32_t *need, const int32_t *need_end)
{
    const int32_t *have = c->label_ids + c->label_offsets[index];
    const int32_t *have_end = c->label_ids + c->label_offsets[index + 1];

    for (; need < need_end; need++) {
        while (have < have_end && *have < *need)
            have++;
        if (have == have_end || *have != *need)
            return 0;
        have++;
    }
    return 1;
}

static const int32_t *class_ids(const struct run *r, int32_t label_class)
{
    return r->classes->label_ids + r->classes->offsets[label_class];
}

static const int32_t *class_ids_end(const struct run *r, int32_t label_class)
{
    return r->classes->label_ids + r->classes->offsets[label_class + 1];
}

static int slot_matches(const struct run *r, int32_t slot, int32_t label_class)
{
    return labels_match(r->cluster, r->cluster->pool.node[slot], class_ids(r, label_class),
                        class_ids_end(r, label_class));
}

/* ---- the cluster ------------------------------------------------------------------- */

static void block_refresh(struct sched_cluster *c, int32_t b)
{
    const struct pool *p = &c->pool;
    int32_t low = b * BLOCK;
    int32_t high = low + BLOCK < p->count ? low + BLOCK : p->count;
    int64_t free_cpu = 0, free_memory = 0, max_score = 0, min_score = 2 * PPM;
    for (int32_t a = low; a < high; a++) {
        if (p->free_cpu[a] > free_cpu)
            free_cpu = p->free_cpu[a];
        if (p->free_memory[a] > free_memory)
            free_memory = p->free_memory[a];
        if (p->score[a] > max_score)
            max_score = p->score[a];
        if (p->score[a] < min_score)
            min_score = p->score[a];
    }
    c->blocks.free_cpu[b] = free_cpu;
    c->blocks.free_memory[b] = free_memory;
    c->blocks.max_score[b] = max_score;
    c->blocks.min_score[b] = min_score;
}

/* Update the summary of slot a's block after a placement on a, which lowered its
 * free capacity and raised its score. Only a maximum that a held, or the minimum
 * score if a held it, needs a look at the whole block. */
static void block_update(struct sched_cluster *c, int32_t a, int64_t old_free_cpu,
                         int64_t old_free_memory, int64_t old_score)
{
    const struct pool *p = &c->pool;
    int32_t b = a / BLOCK;
    if (old_free_cpu == c->blocks.free_cpu[b] || old_free_memory == c->blocks.free_memory[b]
        || old_score == c->blocks.min_score[b]) {
        block_refresh(c, b);
        return;
    }
    if (p->score[a] > c->blocks.max_score[b])
        c->blocks.max_score[b] = p->score[a];
}

/* Set a slot's score and its keys. A key contains the slot's rank above the inverted
 * slot number, so the largest key has the highest rank and, among equal ranks, the
 * lowest slot. The rank is the score for binpack and 2 * PPM minus it for spread. */
static void set_score(struct pool *p, int32_t a, int64_t score)
{
    uint64_t slot = (uint64_t)(UINT32_MAX - (uint32_t)a);
    p->score[a] = score;
    p->binpack_key[a] = ((uint64_t)score << 32) | slot;
    p->spread_key[a] = ((uint64_t)(2 * PPM - score) << 32) | slot;
}

static int compare_by_size(const void *a, const void *b)
{
    const struct node_point *x = a, *y = b;
    if (x->cpu != y->cpu)
        return x->cpu > y->cpu ? -1 : 1;
    if (x->memory != y->memory)
        return x->memory > y->memory ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

static void label_set_free(struct label_set *set)
{
    free(set->ids);
    free(set->fronts.all.cpu);
    free(set->fronts.all.memory);
    free(set->fronts.available.cpu);
    free(set->fronts.available.memory);
    free(set->mask);
}

void sched_cluster_free(struct sched_cluster *c)
{
    if (!c)
        return;
    struct pool *p = &c->pool;
    free(c->flags);
    free(c->label_offsets);
    free(c->label_ids);
    free(c->by_size);
    free(c->scratch);
    free(p->node);
    free(p->free_cpu);
    free(p->free_memory);
    free(p->score);
    free(p->binpack_key);
    free(p->spread_key);
    free(p->cpu_allocated);
    free(p->memory_allocated);
    free(p->cpu_usable);
    free(p->memory_usable);
    free(c->blocks.free_cpu);
    free(c->blocks.free_memory);
    free(c->blocks.max_score);
    free(c->blocks.min_score);
    free(c->binpack_order);
    free(c->spread_order);
    if (c->sets) {
        for (int32_t i = 0; i < LABEL_SET_SLOTS; i++)
            label_set_free(&c->sets[i]);
        free(c->sets);
    }
    if (c->buffers) {
        struct run_buffers *b = c->buffers;
        free(b->tenants);
        free(b->heap);
        free(b->order);
        free(b->keys);
        free(b->by_priority);
        free(b->neg_priority);
        free(b->sets);
        free(b->failed);
        free(b->fits);
        free(b->undo);
        free(b);
    }
    free(c);
}

static int cluster_alloc(struct sched_cluster *c, const struct sched_nodes *nodes)
{
    /* One spare element everywhere: malloc(0) may return NULL. */
    size_t n = (size_t)nodes->count + 1;
    size_t labels = (size_t)nodes->label_offsets[nodes->count] + 1;
    size_t blocks = (size_t)nodes->count / BLOCK + 1;
    struct pool *p = &c->pool;

    c->flags = malloc(n);
    c->label_offsets = malloc(n * sizeof(int32_t));
    c->label_ids = malloc(labels * sizeof(int32_t));
    c->by_size = malloc(n * sizeof(struct node_point));
    c->scratch = malloc(2 * n * sizeof(struct node_point));
    p->node = malloc(n * sizeof(int32_t));
    p->free_cpu = malloc(n * sizeof(int64_t));
    p->free_memory = malloc(n * sizeof(int64_t));
    p->score = malloc(n * sizeof(int64_t));
    p->binpack_key = malloc(n * sizeof(uint64_t));
    p->spread_key = malloc(n * sizeof(uint64_t));
    p->cpu_allocated = malloc(n * sizeof(int64_t));
    p->memory_allocated = malloc(n * sizeof(int64_t));
    p->cpu_usable = malloc(n * sizeof(int64_t));
    p->memory_usable = malloc(n * sizeof(int64_t));
    c->blocks.free_cpu = malloc(blocks * sizeof(int64_t));
    c->blocks.free_memory = malloc(blocks * sizeof(int64_t));
    c->blocks.max_score = malloc(blocks * sizeof(int64_t));
    c->blocks.min_score = malloc(blocks * sizeof(int64_t));
    c->binpack_order = malloc(blocks * sizeof(int32_t));
    c->spread_order = malloc(blocks * sizeof(int32_t));
    c->sets = calloc(LABEL_SET_SLOTS, sizeof(struct label_set));
    c->buffers = calloc(1, sizeof *c->buffers);
    return c->buffers && c->flags && c->label_offsets && c->label_ids && c->by_size && c->scratch && p->node
           && p->free_cpu && p->free_memory && p->score && p->binpack_key && p->spread_key
           && p->cpu_allocated && p->memory_allocated
           && p->cpu_usable && p->memory_usable && c->blocks.free_cpu && c->blocks.free_memory
           && c->blocks.max_score && c->blocks.min_score && c->binpack_order
           && c->spread_order && c->sets;
}

static int compare_descending(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x < y) - (x > y);
}

/* Fill `order` with the blocks by descending rank, ties by ascending index. The rank
 * of block b is rank[b], from 0 to 2 * PPM. Returns 0 when out of memory. */
static int order_blocks(int32_t *order, const int64_t *rank, int32_t count, int spread)
{
    uint64_t *keys = malloc(((size_t)count + 1) * sizeof *keys);
    if (!keys)
        return 0;
    for (int32_t b = 0; b < count; b++) {
        uint64_t value = (uint64_t)(spread ? 2 * PPM - rank[b] : rank[b]);
        keys[b] = (value << 32) | (uint64_t)(UINT32_MAX - (uint32_t)b);
    }
    qsort(keys, (size_t)count, sizeof *keys, compare_descending);
    for (int32_t i = 0; i < count; i++)
        order[i] = (int32_t)(UINT32_MAX - (uint32_t)keys[i]);
    free(keys);
    return 1;
}

int sched_cluster_new(const struct sched_nodes *nodes, struct sched_cluster **cluster,
                      int32_t *error_index)
{
    *cluster = NULL;
    if (!check_nodes(nodes, error_index))
        return SCHED_ERR_NODE;
    *error_index = -1;

    struct sched_cluster *c = calloc(1, sizeof *c);
    if (!c)
        return SCHED_ERR_NO_MEMORY;
    if (!cluster_alloc(c, nodes)) {
        sched_cluster_free(c);
        return SCHED_ERR_NO_MEMORY;
    }

    int32_t n = nodes->count;
    c->node_count = n;
#if HAVE_AVX2_SCAN
    /* CICD_SCHEDULER_SCALAR=1 keeps the portable scan, so tests can compare both. */
    const char *scalar = getenv("CICD_SCHEDULER_SCALAR");
    __builtin_cpu_init();
    c->avx2_scan = __builtin_cpu_supports("avx2") && !(scalar && *scalar && strcmp(scalar, "0"));
#endif
    c->label_count = nodes->label_count;
    memcpy(c->flags, nodes->flags, (size_t)n);
    memcpy(c->label_offsets, nodes->label_offsets, ((size_t)n + 1) * sizeof(int32_t));
    memcpy(c->label_ids, nodes->label_ids, (size_t)nodes->label_offsets[n] * sizeof(int32_t));

    struct pool *p = &c->pool;
    for (int32_t i = 0; i < n; i++) {
        int64_t cpu_usable = nodes->cpu_capacity[i] - nodes->cpu_reserved[i];
        int64_t memory_usable = nodes->memory_capacity[i] - nodes->memory_reserved[i];
        c->total_cpu += (u128)cpu_usable;
        c->total_memory += (u128)memory_usable;
        c->by_size[i] = (struct node_point){cpu_usable, memory_usable, i};
        if (nodes->flags[i] != 0)
            continue;
        int32_t a = p->count++;
        p->node[a] = i;
        p->cpu_usable[a] = cpu_usable;
        p->memory_usable[a] = memory_usable;
        p->cpu_allocated[a] = nodes->cpu_allocated[i];
        p->memory_allocated[a] = nodes->memory_allocated[i];
        p->free_cpu[a] = free_of(cpu_usable, nodes->cpu_allocated[i]);
        p->free_memory[a] = free_of(memory_usable, nodes->memory_allocated[i]);
        set_score(p, a, share_ppm(nodes->cpu_allocated[i], cpu_usable)
                            + share_ppm(nodes->memory_allocated[i], memory_usable));
    }
    qsort(c->by_size, (size_t)n, sizeof *c->by_size, compare_by_size);

    c->blocks.count = (p->count + BLOCK - 1) / BLOCK;
    for (int32_t b = 0; b < c->blocks.count; b++)
        block_refresh(c, b);
    if (!order_blocks(c->binpack_order, c->blocks.max_score, c->blocks.count, 0)
        || !order_blocks(c->spread_order, c->blocks.min_score, c->blocks.count, 1)) {
        sched_cluster_free(c);
        return SCHED_ERR_NO_MEMORY;
    }
    *cluster = c;
    return SCHED_OK;
}

/* ---- fronts (never fits, node unavailable) ------------------------------------------ */

static int frontier_copy(struct frontier *f, const struct node_point *points, int32_t count)
{
    f->count = count;
    if (count == 0)
        return 1;
    f->cpu = malloc((size_t)count * sizeof *f->cpu);
    f->memory = malloc((size_t)count * sizeof *f->memory);
    if (!f->cpu || !f->memory)
        return 0;
    for (int32_t i = 0; i < count; i++) {
        f->cpu[i] = points[i].cpu;
        f->memory[i] = points[i].memory;
    }
    return 1;
}

/* Build both fronts of the nodes with every label in [need, need_end). Nodes come
 * largest CPU first, so a node joins a front when it has more memory than every
 * node already on it. Returns 0 when out of memory. */
static int fronts_build(const struct sched_cluster *c, const int32_t *need, const int32_t *need_end,
                        struct fronts *out)
{
    struct node_point *all = c->scratch, *available = c->scratch + c->node_count;
    int32_t all_count = 0, available_count = 0;
    for (int32_t s = 0; s < c->node_count; s++) {
        const struct node_point *p = &c->by_size[s];
        if (need != need_end && !labels_match(c, p->index, need, need_end))
            continue;
        if (all_count == 0 || p->memory > all[all_count - 1].memory)
            all[all_count++] = *p;
        if (c->flags[p->index] == 0
            && (available_count == 0 || p->memory > available[available_count - 1].memory))
            available[available_count++] = *p;
    }
    memset(out, 0, sizeof *out);
    if (frontier_copy(&out->all, all, all_count)
        && frontier_copy(&out->available, available, available_count))
        return 1;
    free(out->all.cpu);
    free(out->all.memory);
    free(out->available.cpu);
    free(out->available.memory);
    memset(out, 0, sizeof *out);
    return 0;
}

static uint64_t ids_hash(const int32_t *ids, int32_t count)
{
    uint64_t h = mix64((uint64_t)count);
    for (int32_t i = 0; i < count; i++)
        h = mix64(h ^ (uint64_t)(uint32_t)ids[i]);
    return h;
}

/* The cluster's entry for a label set: the one holding it, or the free one for it.
 * There is always a free entry: at most half of them are ever used. */
static struct label_set *set_entry(struct sched_cluster *c, const int32_t *ids, int32_t count,
                                   uint64_t hash)
{
    size_t slot = (size_t)hash & (LABEL_SET_SLOTS - 1);
    for (;;) {
        struct label_set *e = &c->sets[slot];
        if (!e->used
            || (e->hash == hash && e->id_count == count
                && (count == 0 || memcmp(e->ids, ids, (size_t)count * sizeof *ids) == 0)))
            return e;
        slot = (slot + 1) & (LABEL_SET_SLOTS - 1);
    }
}

/* The label set of a class if this call or the cluster already has it, or NULL. */
static struct label_set *label_set_known(struct run *r, int32_t label_class)
{
    if (!r->sets[label_class]) {
        const int32_t *ids = class_ids(r, label_class);
        int32_t count = (int32_t)(class_ids_end(r, label_class) - ids);
        struct label_set *e = set_entry(r->cluster, ids, count, ids_hash(ids, count));
        if (e->used)
            r->sets[label_class] = e;
    }
    return r->sets[label_class];
}

/* The label set of a class, added to the cluster while it has room and owned by
 * this call otherwise. Returns NULL when out of memory. */
static struct label_set *label_set_of(struct run *r, int32_t label_class)
{
    struct label_set *known = label_set_known(r, label_class);
    if (known)
        return known;

    struct sched_cluster *c = r->cluster;
    const int32_t *ids = class_ids(r, label_class);
    int32_t count = (int32_t)(class_ids_end(r, label_class) - ids);
    if (c->set_count < LABEL_SETS_MAX) {
        uint64_t hash = ids_hash(ids, count);
        struct label_set *e = set_entry(c, ids, count, hash);
        int32_t *copy = malloc((size_t)count * sizeof *copy + 1);
        if (!copy)
            return NULL;
        memcpy(copy, ids, (size_t)count * sizeof *copy);
        *e = (struct label_set){.used = 1, .id_count = count, .hash = hash, .ids = copy};
        c->set_count++;
        r->sets[label_class] = e;
    } else {
        if (!r->owned_sets) {
            r->owned_sets = calloc((size_t)r->classes->count, sizeof *r->owned_sets);
            if (!r->owned_sets)
                return NULL;
        }
        r->sets[label_class] = &r->owned_sets[label_class];
    }
    return r->sets[label_class];
}

/* The fronts of a class if already built, or NULL; never builds them. */
static const struct fronts *fronts_known(struct run *r, int32_t label_class)
{
    struct label_set *set = label_set_known(r, label_class);
    return set && set->fronts_built ? &set->fronts : NULL;
}

/* The fronts of a class, built on first use. Returns NULL when out of memory. */
static const struct fronts *fronts_of(struct run *r, int32_t label_class)
{
    struct label_set *set = label_set_of(r, label_class);
    if (!set)
        return NULL;
    if (!set->fronts_built) {
        if (!fronts_build(r->cluster, class_ids(r, label_class), class_ids_end(r, label_class),
                          &set->fronts))
            return NULL;
        set->fronts_built = 1;
    }
    return &set->fronts;
}

/* Per block, which slots have the labels of a class (built on first use), or NULL
 * for the empty class, which every slot has. Sets *no_memory on failure. */
static const uint64_t *mask_of(struct run *r, int32_t label_class, int *no_memory)
{
    const int32_t *need = class_ids(r, label_class), *need_end = class_ids_end(r, label_class);
    *no_memory = 0;
    if (need == need_end)
        return NULL;
    struct label_set *set = label_set_of(r, label_class);
    if (!set) {
        *no_memory = 1;
        return NULL;
    }
    if (!set->mask) {
        const struct pool *p = &r->cluster->pool;
        uint64_t *mask = calloc((size_t)r->cluster->blocks.count + 1, sizeof *mask);
        if (!mask) {
            *no_memory = 1;
            return NULL;
        }
        for (int32_t a = 0; a < p->count; a++)
            if (labels_match(r->cluster, p->node[a], need, need_end))
                mask[a / BLOCK] |= (uint64_t)1 << (a % BLOCK);
        set->mask = mask;
    }
    return set->mask;
}

/* Whether some point of the front has at least `cpu` and at least `memory`. */
static int frontier_holds(const struct frontier *f, int64_t cpu, int64_t memory)
{
    int32_t low = 0, high = f->count;   /* becomes the count of points with enough CPU */
    while (low < high) {
        int32_t mid = low + (high - low) / 2;
        if (f->cpu[mid] >= cpu)
            low = mid + 1;
        else
            high = mid;
    }
    return low > 0 && f->memory[low - 1] >= memory;
}

static uint8_t never_fits_reason(const struct run *r, const struct frontier *all,
                                 int64_t cpu, int64_t memory)
{
    if (r->cluster->node_count == 0)
        return SCHED_REASON_NO_NODES;
    if (all->count == 0)
        return SCHED_REASON_LABELS;
    int cpu_ok = all->cpu[0] >= cpu;
    int memory_ok = all->memory[all->count - 1] >= memory;
    if (!cpu_ok && memory_ok)
        return SCHED_REASON_CPU;
    if (cpu_ok && !memory_ok)
        return SCHED_REASON_MEMORY;
    return SCHED_REASON_CPU_AND_MEMORY;
}

/* ---- shapes that fit nowhere ---------------------------------------------------------- */

static size_t shape_slot(const struct shape_set *set, int64_t cpu, int64_t memory, int32_t label_class)
{
    uint64_t h = mix64((uint64_t)cpu ^ mix64((uint64_t)memory ^ mix64((uint64_t)label_class)));
    size_t slot = (size_t)h & (set->capacity - 1);
    while (set->slots[slot].used) {
        const struct shape *s = &set->slots[slot];
        if (s->cpu == cpu && s->memory == memory && s->label_class == label_class)
            break;
        slot = (slot + 1) & (set->capacity - 1);
    }
    return slot;
}

static int shape_failed(const struct shape_set *set, int64_t cpu, int64_t memory, int32_t label_class)
{
    return set->slots[shape_slot(set, cpu, memory, label_class)].used;
}

/* The entry of a shape, or NULL when the set does not contain it. */
static struct shape *shape_find(struct shape_set *set, int64_t cpu, int64_t memory,
                                int32_t label_class)
{
    struct shape *s = &set->slots[shape_slot(set, cpu, memory, label_class)];
    return s->used ? s : NULL;
}

/* Add a shape unless the set contains it; returns its entry, or NULL when out of memory. */
static struct shape *shape_add(struct shape_set *set, int64_t cpu, int64_t memory,
                               int32_t label_class)
{
    if ((set->size + 1) * 2 > set->capacity) {
        struct shape_set grown = {calloc(set->capacity * 2, sizeof(struct shape)), set->capacity * 2, 0};
        if (!grown.slots)
            return NULL;
        for (size_t i = 0; i < set->capacity; i++) {
            if (set->slots[i].used) {
                grown.slots[shape_slot(&grown, set->slots[i].cpu, set->slots[i].memory,
                                       set->slots[i].label_class)] = set->slots[i];
                grown.size++;
            }
        }
        free(set->slots);
        *set = grown;
    }
    struct shape *s = &set->slots[shape_slot(set, cpu, memory, label_class)];
    if (!s->used) {
        *s = (struct shape){.cpu = cpu, .memory = memory, .label_class = label_class, .used = 1};
        set->size++;
    }
    return s;
}

static void shape_clear(struct shape_set *set)
{
    memset(set->slots, 0, set->capacity * sizeof *set->slots);
    set->size = 0;
}

/* ---- queue order -------------------------------------------------------------------------- */

/* Order of the queue within the sort: tenant, effective priority, runnable time,
 * job index. Every key differs in its index, so the order is total. */
static int queued_before(const struct queued_job *x, const struct queued_job *y)
{
    if (x->tenant != y->tenant)
        return x->tenant < y->tenant;
    if (x->neg_priority != y->neg_priority)
        return x->neg_priority < y->neg_priority;
    if (x->runnable_at_ms != y->runnable_at_ms)
        return x->runnable_at_ms < y->runnable_at_ms;
    return x->index < y->index;
}

/* Bottom-up merge sort of items[0 .. count) by queued_before(), using `buffer`
 * (room for count items); qsort() would call a comparison function per step, which
 * costs about twice as much here. */
static void sort_queue(struct queued_job *items, struct queued_job *buffer, int32_t count)
{
    struct queued_job *from = items, *to = buffer;
    for (int32_t width = 1; width < count; width *= 2) {
        for (int32_t low = 0; low < count; low += 2 * width) {
            int32_t middle = low + width < count ? low + width : count;
            int32_t high = middle + width < count ? middle + width : count;
            int32_t i = low, k = middle, out = low;
            while (i < middle && k < high)
                to[out++] = queued_before(&from[k], &from[i]) ? from[k++] : from[i++];
            while (i < middle)
                to[out++] = from[i++];
            while (k < high)
                to[out++] = from[k++];
        }
        struct queued_job *swap = from;
        from = to;
        to = swap;
    }
    if (from != items)
        memcpy(items, from, (size_t)count * sizeof *items);
}

/* Whether tenant a's next job comes before tenant b's: effective priority, then the
 * tenant's dominant share, then its running jobs, then runnable time and job index. */
static int tenant_before(const struct run *r, int32_t a, int32_t b)
{
    const struct tenant_state *ta = &r->tenants[a], *tb = &r->tenants[b];
    const struct queued_job *ja = &r->order[ta->next], *jb = &r->order[tb->next];
    if (ja->neg_priority != jb->neg_priority)
        return ja->neg_priority < jb->neg_priority;
    if (ta->share != tb->share)
        return ta->share < tb->share;
    if (ta->running != tb->running)
        return ta->running < tb->running;
    if (ja->runnable_at_ms != jb->runnable_at_ms)
        return ja->runnable_at_ms < jb->runnable_at_ms;
    return ja->index < jb->index;
}

static void heap_push(struct run *r, int32_t tenant)
{
    int32_t i = r->heap_size++;
    while (i > 0) {
        int32_t parent = (i - 1) / 2;
        if (!tenant_before(r, tenant, r->heap[parent]))
            break;
        r->heap[i] = r->heap[parent];
        i = parent;
    }
    r->heap[i] = tenant;
}

static int32_t heap_pop(struct run *r)
{
    int32_t top = r->heap[0];
    int32_t last = r->heap[--r->heap_size];
    int32_t i = 0;
    for (;;) {
        int32_t child = 2 * i + 1;
        if (child >= r->heap_size)
            break;
        if (child + 1 < r->heap_size && tenant_before(r, r->heap[child + 1], r->heap[child]))
            child++;
        if (!tenant_before(r, r->heap[child], last))
            break;
        r->heap[i] = r->heap[child];
        i = child;
    }
    if (r->heap_size > 0)
        r->heap[i] = last;
    return top;
}

/* The number of bits needed to write `value`: 0 for 0. */
static int bit_length(uint64_t value)
{
    int bits = 0;
    while (bits < 64 && (value >> bits) != 0)
        bits++;
    return bits;
}

static uint64_t low_bits(int bits)
{
    return bits >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << bits) - 1;
}

static uint64_t shift_left(uint64_t value, int bits)
{
    return bits >= 64 ? 0 : value << bits;
}

/* Sort keys[0 .. count) by their bits from `low` up to `high` (exclusive) with an
 * LSD radix sort, using `spare` (room for count keys). The sort is stable, so keys
 * equal in those bits keep their order: a caller that passes keys in ascending
 * order of their low bits need not sort on them. Byte digits keep the counts and
 * the 256 output streams of a pass within the L1 cache; 11-bit digits were
 * measured no faster on 100,000 keys. Returns the array that contains the sorted
 * keys: `keys` or `spare`. */
#define RADIX_BITS 8
static uint64_t *radix_sort_keys(uint64_t *keys, uint64_t *spare, int32_t count, int low, int high)
{
    uint64_t *from = keys, *to = spare;
    size_t counts[(size_t)1 << RADIX_BITS];
    for (int shift = low; shift < high && count > 0; shift += RADIX_BITS) {
        /* The last digit stops at `high`: the bits above it are not sorted on. */
        const uint64_t digit_mask = low_bits(high - shift < RADIX_BITS ? high - shift : RADIX_BITS);
        memset(counts, 0, sizeof counts);
        for (int32_t p = 0; p < count; p++)
            counts[(from[p] >> shift) & digit_mask]++;
        if (counts[(from[0] >> shift) & digit_mask] == (size_t)count)
            continue;  /* every key has the same digit here */
        size_t total = 0;
        for (size_t digit = 0; digit <= digit_mask; digit++) {
            size_t digit_count = counts[digit];
            counts[digit] = total;
            total += digit_count;
        }
        for (int32_t p = 0; p < count; p++)
            to[counts[(from[p] >> shift) & digit_mask]++] = from[p];
        uint64_t *swap = from;
        from = to;
        to = swap;
    }
    return from;
}

/* Ranges of the fields of the queue's sort keys, from queue_init(). */
struct key_ranges {
    int64_t min_priority;         /* of neg_priority */
    int64_t max_priority;
    int64_t min_runnable;
    int64_t max_runnable;
};

/* Fill r->order with the jobs in queued_before() order, by a radix sort of one
 * 64-bit key per job: tenant, priority and runnable time (each minus its minimum)
 * and index, from the high bits down. This avoids the mispredicted branches of
 * comparing random keys. Returns 1 when sorted (and sets r->layout), and 0 when
 * the fields need more than 64 bits together (r->order unchanged). Needs
 * buffers->neg_priority filled and room for 2 * count keys. */
static int radix_sort_queue(struct run *r, int32_t count, int32_t tenant_count,
                            const struct key_ranges *ranges)
{
    const struct sched_jobs *jobs = r->jobs;
    const int64_t *neg_priority = r->cluster->buffers->neg_priority;
    int64_t min_priority = ranges->min_priority, min_runnable = ranges->min_runnable;
    int index_bits = bit_length((uint64_t)count - 1);
    int runnable_bits = bit_length((uint64_t)ranges->max_runnable - (uint64_t)min_runnable);
    int priority_bits = bit_length((uint64_t)ranges->max_priority - (uint64_t)min_priority);
    int tenant_bits = bit_length((uint64_t)tenant_count - 1);
    int runnable_shift = index_bits;
    int priority_shift = runnable_shift + runnable_bits;
    int tenant_shift = priority_shift + priority_bits;
    if (count < 2 || tenant_shift + tenant_bits > 64)
        return 0;
    /* finish_frozen() needs the top bit of its keys free, which take the place of
     * the runnable time's bits in these. */
    int tail_usable = tenant_shift - runnable_bits + tenant_bits < 64;

    uint64_t *keys = r->cluster->buffers->keys;
    for (int32_t j = 0; j < count; j++)
        keys[j] = shift_left((uint64_t)jobs->tenant[j], tenant_shift)
                  | shift_left((uint64_t)neg_priority[j] - (uint64_t)min_priority, priority_shift)
                  | shift_left((uint64_t)jobs->runnable_at_ms[j] - (uint64_t)min_runnable,
                               runnable_shift)
                  | (uint64_t)j;

    /* The keys come in index order, so the index bits need no pass. The first
     * passes order the jobs by priority and runnable time across tenants, an order
     * that finish_frozen() starts from; the tenant passes follow. */
    uint64_t *sorted = radix_sort_keys(keys, keys + count, count, index_bits, tenant_shift);
    int32_t *by_priority = r->cluster->buffers->by_priority;
    for (int32_t p = 0; p < count; p++)
        by_priority[p] = (int32_t)(sorted[p] & low_bits(index_bits));
    sorted = radix_sort_keys(sorted, sorted == keys ? keys + count : keys, count, tenant_shift,
                             tenant_shift + tenant_bits);

    for (int32_t p = 0; p < count; p++) {
        uint64_t key = sorted[p];
        r->order[p] = (struct queued_job){
            (int64_t)(((key >> priority_shift) & low_bits(priority_bits)) + (uint64_t)min_priority),
            (int64_t)(((key >> runnable_shift) & low_bits(runnable_bits)) + (uint64_t)min_runnable),
            tenant_bits ? (int32_t)(key >> tenant_shift) : 0,
            (int32_t)(key & low_bits(index_bits))};
    }
    r->layout = (struct key_layout){tail_usable, index_bits, priority_bits, min_priority};
    return 1;
}

/* Sort items[0 .. count) by queued_before() when radix_sort_queue() cannot: group
 * the jobs by tenant in one stable pass, then merge sort each tenant's range.
 * Returns 0 when out of memory. */
static int merge_sort_queue(struct queued_job *items, int32_t count, int32_t tenant_count)
{
    int32_t *starts = calloc((size_t)tenant_count + 1, sizeof *starts);
    struct queued_job *buffer = malloc(((size_t)count + 1) * sizeof *buffer);
    if (!starts || !buffer) {
        free(starts);
        free(buffer);
        return 0;
    }
    for (int32_t p = 0; p < count; p++)
        starts[items[p].tenant + 1]++;
    for (int32_t t = 0; t < tenant_count; t++)
        starts[t + 1] += starts[t];
    for (int32_t p = 0; p < count; p++)
        buffer[starts[items[p].tenant]++] = items[p];
    /* starts[t] is now where tenant t's range ends. */
    memcpy(items, buffer, (size_t)count * sizeof *items);
    for (int32_t t = 0, begin = 0; t < tenant_count; begin = starts[t], t++)
        sort_queue(items + begin, buffer + begin, starts[t] - begin);
    free(starts);
    free(buffer);
    return 1;
}

/* Make `array` hold at least `needed` items of `size` bytes, keeping none of its
 * contents, and update *capacity. Returns the array, or NULL (with the old array
 * freed and *capacity 0) when out of memory. */
static void *reserve(void *array, size_t *capacity, size_t needed, size_t size)
{
    if (array && needed <= *capacity)
        return array;
    size_t grown = *capacity > needed / 2 ? 2 * *capacity : needed;
    grown = grown > 16 ? grown : 16;    /* never 0: malloc(0) may return NULL */
    free(array);
    *capacity = 0;
    if (grown > SIZE_MAX / size / 2)
        return NULL;
    void *fresh = malloc(grown * size);
    if (fresh)
        *capacity = grown;
    return fresh;
}

/* Point the run at the cluster's buffers, grown for this call. Returns 0 when out
 * of memory. */
static int buffers_init(struct run *r, const struct sched_tenants *tenants)
{
    struct run_buffers *b = r->cluster->buffers;
    size_t jobs = (size_t)r->jobs->count, tenant_count = (size_t)tenants->count;
    size_t classes = (size_t)r->classes->count;

    b->order = reserve(b->order, &b->order_capacity, jobs, sizeof *b->order);
    b->keys = reserve(b->keys, &b->keys_capacity, 2 * jobs, sizeof *b->keys);
    b->by_priority = reserve(b->by_priority, &b->by_priority_capacity, jobs,
                             sizeof *b->by_priority);
    b->neg_priority = reserve(b->neg_priority, &b->neg_priority_capacity, jobs,
                              sizeof *b->neg_priority);
    b->tenants = reserve(b->tenants, &b->tenants_capacity, tenant_count, sizeof *b->tenants);
    b->heap = reserve(b->heap, &b->heap_capacity, tenant_count, sizeof *b->heap);
    b->sets = reserve(b->sets, &b->sets_capacity, classes, sizeof *b->sets);
    /* The shape tables are cleared on every call: one that grew large in an
     * earlier call would make every later call pay for clearing it. */
    if (!b->failed || b->failed_capacity > 1024) {
        free(b->failed);
        b->failed_capacity = 64;
        b->failed = malloc(b->failed_capacity * sizeof *b->failed);
    }
    if (!b->fits || b->fits_capacity > 1024) {
        free(b->fits);
        b->fits_capacity = 64;
        b->fits = malloc(b->fits_capacity * sizeof *b->fits);
    }
    if (!b->order || !b->keys || !b->by_priority || !b->neg_priority || !b->tenants || !b->heap
        || !b->sets || !b->failed || !b->fits)
        return 0;

    memset(b->tenants, 0, tenant_count * sizeof *b->tenants);
    memset(b->sets, 0, classes * sizeof *b->sets);
    memset(b->failed, 0, b->failed_capacity * sizeof *b->failed);
    memset(b->fits, 0, b->fits_capacity * sizeof *b->fits);
    r->tenants = b->tenants;
    r->heap = b->heap;
    r->order = b->order;
    r->sets = b->sets;
    r->failed = (struct shape_set){b->failed, b->failed_capacity, 0};
    r->fits = (struct shape_set){b->fits, b->fits_capacity, 0};
    r->undo = b->undo;
    r->undo_capacity = b->undo_capacity;
    return 1;
}

/* Hand the arrays that the run grew back to the cluster's buffers. */
static void buffers_keep(struct run *r)
{
    struct run_buffers *b = r->cluster->buffers;
    if (r->failed.slots) {
        b->failed = r->failed.slots;
        b->failed_capacity = r->failed.capacity;
    }
    if (r->fits.slots) {
        b->fits = r->fits.slots;
        b->fits_capacity = r->fits.capacity;
    }
    b->undo = r->undo;
    b->undo_capacity = r->undo_capacity;
}

static int queue_init(struct run *r, const struct sched_tenants *tenants)
{
    const struct sched_jobs *jobs = r->jobs;
    const struct sched_options *o = r->options;
    int32_t count = jobs->count;

    /* One pass in index order: effective priorities, the ranges of the sort keys,
     * and the smallest request. A position of -1 marks a job not decided yet, for
     * finish_frozen(). */
    int aging = o->now_ms != SCHED_NO_AGING && o->aging_interval_ms > 0;
    uint64_t interval = aging ? (uint64_t)o->aging_interval_ms : 1;
    uint64_t reciprocal = UINT64_MAX / interval;
    int64_t *neg_priority = r->cluster->buffers->neg_priority;
    struct key_ranges ranges = {INT64_MAX, INT64_MIN, INT64_MAX, INT64_MIN};
    r->min_cpu = r->min_memory = SCHED_MAX_QUANTITY;
    for (int32_t j = 0; j < count; j++) {
        int64_t boost = 0, runnable = jobs->runnable_at_ms[j];
        if (aging && o->now_ms > runnable)
            boost = (int64_t)divide_by(o->now_ms - runnable, interval, reciprocal);
        int64_t priority = -(jobs->priority[j] + boost);
        neg_priority[j] = priority;
        r->result->position[j] = -1;
        ranges.min_priority = priority < ranges.min_priority ? priority : ranges.min_priority;
        ranges.max_priority = priority > ranges.max_priority ? priority : ranges.max_priority;
        ranges.min_runnable = runnable < ranges.min_runnable ? runnable : ranges.min_runnable;
        ranges.max_runnable = runnable > ranges.max_runnable ? runnable : ranges.max_runnable;
        r->min_cpu = jobs->cpu[j] < r->min_cpu ? jobs->cpu[j] : r->min_cpu;
        r->min_memory = jobs->memory[j] < r->min_memory ? jobs->memory[j] : r->min_memory;
    }

    if (!radix_sort_queue(r, count, tenants->count, &ranges)) {
        for (int32_t j = 0; j < count; j++)
            r->order[j] = (struct queued_job){neg_priority[j], jobs->runnable_at_ms[j],
                                              jobs->tenant[j], j};
        if (!merge_sort_queue(r->order, count, tenants->count))
            return 0;
    }

    for (int32_t t = 0; t < tenants->count; t++) {
        struct tenant_state *s = &r->tenants[t];
        s->cpu = (u128)tenants->cpu_allocated[t];
        s->memory = (u128)tenants->memory_allocated[t];
        s->running = tenants->running_jobs[t];
        s->limit = tenants->running_limit[t];
        s->share = tenant_share(r->cluster, s);
    }
    /* The order is grouped by tenant: record each tenant's range. */
    for (int32_t p = count - 1; p >= 0; p--)
        r->tenants[r->order[p].tenant].next = p;
    for (int32_t p = 0; p < count; p++)
        r->tenants[r->order[p].tenant].end = p + 1;
    for (int32_t t = 0; t < tenants->count; t++)
        if (r->tenants[t].next < r->tenants[t].end)
            heap_push(r, t);
    return 1;
}

/* ---- deciding one job ----------------------------------------------------------------------- */

struct scan {
    int32_t best;                 /* slot, or -1 */
    int capacity_elsewhere;       /* a slot (not the reserved one) has the free capacity */
    int fits_reserved;            /* the reserved slot would take the job */
};

/* The largest key (see set_score) over slots [low, high) that have the free
 * capacity and their bit set in `mask` (bit 0 is slot `low`), or 0 if none.
 * Branch-free, because whether a slot fits is close to random from one slot to
 * the next. */
static uint64_t best_key_in(const uint64_t *keys, const int64_t *free_cpu, const int64_t *free_memory,
                            int32_t low, int32_t high, int64_t cpu, int64_t memory, uint64_t mask)
{
    uint64_t best = 0;
    for (int32_t a = low; a < high; a++) {
        uint64_t fits = (uint64_t)((free_cpu[a] >= cpu) & (free_memory[a] >= memory))
                        & (mask >> (a - low));
        uint64_t key = keys[a] & ((uint64_t)0 - (fits & 1));
        best = key > best ? key : best;
    }
    return best;
}

#if HAVE_AVX2_SCAN
/* best_key_in() four slots at a time: on 1,000 nodes and more the scan is most of
 * a decision. Keys are below 2**63 (a score of at most 2 * PPM above 32 bits) and
 * free capacities are not negative, so signed comparisons order them. */
__attribute__((target("avx2")))
static uint64_t best_key_in_avx2(const uint64_t *keys, const int64_t *free_cpu,
                                 const int64_t *free_memory, int32_t low, int32_t high,
                                 int64_t cpu, int64_t memory, uint64_t mask)
{
    int32_t count = high - low;
    /* free >= request is free > request - 1, and a request is at least 0. */
    const __m256i cpu_floor = _mm256_set1_epi64x(cpu - 1);
    const __m256i memory_floor = _mm256_set1_epi64x(memory - 1);
    const __m256i one = _mm256_set1_epi64x(1);
    const __m256i four = _mm256_set1_epi64x(4);
    __m256i bits = _mm256_set1_epi64x((long long)mask);
    __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);   /* the bit of `mask` for each lane */
    __m256i best = _mm256_setzero_si256();
    int32_t i = 0;
    for (; i + 4 <= count; i += 4) {
        __m256i free_c = _mm256_loadu_si256((const __m256i *)(free_cpu + low + i));
        __m256i free_m = _mm256_loadu_si256((const __m256i *)(free_memory + low + i));
        __m256i key = _mm256_loadu_si256((const __m256i *)(keys + low + i));
        __m256i labelled = _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_srlv_epi64(bits, lane), one), one);
        __m256i fits = _mm256_and_si256(_mm256_cmpgt_epi64(free_c, cpu_floor),
                                        _mm256_cmpgt_epi64(free_m, memory_floor));
        key = _mm256_and_si256(key, _mm256_and_si256(fits, labelled));
        best = _mm256_blendv_epi8(best, key, _mm256_cmpgt_epi64(key, best));
        lane = _mm256_add_epi64(lane, four);
    }
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, best);
    uint64_t result = lanes[0];
    for (int k = 1; k < 4; k++)
        result = lanes[k] > result ? lanes[k] : result;
    if (i < count) {
        uint64_t rest = best_key_in(keys, free_cpu, free_memory, low + i, high, cpu, memory,
                                    mask >> i);
        result = rest > result ? rest : result;
    }
    return result;
}
#endif

/* Return best_key_in() over the slots [low, high) of one block, with AVX2 where the
 * cluster uses it. */
static uint64_t block_best_key(const struct sched_cluster *c, const uint64_t *keys,
                               int32_t low, int32_t high, int64_t cpu, int64_t memory,
                               uint64_t mask)
{
    const struct pool *p = &c->pool;
#if HAVE_AVX2_SCAN
    if (c->avx2_scan)
        return best_key_in_avx2(keys, p->free_cpu, p->free_memory, low, high, cpu, memory, mask);
#endif
    return best_key_in(keys, p->free_cpu, p->free_memory, low, high, cpu, memory, mask);
}

/* The first slot in [low, high) with the free capacity and its bit set in `mask`, or -1. */
static int32_t first_fit_in(const struct pool *p, int32_t low, int32_t high, int64_t cpu,
                            int64_t memory, uint64_t mask)
{
    for (int32_t a = low; a < high; a++)
        if (((mask >> (a - low)) & 1) && p->free_cpu[a] >= cpu && p->free_memory[a] >= memory)
            return a;
    return -1;
}

/* Whether a slot other than the reserved one has the free capacity, labels aside. */
static int capacity_anywhere(const struct run *r, int64_t cpu, int64_t memory);

/* Whether a slot of block b other than the reserved one has the free capacity for
 * the smallest request of the call (its least CPU and its least memory). False
 * means that none of them can take any job of the call. */
static int block_roomy(const struct run *r, int32_t b)
{
    const struct blocks *blocks = &r->cluster->blocks;
    if (blocks->free_cpu[b] < r->min_cpu || blocks->free_memory[b] < r->min_memory)
        return 0;
    /* The maxima of the summary may come from different slots: look at each. */
    const struct pool *p = &r->cluster->pool;
    int32_t high = (b + 1) * BLOCK < p->count ? (b + 1) * BLOCK : p->count;
    for (int32_t a = b * BLOCK; a < high; a++)
        if (a != r->reserved && p->free_cpu[a] >= r->min_cpu && p->free_memory[a] >= r->min_memory)
            return 1;
    return 0;
}

/* Find the slot for a job by policy; ties go to the lowest slot, which is the
 * lowest node index. `masks` is mask_of() of the job's label class. */
static struct scan scan_pool(const struct run *r, int64_t cpu, int64_t memory, const uint64_t *masks)
{
    const struct pool *p = &r->cluster->pool;
    const struct blocks *blocks = &r->cluster->blocks;
    int policy = r->options->policy;
    const uint64_t *keys = policy == SCHED_POLICY_SPREAD ? p->spread_key : p->binpack_key;
    int32_t reserved = r->reserved;
    struct scan s = {-1, 0, 0};
    uint64_t best_key = 0;
    int64_t best_score = 0;

    for (int32_t b = 0; b < blocks->count; b++) {
        if (blocks->free_cpu[b] < cpu || blocks->free_memory[b] < memory)
            continue;
        /* A block that cannot beat the best slot so far is skipped; on a tie the
         * earlier slot wins anyway. */
        if (best_key && (policy == SCHED_POLICY_SPREAD ? blocks->min_score[b] >= best_score
                                                       : blocks->max_score[b] <= best_score))
            continue;
        int32_t low = b * BLOCK, high = low + BLOCK < p->count ? low + BLOCK : p->count;
        uint64_t mask = masks ? masks[b] : ~(uint64_t)0;
        if (reserved >= low && reserved < high)
            mask &= ~((uint64_t)1 << (reserved - low));
        if (!mask)
            continue;
        if (policy == SCHED_POLICY_FIFO) {
            s.best = first_fit_in(p, low, high, cpu, memory, mask);
            if (s.best >= 0)
                return s;
            continue;
        }
        uint64_t key = block_best_key(r->cluster, keys, low, high, cpu, memory, mask);
        if (key > best_key) {
            best_key = key;
            s.best = (int32_t)(UINT32_MAX - (uint32_t)key);
            best_score = p->score[s.best];
        }
    }
    if (s.best < 0) {
        s.fits_reserved = reserved >= 0 && p->free_cpu[reserved] >= cpu
                          && p->free_memory[reserved] >= memory
                          && (!masks || ((masks[reserved / BLOCK] >> (reserved % BLOCK)) & 1));
        /* Nothing outside the reservation has the capacity and the labels, so any
         * slot there with the capacity lacks the labels. */
        s.capacity_elsewhere = masks && capacity_anywhere(r, cpu, memory);
    }
    return s;
}

/* Whether a slot other than the reserved one has the free capacity, labels aside. */
static int capacity_anywhere(const struct run *r, int64_t cpu, int64_t memory)
{
    const struct pool *p = &r->cluster->pool;
    const struct blocks *blocks = &r->cluster->blocks;
    for (int32_t b = 0; b < blocks->count; b++) {
        if (blocks->free_cpu[b] < cpu || blocks->free_memory[b] < memory)
            continue;
        int32_t high = (b + 1) * BLOCK < p->count ? (b + 1) * BLOCK : p->count;
        for (int32_t a = b * BLOCK; a < high; a++)
            if (p->free_cpu[a] >= cpu && p->free_memory[a] >= memory && a != r->reserved)
                return 1;
    }
    return 0;
}

/* The slot held for the head: among slots with its labels whose usable capacity
 * holds it, the one missing the least (CPU ppm + memory ppm of usable capacity). */
static int32_t choose_reservation(const struct run *r, int64_t cpu, int64_t memory, int32_t label_class)
{
    const struct pool *p = &r->cluster->pool;
    int32_t best = -1;
    int64_t best_shortfall = 0;
    for (int32_t a = 0; a < p->count; a++) {
        if (p->cpu_usable[a] < cpu || p->memory_usable[a] < memory || !slot_matches(r, a, label_class))
            continue;
        int64_t shortfall = shortfall_ppm(cpu, p->free_cpu[a], p->cpu_usable[a])
                            + shortfall_ppm(memory, p->free_memory[a], p->memory_usable[a]);
        if (best < 0 || shortfall < best_shortfall) {
            best = a;
            best_shortfall = shortfall;
        }
    }
    return best;
}

/* Returns 0 when out of memory. */
static int assign(struct run *r, int32_t j, int64_t cpu, int64_t memory, int32_t a,
                  struct tenant_state *t)
{
    struct sched_cluster *c = r->cluster;
    struct pool *p = &c->pool;

    if (r->undo_count == r->undo_capacity) {
        size_t capacity = r->undo_capacity ? 2 * r->undo_capacity : 64;
        struct undo *grown = realloc(r->undo, capacity * sizeof *grown);
        if (!grown)
            return 0;
        r->undo = grown;
        r->undo_capacity = capacity;
    }
    r->undo[r->undo_count++] = (struct undo){a, p->free_cpu[a], p->free_memory[a], p->score[a],
                                             p->cpu_allocated[a], p->memory_allocated[a]};

    int was_roomy = block_roomy(r, a / BLOCK);
    int64_t old_free_cpu = p->free_cpu[a], old_free_memory = p->free_memory[a];
    int64_t old_score = p->score[a];
    /* A slot takes a job only when its free capacity holds it, so the sums stay
     * within the usable capacity (or at an over-allocation the input gave). */
    p->cpu_allocated[a] += cpu;
    p->memory_allocated[a] += memory;
    p->free_cpu[a] -= cpu;
    p->free_memory[a] -= memory;
    set_score(p, a, share_ppm(p->cpu_allocated[a], p->cpu_usable[a])
                    + share_ppm(p->memory_allocated[a], p->memory_usable[a]));
    block_update(c, a, old_free_cpu, old_free_memory, old_score);
    /* Free capacity only shrinks within a call, so a block stays short of room. */
    if (was_roomy && !block_roomy(r, a / BLOCK) && --r->roomy_blocks == 0)
        r->frozen = 1;

    t->cpu += (u128)cpu;
    t->memory += (u128)memory;
    t->running++;
    t->share = tenant_share(c, t);

    r->result->node[j] = p->node[a];
    r->result->outcome[j] = SCHED_OUTCOME_ASSIGNED;
    r->result->reason[j] = SCHED_REASON_NONE;
    if (r->result->assigned)
        r->result->assigned[r->result->assigned_count] = j;
    r->result->assigned_count++;
    return 1;
}

/* Put the slots that placements changed back as they were. */
static void restore(struct run *r)
{
    struct sched_cluster *c = r->cluster;
    struct pool *p = &c->pool;
    for (size_t i = r->undo_count; i-- > 0;) {
        const struct undo *u = &r->undo[i];
        p->free_cpu[u->slot] = u->free_cpu;
        p->free_memory[u->slot] = u->free_memory;
        set_score(p, u->slot, u->score);
        p->cpu_allocated[u->slot] = u->cpu_allocated;
        p->memory_allocated[u->slot] = u->memory_allocated;
    }
    /* Placements repeat blocks: past one entry per block, refreshing all is cheaper. */
    if (r->undo_count >= (size_t)c->blocks.count) {
        for (int32_t b = 0; b < c->blocks.count; b++)
            block_refresh(c, b);
    } else {
        for (size_t i = 0; i < r->undo_count; i++)
            block_refresh(c, r->undo[i].slot / BLOCK);
    }
    r->undo_count = 0;
}

static void set_result(struct run *r, int32_t j, uint8_t outcome, uint8_t reason)
{
    r->result->node[j] = -1;
    r->result->outcome[j] = outcome;
    r->result->reason[j] = reason;
}

/* Whether slot a has the free capacity for a job and its labels (`masks` is
 * mask_of() of the job's label class), and is not the reserved slot. */
static int slot_takes(const struct run *r, int32_t a, int64_t cpu, int64_t memory,
                      const uint64_t *masks)
{
    const struct pool *p = &r->cluster->pool;
    return a != r->reserved && p->free_cpu[a] >= cpu && p->free_memory[a] >= memory
           && (!masks || ((masks[a / BLOCK] >> (a % BLOCK)) & 1));
}

/* The slot that scan_pool() would return for a shape, worked out from the slot it
 * returned last time (fit->slot) and the placements since (the undo log from
 * fit->seen on), or -1 when only a new scan can tell. A placement only takes free
 * capacity from a slot and raises its score, so a slot that did not take the
 * shape still does not, and:
 * - fifo: the earlier slots still do not take it, so the slot stays first while
 *   it still takes the shape;
 * - binpack: a slot that no placement changed keeps its key, so the best is the
 *   old slot or a changed slot that takes the shape now, whichever has the
 *   largest key, provided the old slot still takes it;
 * - spread: placements lower keys, so the old slot stays best unless a placement
 *   changed it.
 * Replaying a long log costs more than a scan, so beyond r->replay_limit entries
 * it gives up. Choosing the reserved slot clears the table (see decide()). */
static int32_t cached_best(struct run *r, struct shape *fit, int64_t cpu, int64_t memory,
                           const uint64_t *masks)
{
    int32_t best = fit->slot;
    int policy = r->options->policy;
    if (!slot_takes(r, best, cpu, memory, masks))
        return -1;
    if (policy != SCHED_POLICY_FIFO) {
        if (r->undo_count - fit->seen > r->replay_limit)
            return -1;
        const uint64_t *keys = r->cluster->pool.binpack_key;
        for (size_t i = fit->seen; i < r->undo_count; i++) {
            int32_t a = r->undo[i].slot;
            if (policy == SCHED_POLICY_SPREAD) {
                if (a == fit->slot)
                    return -1;
            } else if (a != best && keys[a] > keys[best] && slot_takes(r, a, cpu, memory, masks)) {
                best = a;
            }
        }
    }
    fit->slot = best;
    fit->seen = r->undo_count;
    return best;
}

/* Make the job that just waited for capacity the head, unless there is one. */
static void note_head(struct run *r, int64_t cpu, int64_t memory, int32_t label_class)
{
    /* The first job that waits for capacity is the head: strict order stops here,
     * backfill keeps going but reserves one node for the head. The node is chosen
     * when the next job needs it; nothing changes the slots before then. */
    if (r->head_seen)
        return;
    r->head_seen = 1;
    if (r->options->backfill) {
        r->reservation_pending = 1;
        r->head_cpu = cpu;
        r->head_memory = memory;
        r->head_class = label_class;
    } else {
        r->queue_blocked = 1;
    }
}

/* Set the outcome and reason of job j once the call is frozen. No slot but the
 * reserved one has the free capacity for any job, so a scan would find no node and
 * no capacity elsewhere: the reasons follow from the fronts and the reserved slot.
 * A call that froze before its head reserved a slot has no free capacity anywhere,
 * so it leaves r->reserved at -1. Returns 1 when the job waits for capacity (and
 * so becomes the head if there is none yet), 0 otherwise, -1 when out of memory. */
static int frozen_result(struct run *r, int32_t j, int64_t cpu, int64_t memory,
                         int32_t label_class, const struct tenant_state *t)
{
    const struct label_set *set = r->sets[label_class];
    const struct fronts *f = set && set->fronts_built ? &set->fronts : fronts_of(r, label_class);
    if (!f)
        return -1;
    if (!frontier_holds(&f->all, cpu, memory)) {
        set_result(r, j, SCHED_OUTCOME_NEVER_FITS, never_fits_reason(r, &f->all, cpu, memory));
    } else if (t->limit != SCHED_NO_LIMIT && t->running >= t->limit) {
        set_result(r, j, SCHED_OUTCOME_WAITS, SCHED_REASON_TENANT_LIMIT);
    } else if (r->queue_blocked) {
        set_result(r, j, SCHED_OUTCOME_WAITS, SCHED_REASON_QUEUE_BLOCKED);
    } else if (!frontier_holds(&f->available, cpu, memory)) {
        set_result(r, j, SCHED_OUTCOME_WAITS, SCHED_REASON_NODE_UNAVAILABLE);
    } else if (r->reserved >= 0 && r->cluster->pool.free_cpu[r->reserved] >= cpu
               && r->cluster->pool.free_memory[r->reserved] >= memory
               && slot_matches(r, r->reserved, label_class)) {
        set_result(r, j, SCHED_OUTCOME_WAITS, SCHED_REASON_RESERVED);
    } else {
        set_result(r, j, SCHED_OUTCOME_WAITS, SCHED_REASON_CAPACITY);
        return 1;
    }
    return 0;
}

/* Decide job j once the call is frozen (see frozen_result()). Returns 0 when out of memory. */
static int decide_frozen(struct run *r, int32_t j, int64_t cpu, int64_t memory,
                         int32_t label_class, const struct tenant_state *t)
{
    int waits = frozen_result(r, j, cpu, memory, label_class, t);
    if (waits > 0)
        note_head(r, cpu, memory, label_class);
    return waits >= 0;
}

/* Decide job j of tenant `tenant`. The checks run in the order of the reasons'
 * precedence, but the fronts are looked at only when needed: a job that gets a
 * node fits some node. */
static int decide(struct run *r, int32_t j, int32_t tenant)
{
    int64_t cpu = r->jobs->cpu[j], memory = r->jobs->memory[j];
    int32_t label_class = r->jobs->label_class[j];
    struct tenant_state *t = &r->tenants[tenant];
    if (r->frozen)
        return decide_frozen(r, j, cpu, memory, label_class, t);
    int limited = t->limit != SCHED_NO_LIMIT && t->running >= t->limit;

    const struct fronts *f = fronts_known(r, label_class);
    if (f || limited || r->queue_blocked) {
        if (!f && !(f = fronts_of(r, label_class)))
            return 0;
        if (!frontier_holds(&f->all, cpu, memory)) {
            set_result(r, j, SCHED_OUTCOME_NEVER_FITS, never_fits_reason(r, &f->all, cpu, memory));
            return 1;
        }
        if (limited || r->queue_blocked) {
            set_result(r, j, SCHED_OUTCOME_WAITS,
                       limited ? SCHED_REASON_TENANT_LIMIT : SCHED_REASON_QUEUE_BLOCKED);
            return 1;
        }
        if (!frontier_holds(&f->available, cpu, memory)) {
            set_result(r, j, SCHED_OUTCOME_WAITS, SCHED_REASON_NODE_UNAVAILABLE);
            return 1;
        }
    }

    if (r->reservation_pending) {
        int32_t chosen = choose_reservation(r, r->head_cpu, r->head_memory, r->head_class);
        int was_roomy = chosen >= 0 && block_roomy(r, chosen / BLOCK);
        r->reserved = chosen;
        r->reservation_pending = 0;
        shape_clear(&r->fits);  /* the reserved slot no longer takes jobs */
        if (was_roomy && !block_roomy(r, chosen / BLOCK) && --r->roomy_blocks == 0)
            r->frozen = 1;
        if (r->frozen)
            return decide_frozen(r, j, cpu, memory, label_class, t);
    }

    struct scan s;
    if (!shape_failed(&r->failed, cpu, memory, label_class)) {
        int no_memory;
        const uint64_t *masks = mask_of(r, label_class, &no_memory);
        if (no_memory)
            return 0;
        struct shape *fit = shape_find(&r->fits, cpu, memory, label_class);
        int32_t best = fit ? cached_best(r, fit, cpu, memory, masks) : -1;
        if (best >= 0)
            return assign(r, j, cpu, memory, best, t);
        s = scan_pool(r, cpu, memory, masks);
        if (s.best >= 0) {
            if (!fit && !(fit = shape_add(&r->fits, cpu, memory, label_class)))
                return 0;
            fit->slot = s.best;
            fit->seen = r->undo_count;
            return assign(r, j, cpu, memory, s.best, t);
        }
        if (!shape_add(&r->failed, cpu, memory, label_class))
            return 0;
        /* No slot outside the reservation has this free capacity at all. */
        if (!s.capacity_elsewhere && !shape_add(&r->failed, cpu, memory, 0))
            return 0;
    } else {
        const struct pool *p = &r->cluster->pool;
        int32_t a = r->reserved;
        s.best = -1;
        s.fits_reserved = a >= 0 && p->free_cpu[a] >= cpu && p->free_memory[a] >= memory
                          && slot_matches(r, a, label_class);
        s.capacity_elsewhere = 0;
        if (class_ids(r, label_class) != class_ids_end(r, label_class)
            && !shape_failed(&r->failed, cpu, memory, 0)) {
            s.capacity_elsewhere = capacity_anywhere(r, cpu, memory);
            if (!s.capacity_elsewhere && !shape_add(&r->failed, cpu, memory, 0))
                return 0;
        }
    }

    if (!f) {
        if (!(f = fronts_of(r, label_class)))
            return 0;
        if (!frontier_holds(&f->all, cpu, memory)) {
            set_result(r, j, SCHED_OUTCOME_NEVER_FITS, never_fits_reason(r, &f->all, cpu, memory));
            return 1;
        }
        if (!frontier_holds(&f->available, cpu, memory)) {
            set_result(r, j, SCHED_OUTCOME_WAITS, SCHED_REASON_NODE_UNAVAILABLE);
            return 1;
        }
    }

    if (s.fits_reserved) {
        set_result(r, j, SCHED_OUTCOME_WAITS, SCHED_REASON_RESERVED);
        return 1;
    }
    set_result(r, j, SCHED_OUTCOME_WAITS,
               s.capacity_elsewhere ? SCHED_REASON_LABELS : SCHED_REASON_CAPACITY);
    note_head(r, cpu, memory, label_class);
    return 1;
}

/* ---- entry point --------------------------------------------------------------------------- */

/* Whether tenant a comes before tenant b when their next jobs tie on effective
 * priority: the smaller dominant share, then fewer running jobs. */
static int usage_before(const struct run *r, int32_t a, int32_t b)
{
    const struct tenant_state *ta = &r->tenants[a], *tb = &r->tenants[b];
    if (ta->share != tb->share)
        return ta->share < tb->share;
    return ta->running < tb->running;
}

/* Bottom-up merge sort of tenants[0 .. count) by usage_before(), using `buffer`. */
static void sort_tenants(const struct run *r, int32_t *tenants, int32_t *buffer, int32_t count)
{
    int32_t *from = tenants, *to = buffer;
    for (int32_t width = 1; width < count; width *= 2) {
        for (int32_t low = 0; low < count; low += 2 * width) {
            int32_t middle = low + width < count ? low + width : count;
            int32_t high = middle + width < count ? middle + width : count;
            int32_t i = low, k = middle, out = low;
            while (i < middle && k < high)
                to[out++] = usage_before(r, from[k], from[i]) ? from[k++] : from[i++];
            while (i < middle)
                to[out++] = from[i++];
            while (k < high)
                to[out++] = from[k++];
        }
        int32_t *swap = from;
        from = to;
        to = swap;
    }
    if (from != tenants)
        memcpy(tenants, from, (size_t)count * sizeof *tenants);
}

/* Decide the rest of the queue once the call is frozen, with one sort instead of a
 * heap operation per job. No tenant's share or running jobs change any more, so
 * the heap would pop the remaining jobs in the order of (effective priority,
 * tenant's rank by share and running jobs, runnable time, index). tenant_before()
 * compares exactly these, and within a tenant they agree with the tenant's own
 * order. Only the head can still change a reason, and only in strict order.
 * Needs r->layout.usable. Returns 0 when out of memory. */
static int finish_frozen(struct run *r, int32_t *position)
{
    const struct key_layout *l = &r->layout;
    const struct sched_jobs *jobs = r->jobs;
    struct sched_result *result = r->result;
    int64_t started = result->latency_ns ? monotonic_ns() : 0;
    int32_t tenant_count = r->heap_size;

    int32_t *by_usage = malloc(2 * ((size_t)tenant_count + 1) * sizeof *by_usage);
    if (!by_usage)
        return 0;
    memcpy(by_usage, r->heap, (size_t)tenant_count * sizeof *by_usage);
    sort_tenants(r, by_usage, by_usage + tenant_count, tenant_count);
    int32_t rank = 0;
    for (int32_t i = 0; i < tenant_count; i++) {
        if (i > 0 && usage_before(r, by_usage[i - 1], by_usage[i]))
            rank++;
        r->tenants[by_usage[i]].rank = rank;
    }
    free(by_usage);
    for (int32_t i = 0; i < tenant_count; i++)
        r->tenants[r->heap[i]].next = r->tenants[r->heap[i]].end;
    r->heap_size = 0;

    /* Pass 1, in index order so that every column is read in sequence: the result
     * of each job not decided yet (those without a position), as if the head were
     * already known, and its key for the sort. rank is below the tenant count, so
     * the key is shorter than the first sort's, and radix_sort_queue() made sure
     * that it leaves the top bit 0: UINT64_MAX marks the jobs decided already. The
     * keys take the place of neg_priority, which an unsigned lvalue may access. */
    int rank_shift = l->index_bits;
    int priority_shift = rank_shift + bit_length((uint64_t)rank);
    uint64_t *job_key = (uint64_t *)r->cluster->buffers->neg_priority;
    for (int32_t j = 0; j < jobs->count; j++) {
        if (result->position[j] >= 0) {
            job_key[j] = UINT64_MAX;
            continue;
        }
        const struct tenant_state *t = &r->tenants[jobs->tenant[j]];
        job_key[j] = shift_left(job_key[j] - (uint64_t)l->min_priority, priority_shift)
                     | shift_left((uint64_t)t->rank, rank_shift) | (uint64_t)j;
        if (frozen_result(r, j, jobs->cpu[j], jobs->memory[j], jobs->label_class[j], t) < 0)
            return 0;
    }

    /* Pass 2: the keys in the order of effective priority, runnable time and index
     * that radix_sort_queue() left in by_priority. A stable sort by priority and
     * rank then completes the order. */
    const int32_t *by_priority = r->cluster->buffers->by_priority;
    uint64_t *keys = r->cluster->buffers->keys;
    int32_t count = 0;
    for (int32_t p = 0; p < jobs->count; p++) {
        uint64_t key = job_key[by_priority[p]];
        if (key != UINT64_MAX)
            keys[count++] = key;
    }
    const uint64_t *sorted = radix_sort_keys(keys, keys + count, count, rank_shift,
                                             priority_shift + l->priority_bits);

    /* Pass 3: positions, and the head: the first job that waits for capacity. In
     * strict order it blocks the queue behind it, which turns the waits that
     * QUEUE_BLOCKED takes precedence over into QUEUE_BLOCKED. */
    uint64_t index_mask = low_bits(l->index_bits);
    int blocks_now = !r->head_seen && !r->options->backfill;
    for (int32_t i = 0; i < count; i++) {
        int32_t j = (int32_t)(sorted[i] & index_mask);
        result->position[j] = (*position)++;
        if (!r->head_seen) {
            if (result->reason[j] == SCHED_REASON_CAPACITY)
                note_head(r, jobs->cpu[j], jobs->memory[j], jobs->label_class[j]);
        } else if (blocks_now && (result->reason[j] == SCHED_REASON_CAPACITY
                                  || result->reason[j] == SCHED_REASON_NODE_UNAVAILABLE)) {
            result->reason[j] = SCHED_REASON_QUEUE_BLOCKED;
        }
    }

    /* In timed calls each job gets an equal part of the time. */
    if (result->latency_ns && count) {
        int64_t share = (monotonic_ns() - started) / count;
        for (int32_t i = 0; i < count; i++)
            result->latency_ns[sorted[i] & index_mask] = share;
    }
    return 1;
}

static void run_free(struct run *r)
{
    if (r->owned_sets) {
        for (int32_t k = 0; k < r->classes->count; k++)
            label_set_free(&r->owned_sets[k]);
        free(r->owned_sets);
    }
}

int sched_place(struct sched_cluster *cluster,
                const struct sched_label_classes *classes,
                const struct sched_tenants *tenants,
                const struct sched_jobs *jobs,
                const struct sched_options *options,
                struct sched_result *result)
{
    int rc = check_call(cluster, classes, tenants, jobs, options, result);
    if (rc != SCHED_OK)
        return rc;
    if (!cluster_enter(cluster))
        return SCHED_ERR_BUSY;

    struct run r;
    memset(&r, 0, sizeof r);
    r.cluster = cluster;
    r.classes = classes;
    r.jobs = jobs;
    r.options = options;
    r.result = result;
    r.reserved = -1;
    result->assigned_count = 0;

    rc = SCHED_ERR_NO_MEMORY;
    if (!buffers_init(&r, tenants) || !queue_init(&r, tenants))
        goto done;
    for (int32_t b = 0; b < cluster->blocks.count; b++)
        r.roomy_blocks += block_roomy(&r, b);
    /* A log entry costs a few times as much as one slot of a scan. */
    r.replay_limit = (size_t)cluster->pool.count / 4;
    r.frozen = r.roomy_blocks == 0;

    int timed = result->latency_ns != NULL;
    int32_t position = 0;
    while (r.heap_size > 0) {
        if (r.frozen && r.layout.usable) {
            if (!finish_frozen(&r, &position))
                goto done;
            break;
        }
        int64_t started = timed ? monotonic_ns() : 0;
        int32_t tenant = heap_pop(&r);
        int32_t p = r.tenants[tenant].next++;
        int32_t j = r.order[p].index;
        result->position[j] = position++;
        if (!decide(&r, j, tenant))
            goto done;
        if (r.tenants[tenant].next < r.tenants[tenant].end)
            heap_push(&r, tenant);
        if (timed)
            result->latency_ns[j] = monotonic_ns() - started;
    }
    rc = SCHED_OK;

done:
    restore(&r);
    buffers_keep(&r);
    run_free(&r);
    cluster_leave(cluster);
    return rc;
}

int sched_place_packed(struct sched_cluster *cluster, const char *packed, int64_t size,
                       const struct sched_options *options, struct sched_result *result)
{
    enum { HEADER = 4 };
    if (result == NULL)
        return SCHED_ERR_RESULT;
    result->error_index = -1;
    if (packed == NULL || size < HEADER * 8 || ((uintptr_t)packed & 7) != 0)
        return SCHED_ERR_JOB;
    const int64_t *words = (const int64_t *)(const void *)packed;
    int64_t n = words[0], t = words[1], c = words[2], l = words[3];
    /* Each count below 2**31 keeps the size below 2**40, far from overflowing. */
    if (n < 0 || n > INT32_MAX || t < 0 || t > INT32_MAX || c < 0 || c >= INT32_MAX
        || l < 0 || l > INT32_MAX)
        return SCHED_ERR_JOB;
    int64_t halves = 2 * n + c + 1 + l;
    int64_t expected = 8 * (HEADER + 4 * n + 4 * t) + 4 * (halves + (halves & 1));
    if (size != expected)
        return SCHED_ERR_JOB;

    const int64_t *wide = words + HEADER;
    const int32_t *narrow = (const int32_t *)(const void *)(wide + 4 * n + 4 * t);
    struct sched_jobs jobs = {
        .count = (int32_t)n, .cpu = wide, .memory = wide + n, .priority = wide + 2 * n,
        .runnable_at_ms = wide + 3 * n, .tenant = narrow, .label_class = narrow + n,
    };
    wide += 4 * n;
    struct sched_tenants tenants = {
        .count = (int32_t)t, .running_jobs = wide, .cpu_allocated = wide + t,
        .memory_allocated = wide + 2 * t, .running_limit = wide + 3 * t,
    };
    struct sched_label_classes classes = {
        .count = (int32_t)c, .offsets = narrow + 2 * n, .label_ids = narrow + 2 * n + c + 1,
    };
    return sched_place(cluster, &classes, &tenants, &jobs, options, result);
}

/* scan_pool() for a one-job call with binpack or spread. Between calls the block
 * summaries are those of sched_cluster_new() (each call restores them), so the
 * blocks can be visited best first, in the order computed there. Once a block's
 * best possible score is worse than the best slot found, so is every later one.
 * A block whose best possible score only ties cannot win if it comes after the
 * best slot, because ties go to the lowest slot. */
static struct scan scan_one(const struct run *r, int64_t cpu, int64_t memory,
                            const uint64_t *masks)
{
    const struct sched_cluster *c = r->cluster;
    const struct pool *p = &c->pool;
    const struct blocks *blocks = &c->blocks;
    int spread = r->options->policy == SCHED_POLICY_SPREAD;
    const int32_t *order = spread ? c->spread_order : c->binpack_order;
    const int64_t *bound = spread ? blocks->min_score : blocks->max_score;
    const uint64_t *keys = spread ? p->spread_key : p->binpack_key;
    struct scan s = {-1, 0, 0};
    uint64_t best_key = 0;
    int64_t best_score = 0;

    for (int32_t k = 0; k < blocks->count; k++) {
        int32_t b = order[k];
        if (best_key) {
            if (spread ? bound[b] > best_score : bound[b] < best_score)
                break;
            if (bound[b] == best_score && b > s.best / BLOCK)
                continue;
        }
        if (blocks->free_cpu[b] < cpu || blocks->free_memory[b] < memory)
            continue;
        int32_t low = b * BLOCK, high = low + BLOCK < p->count ? low + BLOCK : p->count;
        uint64_t mask = masks ? masks[b] : ~(uint64_t)0;
        if (!mask)
            continue;
        uint64_t key = block_best_key(c, keys, low, high, cpu, memory, mask);
        if (key > best_key) {
            best_key = key;
            s.best = (int32_t)(UINT32_MAX - (uint32_t)key);
            best_score = p->score[s.best];
        }
    }
    if (s.best < 0)
        s.capacity_elsewhere = masks && capacity_anywhere(r, cpu, memory);
    return s;
}

/* Label ids of a one-job call up to this many are copied to the stack. */
#define ONE_JOB_LABELS 32

int64_t sched_place_one(struct sched_cluster *cluster, const char *job, int64_t size,
                        int32_t policy, int32_t tenant_at_limit)
{
    enum { HEADER = 16 };
    if (policy < SCHED_POLICY_FIFO || policy > SCHED_POLICY_SPREAD)
        return SCHED_ERR_OPTIONS;
    if (cluster == NULL || job == NULL || size < HEADER || (size - HEADER) % 4 != 0
        || (size - HEADER) / 4 > (int64_t)cluster->label_count + 1)
        return SCHED_ERR_JOB;
    int64_t cpu, memory;
    memcpy(&cpu, job, sizeof cpu);
    memcpy(&memory, job + 8, sizeof memory);
    int32_t label_count = (int32_t)((size - HEADER) / 4);
    if (!in_range(cpu, 0, SCHED_MAX_QUANTITY) || !in_range(memory, 0, SCHED_MAX_QUANTITY))
        return SCHED_ERR_JOB;

    /* Class 0 is the empty set, as in every call; the job's labels are class 1. */
    int32_t local[ONE_JOB_LABELS];
    int32_t *ids = local;
    if (label_count > ONE_JOB_LABELS && !(ids = malloc((size_t)label_count * sizeof *ids)))
        return SCHED_ERR_NO_MEMORY;
    memcpy(ids, job + HEADER, (size_t)label_count * sizeof *ids);
    int32_t offsets[3] = {0, 0, label_count};
    const struct sched_label_classes classes = {.count = 2, .offsets = offsets, .label_ids = ids};
    const struct sched_options options = {.policy = policy, .now_ms = SCHED_NO_AGING};
    struct label_set *sets[2] = {NULL, NULL};
    struct run r;
    memset(&r, 0, sizeof r);
    r.cluster = cluster;
    r.classes = &classes;
    r.options = &options;
    r.sets = sets;
    r.reserved = -1;
    int32_t label_class = label_count > 0 ? 1 : 0;

    int64_t rc = SCHED_ERR_JOB;
    for (int32_t i = 0; i < label_count; i++)
        if (ids[i] < 0 || ids[i] > cluster->label_count || (i > 0 && ids[i] <= ids[i - 1]))
            goto done;
    rc = SCHED_ERR_BUSY;
    if (!cluster_enter(cluster))
        goto done;

    /* The checks of decide(), in the order of the rules, for a job that has no
     * job before it: no queue is blocked and no node is reserved. */
    rc = SCHED_ERR_NO_MEMORY;
    const struct fronts *f = fronts_of(&r, label_class);
    if (!f)
        goto leave;
    uint8_t outcome = SCHED_OUTCOME_WAITS, reason;
    if (!frontier_holds(&f->all, cpu, memory)) {
        outcome = SCHED_OUTCOME_NEVER_FITS;
        reason = never_fits_reason(&r, &f->all, cpu, memory);
    } else if (tenant_at_limit) {
        reason = SCHED_REASON_TENANT_LIMIT;
    } else if (!frontier_holds(&f->available, cpu, memory)) {
        reason = SCHED_REASON_NODE_UNAVAILABLE;
    } else {
        int no_memory;
        const uint64_t *masks = mask_of(&r, label_class, &no_memory);
        if (no_memory)
            goto leave;
        struct scan s = policy == SCHED_POLICY_FIFO ? scan_pool(&r, cpu, memory, masks)
                                                    : scan_one(&r, cpu, memory, masks);
        if (s.best >= 0) {
            rc = cluster->pool.node[s.best];
            goto leave;
        }
        reason = s.capacity_elsewhere ? SCHED_REASON_LABELS : SCHED_REASON_CAPACITY;
    }
    rc = SCHED_ONE_NOT_ASSIGNED - ((int64_t)outcome << 8 | reason);

leave:
    cluster_leave(cluster);
done:
    run_free(&r);
    if (ids != local)
        free(ids);
    return rc;
}
