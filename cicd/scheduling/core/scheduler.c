/*
 * The C core of cicd.scheduling.core: see scheduler.h for the interface and
 * docs/scheduling.md for the rules. reference.py is the same algorithm in Python,
 * and the tests require both to return identical decisions.
 *
 * Cost of one call: O(J log J) to order the queue, plus one scan of the available
 * nodes for each job that is tried. A job whose shape (CPU, memory, label class)
 * already found no node earlier in the call skips the scan: allocations only grow
 * within a call, so that shape still fits nowhere.
 */
#define _POSIX_C_SOURCE 200809L

#include "scheduler.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PPM 1000000

/* Shares multiply quantities of up to 2**62 by 10**6, which needs more than 64
 * bits. GCC and Clang provide 128-bit integers on 64-bit targets. */
__extension__ typedef unsigned __int128 u128;

/* The nodes that take new work (no flag set), in ascending node index. */
struct pool {
    int32_t count;
    int32_t *node;
    int64_t *free_cpu;
    int64_t *free_memory;
    int64_t *score;               /* CPU share + memory share, in ppm each */
    int64_t *cpu_allocated;
    int64_t *memory_allocated;
    int64_t *cpu_usable;          /* capacity minus reserve */
    int64_t *memory_usable;
};

/* The Pareto front of (usable CPU, usable memory) over a set of nodes: a job fits
 * some node of the set when empty exactly when it fits under one point. */
struct frontier {
    int32_t count;
    int64_t *cpu;                 /* strictly decreasing */
    int64_t *memory;              /* strictly increasing */
};

struct class_frontiers {
    int built;
    struct frontier all;          /* every node with the labels */
    struct frontier available;    /* only nodes that take new work */
};

struct node_point {
    int64_t cpu;
    int64_t memory;
    int32_t index;
};

struct shape {
    int64_t cpu;
    int64_t memory;
    int32_t label_class;
    int32_t used;
};

/* Open-addressing hash set of job shapes known to fit on no node in this call. */
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
};

struct run {
    const struct sched_nodes *nodes;
    const struct sched_label_classes *classes;
    const struct sched_jobs *jobs;
    const struct sched_options *options;
    struct sched_result *result;

    struct pool pool;
    struct tenant_state *tenants;
    int32_t tenant_count;
    u128 total_cpu;
    u128 total_memory;

    struct queued_job *order;
    int32_t *heap;
    int32_t heap_size;

    struct class_frontiers *frontiers;
    struct node_point *by_size;   /* all nodes, largest first; built on first use */
    struct node_point *scratch_all;
    struct node_point *scratch_available;

    struct shape_set failed;

    int head_seen;                /* a job has waited for capacity already */
    int queue_blocked;            /* strict order: nothing more is placed */
    int32_t reserved;             /* pool slot held for the head, or -1 */
};

/* ---- arithmetic --------------------------------------------------------------- */

static int64_t share_ppm(int64_t allocated, int64_t usable)
{
    if (allocated >= usable)
        return PPM;
    return (int64_t)(((u128)allocated * PPM) / (u128)usable);
}

static int64_t shortfall_ppm(int64_t request, int64_t free, int64_t usable)
{
    if (request <= free)
        return 0;
    /* request <= usable here, so usable > 0. */
    return (int64_t)(((u128)(request - free) * PPM) / (u128)usable);
}

static int64_t free_of(int64_t usable, int64_t allocated)
{
    return usable > allocated ? usable - allocated : 0;
}

static u128 tenant_share(const struct run *r, const struct tenant_state *t)
{
    u128 cpu = r->total_cpu ? t->cpu * PPM / r->total_cpu : 0;
    u128 memory = r->total_memory ? t->memory * PPM / r->total_memory : 0;
    return cpu > memory ? cpu : memory;
}

static int64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* ---- input checks ------------------------------------------------------------- */

static int in_range(int64_t value, int64_t low, int64_t high)
{
    return value >= low && value <= high;
}

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

static int check_inputs(const struct sched_nodes *nodes, const struct sched_label_classes *classes,
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

    if (nodes->count < 0 || nodes->label_count < 0)
        return SCHED_ERR_NODE;
    for (int32_t i = 0; i < nodes->count; i++) {
        result->error_index = i;
        if (!in_range(nodes->cpu_capacity[i], 0, SCHED_MAX_QUANTITY)
            || !in_range(nodes->memory_capacity[i], 0, SCHED_MAX_QUANTITY)
            || !in_range(nodes->cpu_reserved[i], 0, nodes->cpu_capacity[i])
            || !in_range(nodes->memory_reserved[i], 0, nodes->memory_capacity[i])
            || !in_range(nodes->cpu_allocated[i], 0, SCHED_MAX_QUANTITY)
            || !in_range(nodes->memory_allocated[i], 0, SCHED_MAX_QUANTITY)
            || nodes->flags[i] > (SCHED_NODE_CORDONED | SCHED_NODE_BREAKER_OPEN))
            return SCHED_ERR_NODE;
    }
    if (!check_id_lists(nodes->count, nodes->label_offsets, nodes->label_ids,
                        nodes->label_count - 1, &result->error_index))
        return SCHED_ERR_NODE;

    result->error_index = 0;
    if (classes->count < 1 || classes->offsets[0] != 0 || classes->offsets[1] != 0)
        return SCHED_ERR_LABEL_CLASS;
    if (!check_id_lists(classes->count, classes->offsets, classes->label_ids,
                        nodes->label_count, &result->error_index))
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

/* ---- labels -------------------------------------------------------------------- */

/* Whether node `index` has every label of class `label_class`. Both lists ascend. */
static int labels_match(const struct run *r, int32_t index, int32_t label_class)
{
    const int32_t *need = r->classes->label_ids + r->classes->offsets[label_class];
    const int32_t *need_end = r->classes->label_ids + r->classes->offsets[label_class + 1];
    const int32_t *have = r->nodes->label_ids + r->nodes->label_offsets[index];
    const int32_t *have_end = r->nodes->label_ids + r->nodes->label_offsets[index + 1];

    for (; need < need_end; need++) {
        while (have < have_end && *have < *need)
            have++;
        if (have == have_end || *have != *need)
            return 0;
        have++;
    }
    return 1;
}

static int class_is_empty(const struct run *r, int32_t label_class)
{
    return r->classes->offsets[label_class] == r->classes->offsets[label_class + 1];
}

/* ---- frontiers (never fits, node unavailable) ----------------------------------- */

static int compare_by_size(const void *a, const void *b)
{
    const struct node_point *x = a, *y = b;
    if (x->cpu != y->cpu)
        return x->cpu > y->cpu ? -1 : 1;
    if (x->memory != y->memory)
        return x->memory > y->memory ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

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

/* Build both frontiers of a label class on first use. Returns NULL when out of memory. */
static const struct class_frontiers *frontiers_of(struct run *r, int32_t label_class)
{
    struct class_frontiers *f = &r->frontiers[label_class];
    if (f->built)
        return f;

    int32_t n = r->nodes->count;
    if (!r->by_size && n > 0) {
        r->by_size = malloc((size_t)n * sizeof *r->by_size);
        r->scratch_all = malloc((size_t)n * sizeof *r->scratch_all);
        r->scratch_available = malloc((size_t)n * sizeof *r->scratch_available);
        if (!r->by_size || !r->scratch_all || !r->scratch_available)
            return NULL;
        for (int32_t i = 0; i < n; i++) {
            r->by_size[i].cpu = r->nodes->cpu_capacity[i] - r->nodes->cpu_reserved[i];
            r->by_size[i].memory = r->nodes->memory_capacity[i] - r->nodes->memory_reserved[i];
            r->by_size[i].index = i;
        }
        qsort(r->by_size, (size_t)n, sizeof *r->by_size, compare_by_size);
    }

    /* Nodes come largest CPU first, so a node joins a front when it has more
     * memory than every node already on it. */
    int32_t all = 0, available = 0;
    int empty = class_is_empty(r, label_class);
    for (int32_t s = 0; s < n; s++) {
        const struct node_point *p = &r->by_size[s];
        if (!empty && !labels_match(r, p->index, label_class))
            continue;
        if (all == 0 || p->memory > r->scratch_all[all - 1].memory)
            r->scratch_all[all++] = *p;
        if (r->nodes->flags[p->index] == 0
            && (available == 0 || p->memory > r->scratch_available[available - 1].memory))
            r->scratch_available[available++] = *p;
    }
    f->built = 1;
    if (!frontier_copy(&f->all, r->scratch_all, all)
        || !frontier_copy(&f->available, r->scratch_available, available))
        return NULL;
    return f;
}

/* Whether some point of the front has at least `cpu` and at least `memory`. */
static int frontier_holds(const struct frontier *f, int64_t cpu, int64_t memory)
{
    int32_t low = 0, high = f->count;   /* count of points with cpu >= request */
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
    if (r->nodes->count == 0)
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

/* ---- shapes that fit nowhere ---------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

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

/* Returns 0 when out of memory. */
static int shape_add(struct shape_set *set, int64_t cpu, int64_t memory, int32_t label_class)
{
    if ((set->size + 1) * 2 > set->capacity) {
        struct shape_set grown = {calloc(set->capacity * 2, sizeof(struct shape)), set->capacity * 2, 0};
        if (!grown.slots)
            return 0;
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
        *s = (struct shape){cpu, memory, label_class, 1};
        set->size++;
    }
    return 1;
}

/* ---- queue order ------------------------------------------------------------------ */

static int compare_queued(const void *a, const void *b)
{
    const struct queued_job *x = a, *y = b;
    if (x->tenant != y->tenant)
        return x->tenant < y->tenant ? -1 : 1;
    if (x->neg_priority != y->neg_priority)
        return x->neg_priority < y->neg_priority ? -1 : 1;
    if (x->runnable_at_ms != y->runnable_at_ms)
        return x->runnable_at_ms < y->runnable_at_ms ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
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

/* ---- set-up and clean-up ------------------------------------------------------------ */

static void run_free(struct run *r)
{
    struct pool *p = &r->pool;
    free(p->node);
    free(p->free_cpu);
    free(p->free_memory);
    free(p->score);
    free(p->cpu_allocated);
    free(p->memory_allocated);
    free(p->cpu_usable);
    free(p->memory_usable);
    free(r->tenants);
    free(r->order);
    free(r->heap);
    if (r->frontiers) {
        for (int32_t k = 0; k < r->classes->count; k++) {
            free(r->frontiers[k].all.cpu);
            free(r->frontiers[k].all.memory);
            free(r->frontiers[k].available.cpu);
            free(r->frontiers[k].available.memory);
        }
        free(r->frontiers);
    }
    free(r->by_size);
    free(r->scratch_all);
    free(r->scratch_available);
    free(r->failed.slots);
}

static int pool_init(struct run *r)
{
    const struct sched_nodes *nodes = r->nodes;
    struct pool *p = &r->pool;
    size_t n = (size_t)nodes->count + 1;   /* + 1: malloc(0) may return NULL */

    p->node = malloc(n * sizeof *p->node);
    p->free_cpu = malloc(n * sizeof(int64_t));
    p->free_memory = malloc(n * sizeof(int64_t));
    p->score = malloc(n * sizeof(int64_t));
    p->cpu_allocated = malloc(n * sizeof(int64_t));
    p->memory_allocated = malloc(n * sizeof(int64_t));
    p->cpu_usable = malloc(n * sizeof(int64_t));
    p->memory_usable = malloc(n * sizeof(int64_t));
    if (!p->node || !p->free_cpu || !p->free_memory || !p->score || !p->cpu_allocated
        || !p->memory_allocated || !p->cpu_usable || !p->memory_usable)
        return 0;

    for (int32_t i = 0; i < nodes->count; i++) {
        int64_t cpu_usable = nodes->cpu_capacity[i] - nodes->cpu_reserved[i];
        int64_t memory_usable = nodes->memory_capacity[i] - nodes->memory_reserved[i];
        r->total_cpu += (u128)cpu_usable;
        r->total_memory += (u128)memory_usable;
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
        p->score[a] = share_ppm(nodes->cpu_allocated[i], cpu_usable)
                      + share_ppm(nodes->memory_allocated[i], memory_usable);
    }
    return 1;
}

static int queue_init(struct run *r, const struct sched_tenants *tenants)
{
    const struct sched_jobs *jobs = r->jobs;
    const struct sched_options *o = r->options;
    size_t t_count = (size_t)tenants->count + 1;
    size_t j_count = (size_t)jobs->count + 1;

    r->tenant_count = tenants->count;
    r->tenants = calloc(t_count, sizeof *r->tenants);
    r->order = malloc(j_count * sizeof *r->order);
    r->heap = malloc(t_count * sizeof *r->heap);
    if (!r->tenants || !r->order || !r->heap)
        return 0;

    int aging = o->now_ms != SCHED_NO_AGING && o->aging_interval_ms > 0;
    for (int32_t j = 0; j < jobs->count; j++) {
        int64_t boost = 0;
        if (aging && o->now_ms > jobs->runnable_at_ms[j])
            boost = (o->now_ms - jobs->runnable_at_ms[j]) / o->aging_interval_ms;
        r->order[j] = (struct queued_job){-(jobs->priority[j] + boost), jobs->runnable_at_ms[j],
                                          jobs->tenant[j], j};
    }
    qsort(r->order, (size_t)jobs->count, sizeof *r->order, compare_queued);

    for (int32_t t = 0; t < tenants->count; t++) {
        struct tenant_state *s = &r->tenants[t];
        s->cpu = (u128)tenants->cpu_allocated[t];
        s->memory = (u128)tenants->memory_allocated[t];
        s->running = tenants->running_jobs[t];
        s->limit = tenants->running_limit[t];
        s->share = tenant_share(r, s);
        s->next = s->end = 0;
    }
    /* The order is grouped by tenant: record each tenant's range. */
    for (int32_t p = jobs->count - 1; p >= 0; p--)
        r->tenants[r->order[p].tenant].next = p;
    for (int32_t p = 0; p < jobs->count; p++)
        r->tenants[r->order[p].tenant].end = p + 1;
    for (int32_t t = 0; t < tenants->count; t++)
        if (r->tenants[t].next < r->tenants[t].end)
            heap_push(r, t);
    return 1;
}

/* ---- deciding one job ---------------------------------------------------------------- */

struct scan {
    int32_t best;                 /* pool slot, or -1 */
    int capacity_elsewhere;       /* a pool node (not the reserved one) has the free capacity */
    int fits_reserved;            /* the reserved node would take the job */
};

/* Find the node for a job by policy; tie-break by lowest node index. */
static struct scan scan_pool(const struct run *r, int64_t cpu, int64_t memory, int32_t label_class)
{
    const struct pool *p = &r->pool;
    const int64_t *free_cpu = p->free_cpu, *free_memory = p->free_memory, *score = p->score;
    int policy = r->options->policy;
    int any_label = !class_is_empty(r, label_class);
    struct scan s = {-1, 0, 0};
    int64_t best_score = 0;

    for (int32_t a = 0; a < p->count; a++) {
        if (free_cpu[a] < cpu || free_memory[a] < memory)
            continue;
        int matches = !any_label || labels_match(r, p->node[a], label_class);
        if (a == r->reserved) {
            s.fits_reserved = matches;
            continue;
        }
        if (!matches) {
            s.capacity_elsewhere = 1;
            continue;
        }
        if (policy == SCHED_POLICY_FIFO) {
            s.best = a;
            break;
        }
        if (s.best < 0 || (policy == SCHED_POLICY_BINPACK ? score[a] > best_score : score[a] < best_score)) {
            s.best = a;
            best_score = score[a];
        }
    }
    return s;
}

/* Whether a pool node other than the reserved one has the free capacity, labels aside. */
static int capacity_anywhere(const struct run *r, int64_t cpu, int64_t memory)
{
    const struct pool *p = &r->pool;
    for (int32_t a = 0; a < p->count; a++)
        if (p->free_cpu[a] >= cpu && p->free_memory[a] >= memory && a != r->reserved)
            return 1;
    return 0;
}

/* The pool node held for the head: among nodes with its labels that hold it when
 * empty, the one missing the least (CPU ppm + memory ppm of its usable capacity). */
static int32_t choose_reservation(const struct run *r, int64_t cpu, int64_t memory, int32_t label_class)
{
    const struct pool *p = &r->pool;
    int32_t best = -1;
    int64_t best_shortfall = 0;
    for (int32_t a = 0; a < p->count; a++) {
        if (p->cpu_usable[a] < cpu || p->memory_usable[a] < memory
            || !labels_match(r, p->node[a], label_class))
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

static void assign(struct run *r, int32_t j, int32_t a, struct tenant_state *t)
{
    struct pool *p = &r->pool;
    int64_t cpu = r->jobs->cpu[j], memory = r->jobs->memory[j];

    p->cpu_allocated[a] += cpu;
    p->memory_allocated[a] += memory;
    p->free_cpu[a] -= cpu;
    p->free_memory[a] -= memory;
    p->score[a] = share_ppm(p->cpu_allocated[a], p->cpu_usable[a])
                  + share_ppm(p->memory_allocated[a], p->memory_usable[a]);

    t->cpu += (u128)cpu;
    t->memory += (u128)memory;
    t->running++;
    t->share = tenant_share(r, t);

    r->result->node[j] = p->node[a];
    r->result->outcome[j] = SCHED_OUTCOME_ASSIGNED;
    r->result->reason[j] = SCHED_REASON_NONE;
}

static void wait_for(struct run *r, int32_t j, uint8_t outcome, uint8_t reason)
{
    r->result->node[j] = -1;
    r->result->outcome[j] = outcome;
    r->result->reason[j] = reason;
}

/* Decide job j. Returns 0 when out of memory. */
static int decide(struct run *r, int32_t j)
{
    int64_t cpu = r->jobs->cpu[j], memory = r->jobs->memory[j];
    int32_t label_class = r->jobs->label_class[j];
    struct tenant_state *t = &r->tenants[r->jobs->tenant[j]];

    const struct class_frontiers *f = frontiers_of(r, label_class);
    if (!f)
        return 0;
    if (!frontier_holds(&f->all, cpu, memory)) {
        wait_for(r, j, SCHED_OUTCOME_NEVER_FITS, never_fits_reason(r, &f->all, cpu, memory));
        return 1;
    }
    if (t->limit != SCHED_NO_LIMIT && t->running >= t->limit) {
        wait_for(r, j, SCHED_OUTCOME_WAITS, SCHED_REASON_TENANT_LIMIT);
        return 1;
    }
    if (r->queue_blocked) {
        wait_for(r, j, SCHED_OUTCOME_WAITS, SCHED_REASON_QUEUE_BLOCKED);
        return 1;
    }
    if (!frontier_holds(&f->available, cpu, memory)) {
        wait_for(r, j, SCHED_OUTCOME_WAITS, SCHED_REASON_NODE_UNAVAILABLE);
        return 1;
    }

    struct scan s;
    if (!shape_failed(&r->failed, cpu, memory, label_class)) {
        s = scan_pool(r, cpu, memory, label_class);
        if (s.best >= 0) {
            assign(r, j, s.best, t);
            return 1;
        }
        if (!shape_add(&r->failed, cpu, memory, label_class))
            return 0;
        /* No pool node outside the reservation has this free capacity at all. */
        if (!s.capacity_elsewhere && !shape_add(&r->failed, cpu, memory, 0))
            return 0;
    } else {
        const struct pool *p = &r->pool;
        int32_t a = r->reserved;
        s.best = -1;
        s.fits_reserved = a >= 0 && p->free_cpu[a] >= cpu && p->free_memory[a] >= memory
                          && labels_match(r, p->node[a], label_class);
        s.capacity_elsewhere = 0;
        if (!class_is_empty(r, label_class) && !shape_failed(&r->failed, cpu, memory, 0)) {
            s.capacity_elsewhere = capacity_anywhere(r, cpu, memory);
            if (!s.capacity_elsewhere && !shape_add(&r->failed, cpu, memory, 0))
                return 0;
        }
    }

    if (s.fits_reserved) {
        wait_for(r, j, SCHED_OUTCOME_WAITS, SCHED_REASON_RESERVED);
        return 1;
    }
    uint8_t reason = s.capacity_elsewhere ? SCHED_REASON_LABELS : SCHED_REASON_CAPACITY;
    wait_for(r, j, SCHED_OUTCOME_WAITS, reason);

    /* The first job that waits for capacity is the head: strict order stops here,
     * backfill keeps going but holds one node for the head. */
    if (!r->head_seen) {
        r->head_seen = 1;
        if (r->options->backfill)
            r->reserved = choose_reservation(r, cpu, memory, label_class);
        else
            r->queue_blocked = 1;
    }
    return 1;
}

/* ---- entry point ------------------------------------------------------------------------ */

int sched_place(const struct sched_nodes *nodes,
                const struct sched_label_classes *classes,
                const struct sched_tenants *tenants,
                const struct sched_jobs *jobs,
                const struct sched_options *options,
                struct sched_result *result)
{
    int rc = check_inputs(nodes, classes, tenants, jobs, options, result);
    if (rc != SCHED_OK)
        return rc;

    struct run r;
    memset(&r, 0, sizeof r);
    r.nodes = nodes;
    r.classes = classes;
    r.jobs = jobs;
    r.options = options;
    r.result = result;
    r.reserved = -1;
    r.frontiers = calloc((size_t)classes->count, sizeof *r.frontiers);
    r.failed.capacity = 1024;
    r.failed.slots = calloc(r.failed.capacity, sizeof *r.failed.slots);

    rc = SCHED_ERR_NO_MEMORY;
    if (!r.frontiers || !r.failed.slots || !pool_init(&r) || !queue_init(&r, tenants))
        goto done;

    int timed = result->latency_ns != NULL;
    int32_t position = 0;
    while (r.heap_size > 0) {
        int64_t started = timed ? monotonic_ns() : 0;
        int32_t tenant = heap_pop(&r);
        int32_t j = r.order[r.tenants[tenant].next++].index;
        result->position[j] = position++;
        if (!decide(&r, j))
            goto done;
        if (r.tenants[tenant].next < r.tenants[tenant].end)
            heap_push(&r, tenant);
        if (timed)
            result->latency_ns[j] = monotonic_ns() - started;
    }
    rc = SCHED_OK;

done:
    run_free(&r);
    return rc;
}
