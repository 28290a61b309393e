/*
 * leech.c: the native leech, loaded with ctypes from lpm/_native/.
 *
 * This is the C twin of lpm/leech/pure.py, which is the specification: read
 * its "Theory of operation" first.  For the same calls under a fixed clock the
 * two write the same bytes (tests/leech/test_native_parity.py).  This file is
 * a plain shared library, not an extension module: ctypes does the setup,
 * and the functions that must be cheap to call from Python (the event path)
 * are handed to Python as builtin function objects.
 *
 * Design
 * ------
 *
 * A *context* (struct ctx) is one sink: its pool, queue, threads and writer.
 * Nothing else is global except the registry of live contexts, a serial
 * counter and a fork generation, which a fork handler resets.
 *
 * Who runs what.  Every function Python calls runs with the GIL held and
 * never releases it between reading and updating a thread's state, so the
 * event path, thread registration and thread exit are ordered by the GIL
 * (the free-threaded build is out of scope).  Beside them run the writer
 * pthread, which never touches a Python object, and the background
 * sampler, which only reads interpreter memory through process_vm_readv()
 * and writes into the monitor thread's buffer under a lock of its own.  It shares with the event
 * path only these lock-free structures:
 *
 *   pool       a bitmap of free buffers plus a count.  Taking a buffer first
 *              reserves one by decrementing the count (fails at zero: the
 *              event is dropped), then claims a set bit with CAS; returning
 *              sets the bit before incrementing the count, so a reservation
 *              always finds a bit.  Only the writer returns buffers.
 *   queue      full buffers for the writer: a ring with a cell per buffer
 *              (rounded up to a power of two) and a ticket counter.  A
 *              producer takes a ticket with fetch_add and publishes the
 *              buffer in the ticket's cell with a release CAS from 0; the
 *              writer consumes cells in ticket order, stopping at one not
 *              yet published.  A queued buffer is out of the pool, so at most
 *              nbufs tickets are outstanding and a cell is empty again
 *              before its next ticket comes round.
 *   committed  per buffer, one 64-bit word: bytes used, where the last event
 *              starts, and how many counted events the buffer holds, stored
 *              with release after each event.  The writer's block gets its
 *              end from the first, its end timestamp by reading the event
 *              the second points at, and its next sequence number from the
 *              third: a buffer's events have consecutive sequence numbers,
 *              since a thread that drops an event has no buffer, and the
 *              PyDataLoss record that may open a buffer takes none.
 *   slot table a cell per slot: the index + 1 of the buffer the thread in
 *              that slot is filling, for the writer's partial flushes.  A
 *              stale read is harmless: a buffer goes back to the pool only
 *              through the writer itself, and which of its bytes are already
 *              in blocks is the writer's own record.
 *
 * What the writer needs of the threads themselves (numbers, names, final
 * sequence numbers, for the blocks it makes outside the budget) it reads
 * under the context's mutex, which the event path never takes.
 *
 * Threads.  A thread's first event registers it (the mutex, and one Python
 * call for its name, as in PureSink).  A thread-local (serial, state,
 * generation) triple makes later events cheap; a context's serial is never
 * reused, so a pointer left over from a dead context, or from the parent
 * after fork, is never followed.  Thread states are recycled within a
 * context and freed only with it, so the generation (bumped when the thread
 * ends) says whether a state still belongs to the same thread.  The end of a
 * thread is noticed the way PureSink's threading.local notices it: a capsule
 * in the thread's PyThreadState dict whose destructor runs when CPython
 * clears that thread state, before Thread.join() returns.  (A pthread key
 * destructor would run after join, and a thread started next would not get
 * the slot the pure leech gives it.)
 *
 * Fork.  A child has only the forking thread, and its inherited contexts
 * have no writer and maybe locked mutexes.  The child fork handler resets
 * the registry lock, bumps the fork generation (a context from an older one
 * is inherited: every entry point ignores it, and freeing it frees memory
 * only), closes its FIFO descriptors, and clears the thread-local triple.
 *
 * ABI (load with ctypes.PyDLL: every function expects the GIL held)
 * ---
 *
 *   int lpm_abi_version(void)
 *       LPM_ABI_VERSION; lpm/_native/__init__.py refuses any other.
 *   const char *lpm_event_table(void)
 *       "id size ClassName\n" for every event type this file writes; size is
 *       the header's declared size (65535: variable).
 *   PyObject *lpm_sink_new(const struct lpm_config *, bytes header,
 *                          bytes data_path, bytes-or-None control_path)
 *       A new context object (opaque), or NULL with an exception set.
 *   PyObject *lpm_sink_functions(ctx)
 *       {name: builtin} for emit, message, marker, counter, span_begin,
 *       span_end and gc_callback, with PureSink's signatures, and sample,
 *       the monitor's stack walk (lpm.leech.monitor).
 *   int lpm_sink_start(ctx), int lpm_sink_stop(ctx)
 *       Start the writer; write what is left and the end marker and join it
 *       (stop releases the GIL while it waits).  0, or -1 with an exception.
 *   int64_t lpm_thread_number(ctx, unsigned long ident, unsigned long native_id, str name)
 *   int lpm_thread_renamed(ctx, unsigned long ident, str name)
 *   int lpm_thread_gone(ctx, unsigned long ident)
 *   PyObject *lpm_take_new(ctx), lpm_sequence_points(ctx), lpm_stats(ctx)
 *       As PureSink's methods of the same names.
 *   PyObject *lpm_take_commands(ctx)
 *       The control lines the writer read (list of bytes, stripped).
 *   int lpm_set_paused(ctx, int), int lpm_paused(ctx)
 *   uint64_t lpm_now(ctx), lpm_start_ns(ctx)
 *   uint64_t lpm_reader_events(ctx)
 *       How many times a reader arrived (connects and attaches): the writer
 *       cannot call on_connect, so the Python side calls it when this grows.
 *   uint64_t lpm_backlog(ctx)
 *       What the writer has yet to put in the stream: queued buffers, new
 *       threads to announce, ended threads to close.
 *   int lpm_bg_start(ctx, double rate)
 *       From the monitor thread: start the background sampler (stack
 *       samples without the GIL, into the caller's buffer; see "the
 *       background sampler" below).  1 started, 0 not possible here (the
 *       monitor then samples with the GIL), -1 with an exception.
 *   int lpm_bg_rate(ctx, double rate), int lpm_bg_stop(ctx)
 *   int lpm_bg_generation(ctx, uint32_t gen)
 *       PyGeneration, and the sampler's code table emptied, as one step.
 *   PyObject *lpm_bg_stats(ctx)
 *       (ticks, code objects numbered, failed reads), or None.
 *   int lpm_alloc(ctx, int on, unsigned long long sample_bytes)
 *   PyObject *lpm_alloc_stats(ctx)
 *       Allocation tracking on or off; every thread's PyAllocStats into the
 *       caller's buffer.  See "allocations" below.
 *   int lpm_trace(ctx, int mode, unsigned long skip_ident)
 *   PyObject *lpm_trace_stats(ctx)
 *       Call tracing off (0), on (1), or the interpreter's floor for it (2)
 *       in every thread but skip_ident's (lpm's monitor); (mode, numbers
 *       given out, threads another profiler keeps).  See "call tracing".
 *   Py_ssize_t lpm_gc_keep_out(list objects), Py_ssize_t lpm_gc_let_in(void)
 *       Keep lpm's own objects out of the program's collections, and hand
 *       them back; each returns how many.  See "lpm's own objects" at the end.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if PY_VERSION_HEX < 0x030B0000
#include <frameobject.h> /* PyFrame_GetBack: Python.h has it from 3.11 */
#else
/* _PyInterpreterFrame, for the background sampler's reads.  The headers
 * every CPython installs under include/pythonX.Y/internal for tools that
 * read its memory; only the struct layout is used, no internal function. */
#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE
#endif

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define LPM_EXPORT __attribute__((visibility("default")))

#define LPM_ABI_VERSION 5

#ifndef F_SETPIPE_SZ
#define F_SETPIPE_SZ 1031
#endif

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *Py_NewRef(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
#endif

/* -- event types ---------------------------------------------------------- */

/* Every event type this file writes: symbol, id, declared size, class name in
 * lpm/eventlog/events.py.  tests/leech/test_event_table.py checks the table
 * against the Python registry. */
#define LPM_EVENTS(X)                                    \
    X(EV_CREATE_THREAD, 0, 4, CreateThread)              \
    X(EV_STOP_THREAD, 2, 10, StopThread)                 \
    X(EV_START_GC, 9, 0, StartGC)                        \
    X(EV_END_GC, 10, 0, EndGC)                           \
    X(EV_BLOCK, 18, 14, EventBlock)                      \
    X(EV_USER_MESSAGE, 19, 65535, UserMessage)           \
    X(EV_THREAD_LABEL, 44, 65535, ThreadLabel)           \
    X(EV_USER_MARKER, 58, 65535, UserMarker)             \
    X(EV_THREAD_INFO, 0x1000, 12, PyThreadInfo)          \
    X(EV_GC_COLLECTION, 0x1002, 18, PyGcCollection)      \
    X(EV_CODE, 0x1004, 65535, PyCode)                    \
    X(EV_SAMPLE, 0x1005, 65535, PySample)                \
    X(EV_SPAN_BEGIN, 0x1006, 65535, PySpanBegin)         \
    X(EV_SPAN_END, 0x1007, 8, PySpanEnd)                 \
    X(EV_COUNTER, 0x1008, 65535, PyCounter)              \
    X(EV_DATA_LOSS, 0x1009, 28, PyDataLoss)              \
    X(EV_SEQ_POINT, 0x100A, 12, PySeqPoint)              \
    X(EV_GENERATION, 0x100B, 4, PyGeneration)            \
    X(EV_BLOCK_INFO, 0x100D, 12, PyBlockInfo)          \
    X(EV_CALL, 0x100E, 4, PyCall)                        \
    X(EV_RETURN, 0x100F, 4, PyReturn)                    \
    X(EV_ALLOC_STATS, 0x1010, 36, PyAllocStats)          \
    X(EV_ALLOC_SAMPLE, 0x1011, 65535, PyAllocSample)

#define AS_ID(sym, id, size, name) sym = id,
#define AS_SIZE(sym, id, size, name) sym##_SIZE = size,
#define AS_ROW(sym, id, size, name) #id " " #size " " #name "\n"
enum { LPM_EVENTS(AS_ID) };
enum { LPM_EVENTS(AS_SIZE) };
static const char EVENT_TABLE[] = LPM_EVENTS(AS_ROW);

enum {
    HEAD = 10, /* id u16, ts u64 */
    MARKER_EVENT = HEAD + EV_BLOCK_SIZE,
    LOSS_EVENT = HEAD + EV_DATA_LOSS_SIZE,
    BLOCK_OVERHEAD = MARKER_EVENT + HEAD + EV_BLOCK_INFO_SIZE,
    GLOBAL_CAP = 0xFFFF,
    THREAD_FINISHED = 5,
    MAX_PAYLOAD = 0xFFFF,
    MAX_SLOTS = 0xFFFF, /* a block's cap is a u16, and 0xffff is GLOBAL_CAP */
    MAX_COMMANDS = 64,  /* PureSink._commands' maxlen */
    CONTROL_KEEP = 256, /* the most of an unfinished control line kept */
    CONTROL_READ = 4096,
    MAX_DEPTH = 512, /* lpm.leech.monitor.MAX_DEPTH */
};

/* -- configuration (mirrored by lpm._native.Config) ------------------------ */

struct lpm_config {
    uint64_t buffers;
    uint64_t buffer_size;
    uint64_t fixed_clock;
    int32_t has_fixed_clock;
    uint32_t max_text;
    double flush_interval;
    double idle_tick;
    double backoff_first;
    double backoff_factor;
    double backoff_last;
    double stop_timeout;
};

/* -- state ---------------------------------------------------------------- */

/* committed: bits 0-20 bytes used, 21-41 start of the last event, 42-63
 * counted events; a buffer is at most 1 MiB, so each fits. */
#define COMMIT_BITS 21
#define COMMIT_MASK ((UINT64_C(1) << COMMIT_BITS) - 1)
#define MAX_BUFFER_SIZE (UINT64_C(1) << 20)

/* A cache line each: one thread's committed word does not share a line with
 * another's, and the tracer finds it with a shift. */
struct buf {
    _Atomic uint64_t committed;
    uint64_t first_seq;               /* PyBlockInfo of its first block */
    uint64_t base_seq;                /* sequence number of its first counted event */
    uint32_t slot, number;            /* owner; fixed while out of the pool */
    uint32_t flushed, flushed_events; /* the writer's: what is already in blocks */
} __attribute__((aligned(64)));

/* Events that look for a default-named thread's own name (name_unnamed). */
#define NAME_TRIES 16

struct thread {
    uint64_t gen; /* bumped when the thread ends */
    uint64_t seq;
    int32_t buf; /* index of the buffer being filled, or -1 */
    uint32_t used, events;
    uint32_t number, slot;
    uint64_t lost, lost_bytes, lost_first;
    unsigned long ident, native_id;
    uint8_t *label; /* clip_text(name) */
    uint32_t label_len;
    uint8_t live, in_by_ident;
    uint8_t unnamed; /* default name: tries left to find its own (name_unnamed) */
    uint8_t unannounced, unclosed; /* the writer's blocks still to come */
    struct thread *next_free;
    /* Allocation tracking ("allocations" below): written by the thread itself
     * with the GIL, read by the monitor with it. */
    uint64_t alloc_bytes, allocs, freed_bytes, frees;
    int64_t until_sample; /* bytes to allocate before the next sampled allocation */
    /* The tracer's clock line as this thread last read it, and the writer's
     * seq + 1 it was read under (0: not read). */
    uint32_t tsc_seq;
    uint64_t tsc_base, tsc_ns, tsc_mult;
};

#define CHUNK 64
struct chunk {
    struct chunk *next;
    struct thread t[CHUNK];
};

struct fresh {
    uint32_t number;
    unsigned long ident, native_id;
    PyObject *name;
};

/* One thread's entry in a closing block. */
struct closing {
    uint32_t number;
    uint64_t lost, lost_first, lost_bytes, seq;
};

struct bytes {
    uint8_t *data;
    size_t len, off, cap;
};

enum { IDLE, RUNNING, STOPPING, STOPPED };

/* A map from addresses (never 0) to 64-bit values: linear probing, at most
 * half full, deletion by shifting back (see "pointer maps" below). */
struct ptrmap_entry {
    uintptr_t key; /* 0: empty */
    uint64_t value;
};
struct ptrmap {
    struct ptrmap_entry *e;
    size_t cap, used;
};

/* Call tracing (see "call tracing" below).  Under the GIL. */
struct tracer {
    int mode;       /* TRACE_OFF, TRACE_ON, TRACE_FLOOR */
    uint32_t gen;   /* the generation this ctx's numbers belong to */
    uint32_t next;  /* numbers given out */
    struct ptrmap cfns; /* a C function's PyMethodDef (static for builtins) -> generation << 32 | number */
    PyObject *old_hook; /* threading's profile hook before ours (before 3.12) */
    int tool;           /* the sys.monitoring tool id held (3.12 on), or -1 */
    unsigned long skip; /* the thread left out: lpm's monitor */
    uint64_t skipped;   /* threads left alone: another profiler was installed there */
};

/* The tracer's clock (see "the tracer's clock" below). */
struct tsc_clock {
    _Atomic uint32_t seq;                 /* odd while the writer refits the line */
    _Atomic uint64_t tsc, ns, mult;       /* the line: ns = ns + (tick - tsc) * mult >> 32 */
    _Atomic int usable;                   /* set once (release), after the first fit */
    uint64_t fit_tsc, fit_ns;             /* the writer's last fit */
};

struct ctx {
    uint64_t serial;
    unsigned forkgen;
    struct lpm_config cfg;
    uint32_t size, nbufs;
    uint64_t t0;
    uint8_t *mem;
    struct buf *bufs;
    uint8_t *header;
    size_t header_len;
    char *path, *control_path;
    PyObject *watch_key; /* this context's key in thread state dicts */

    _Atomic uint64_t *free_bits;
    size_t free_words;
    _Atomic uint32_t free_count;

    _Atomic uint32_t *ring;
    uint64_t ring_mask;
    _Atomic uint64_t q_tail, q_head; /* q_head: written by the writer only */

    _Atomic uint32_t *slot_buf;
    _Atomic uint32_t slot_top;

    _Atomic int paused;
    _Atomic uint64_t dropped;

    /* Threads: under `lock` (and the GIL, except for the writer). */
    pthread_mutex_t lock;
    uint32_t next_number;
    uint64_t *slot_used;
    struct thread **live; /* by number */
    size_t nlive, cap_live;
    struct thread **announce, **retiring;
    size_t nannounce, cap_announce, nretiring, cap_retiring;
    struct chunk *chunks;
    size_t chunk_used;
    struct thread *free_states;
    struct fresh *fresh;
    size_t nfresh, cap_fresh;
    struct closing *final; /* stop()'s snapshot of the live threads */
    size_t nfinal;

    /* Writer. */
    int state; /* IDLE .. STOPPED, changed with the GIL held */
    pthread_t writer;
    pthread_mutex_t wlock; /* the wait, and the commands */
    pthread_cond_t wcond;
    _Atomic int stopping, abort;
    _Atomic int fd, cfd;
    struct bytes pend;
    uint8_t *cbuf; /* CONTROL_KEEP + CONTROL_READ */
    size_t clen;
    struct bytes commands[MAX_COMMANDS];
    size_t cmd_first, ncmd;
    _Atomic uint64_t bytes_written, connections, reader_events;

    struct sampler *bg; /* the background sampler, while it runs (GIL) */
    struct tracer tr;
    struct tsc_clock tsc;
    struct allocs *al; /* allocation tracking, once started (GIL) */

    struct ctx *next; /* registry */
};

struct ctxobj {
    PyObject_HEAD
    struct ctx *c;
};

/* Initial-exec: one load from the thread pointer, where the default model
 * for a shared library calls __tls_get_addr() (at every traced call and
 * return).  The 24 bytes come from the static TLS surplus glibc keeps for
 * libraries loaded later. */
static _Thread_local __attribute__((tls_model("initial-exec"))) struct {
    uint64_t serial;
    struct thread *st;
    uint64_t gen;
    int in_alloc; /* inside the allocation tracker: its own allocations are not counted */
} tls;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ctx *g_contexts;
static uint64_t g_serial;
static _Atomic unsigned g_forkgen;
static int g_ready;
static PyTypeObject *g_ctx_type;
static PyObject *g_empty, *g_key_generation, *g_key_collected, *g_key_uncollectable;

static inline int inherited(const struct ctx *c)
{
    return c->forkgen != atomic_load_explicit(&g_forkgen, memory_order_relaxed);
}

/* -- small helpers -------------------------------------------------------- */

/* Big-endian stores, the eventlog's byte order: one byte swap and one store
 * each on a little-endian machine (the tracer writes two per call). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
static inline uint8_t *put16(uint8_t *p, uint16_t v)
{
    v = __builtin_bswap16(v);
    memcpy(p, &v, sizeof v);
    return p + 2;
}

static inline uint8_t *put32(uint8_t *p, uint32_t v)
{
    v = __builtin_bswap32(v);
    memcpy(p, &v, sizeof v);
    return p + 4;
}

static inline uint8_t *put64(uint8_t *p, uint64_t v)
{
    v = __builtin_bswap64(v);
    memcpy(p, &v, sizeof v);
    return p + 8;
}
#else
static inline uint8_t *put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static inline uint8_t *put32(uint8_t *p, uint32_t v)
{
    p = put16(p, (uint16_t)(v >> 16));
    return put16(p, (uint16_t)v);
}

static inline uint8_t *put64(uint8_t *p, uint64_t v)
{
    p = put32(p, (uint32_t)(v >> 32));
    return put32(p, (uint32_t)v);
}
#endif

static inline uint8_t *put_head(uint8_t *p, uint16_t id, uint64_t ts) { return put64(put16(p, id), ts); }

static inline uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double mono_s(void) { return (double)mono_ns() / 1e9; }

static uint64_t line_now(const struct ctx *c);

/* Every event's timestamp.  Once the tracer's line over the TSC runs (see
 * "the tracer's clock"), every event takes its time from that line too: a
 * marker and the calls around it must come out in the order they happened,
 * and two clocks a few hundred nanoseconds apart would not keep it. */
static inline uint64_t now(const struct ctx *c)
{
    if (c->cfg.has_fixed_clock)
        return c->cfg.fixed_clock;
    return atomic_load_explicit(&c->tsc.usable, memory_order_acquire) ? line_now(c) : mono_ns() - c->t0;
}

static int grow(void **items, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need)
        n *= 2;
    void *p = realloc(*items, n * size);
    if (p == NULL)
        return -1;
    *items = p;
    *cap = n;
    return 0;
}

static int reserve(struct bytes *b, size_t more) { return grow((void **)&b->data, &b->cap, b->len + more, 1); }

/* Only after reserve(). */
static uint8_t *claim(struct bytes *b, size_t n)
{
    uint8_t *p = b->data + b->len;
    b->len += n;
    return p;
}

/* -- pool and queue ------------------------------------------------------- */

static int32_t pool_take(struct ctx *c)
{
    uint32_t n = atomic_load_explicit(&c->free_count, memory_order_relaxed);
    do {
        if (n == 0)
            return -1;
    } while (!atomic_compare_exchange_weak_explicit(&c->free_count, &n, n - 1, memory_order_acquire,
                                                    memory_order_relaxed));
    for (;;) {
        for (size_t w = 0; w < c->free_words; w++) {
            uint64_t bits = atomic_load_explicit(&c->free_bits[w], memory_order_relaxed);
            while (bits) {
                uint64_t bit = bits & (~bits + 1);
                if (atomic_compare_exchange_weak_explicit(&c->free_bits[w], &bits, bits & ~bit,
                                                          memory_order_acquire, memory_order_relaxed))
                    return (int32_t)(w * 64 + (size_t)__builtin_ctzll(bit));
            }
        }
    }
}

static void pool_put(struct ctx *c, uint32_t b)
{
    atomic_fetch_or_explicit(&c->free_bits[b / 64], UINT64_C(1) << (b % 64), memory_order_release);
    atomic_fetch_add_explicit(&c->free_count, 1, memory_order_release);
}

static void queue_push(struct ctx *c, uint32_t b)
{
    uint64_t t = atomic_fetch_add_explicit(&c->q_tail, 1, memory_order_relaxed);
    _Atomic uint32_t *cell = &c->ring[t & c->ring_mask];
    uint32_t empty = 0;
    while (!atomic_compare_exchange_weak_explicit(cell, &empty, b + 1, memory_order_release,
                                                  memory_order_relaxed))
        empty = 0;
}

static int32_t queue_peek(struct ctx *c)
{
    uint64_t h = atomic_load_explicit(&c->q_head, memory_order_relaxed);
    return (int32_t)atomic_load_explicit(&c->ring[h & c->ring_mask], memory_order_acquire) - 1;
}

static void queue_pop(struct ctx *c)
{
    uint64_t h = atomic_load_explicit(&c->q_head, memory_order_relaxed);
    atomic_store_explicit(&c->ring[h & c->ring_mask], 0, memory_order_release);
    atomic_store_explicit(&c->q_head, h + 1, memory_order_relaxed);
}

/* -- text ----------------------------------------------------------------- */

/* What a payload's tail encodes: raw bytes (kind 0), or the first `chars`
 * code units of a str, which encode to `bytes` bytes of UTF-8. */
struct text {
    const void *data;
    Py_ssize_t chars;
    size_t bytes;
    int kind;
};

/* clip_text() of pure.py without building the encoded string: UTF-8 with
 * surrogateescape, cut to max_text bytes where its backward walk over
 * continuation bytes would stop.  That walk also steps over escaped bytes in
 * 0x80..0xbf (it only sees bytes), and so does this. */
static int text_measure(size_t max, int kind, const void *data, Py_ssize_t n, struct text *t);

static int text_prepare(const struct ctx *c, PyObject *s, struct text *t)
{
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "expected str, got %.200s", Py_TYPE(s)->tp_name);
        return -1;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(s) < 0)
        return -1;
#endif
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (text_measure(c->cfg.max_text, PyUnicode_IS_ASCII(s) ? 0 : PyUnicode_KIND(s), PyUnicode_DATA(s), n, t) == 0)
        return 0;
    /* Let the codec raise the very error pure.py's encode() raises. */
    PyObject *r = PyUnicode_AsEncodedString(s, "utf-8", "surrogateescape");
    if (r != NULL) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_UnicodeError, "text cannot be encoded");
    }
    return -1;
}

/* text_prepare's walk over `n` code units of `kind` (0: ASCII) at `data`;
 * -1 (no exception) for a character UTF-8 with surrogateescape cannot
 * encode.  Needs no GIL: the background sampler measures copies with it. */
static int text_measure(size_t max, int kind, const void *data, Py_ssize_t n, struct text *t)
{
    if (kind == 0) {
        t->kind = 0;
        t->data = data;
        t->bytes = (size_t)n < max ? (size_t)n : max;
        return 0;
    }
    size_t pos = 0, cut = 0;
    Py_ssize_t cut_chars = 0, i;
    int over = 0;
    for (i = 0; i < n; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        size_t len;
        int looks_continuation = 0;
        if (ch < 0x80)
            len = 1;
        else if (ch < 0x800)
            len = 2;
        else if (ch >= 0xD800 && ch <= 0xDFFF) {
            if (ch < 0xDC80 || ch > 0xDCFF) /* surrogateescape's range */
                goto unencodable;
            len = 1;
            looks_continuation = ch < 0xDCC0;
        }
        else
            len = ch < 0x10000 ? 3 : 4;
        if (over) {
            if (kind == PyUnicode_1BYTE_KIND)
                break; /* nothing left that could fail to encode */
            continue;
        }
        if (pos <= max && !looks_continuation) {
            cut = pos;
            cut_chars = i;
        }
        pos += len;
        over = pos > max;
    }
    t->kind = kind;
    t->data = data;
    if (over) {
        t->bytes = cut;
        t->chars = cut_chars;
    }
    else {
        t->bytes = pos;
        t->chars = n;
    }
    return 0;

unencodable:
    return -1;
}

static uint8_t *text_put(uint8_t *p, const struct text *t)
{
    if (t->kind == 0) {
        if (t->bytes)
            memcpy(p, t->data, t->bytes);
        return p + t->bytes;
    }
    for (Py_ssize_t i = 0; i < t->chars; i++) {
        Py_UCS4 ch = PyUnicode_READ(t->kind, t->data, i);
        if (ch < 0x80)
            *p++ = (uint8_t)ch;
        else if (ch < 0x800) {
            *p++ = (uint8_t)(0xC0 | (ch >> 6));
            *p++ = (uint8_t)(0x80 | (ch & 0x3F));
        }
        else if (ch >= 0xDC80 && ch <= 0xDCFF)
            *p++ = (uint8_t)(ch - 0xDC00);
        else if (ch < 0x10000) {
            *p++ = (uint8_t)(0xE0 | (ch >> 12));
            *p++ = (uint8_t)(0x80 | ((ch >> 6) & 0x3F));
            *p++ = (uint8_t)(0x80 | (ch & 0x3F));
        }
        else {
            *p++ = (uint8_t)(0xF0 | (ch >> 18));
            *p++ = (uint8_t)(0x80 | ((ch >> 12) & 0x3F));
            *p++ = (uint8_t)(0x80 | ((ch >> 6) & 0x3F));
            *p++ = (uint8_t)(0x80 | (ch & 0x3F));
        }
    }
    return p;
}

/* A thread name's label bytes, as clip_text() makes them, in memory of its
 * own (NULL when empty).  A name that clip_text() cannot encode (a lone
 * surrogate) would stop PureSink's writer; here its bad characters become
 * '?' instead. */
static int make_label(const struct ctx *c, PyObject *name, uint8_t **label, uint32_t *len)
{
    struct text t;
    *label = NULL;
    *len = 0;
    if (text_prepare(c, name, &t) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear();
        PyObject *b = PyUnicode_AsEncodedString(name, "utf-8", "replace");
        if (b == NULL)
            return -1;
        PyObject *s = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), "strict");
        Py_DECREF(b);
        if (s == NULL)
            return -1;
        int rc = make_label(c, s, label, len);
        Py_DECREF(s);
        return rc;
    }
    if (t.bytes == 0)
        return 0;
    *label = malloc(t.bytes);
    if (*label == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    text_put(*label, &t);
    *len = (uint32_t)t.bytes;
    return 0;
}

/* -- the event path ------------------------------------------------------- */

static int take_buffer(struct ctx *c, struct thread *st, uint64_t seq)
{
    int32_t b = pool_take(c);
    if (b < 0)
        return 0;
    struct buf *m = &c->bufs[b];
    /* A buffer opening with a PyDataLoss record starts at the first lost
     * sequence number: the record accounts for the numbers up to `seq`. */
    m->first_seq = st->lost ? st->lost_first : seq;
    m->base_seq = seq;
    m->slot = st->slot;
    m->number = st->number;
    atomic_store_explicit(&m->committed, 0, memory_order_relaxed);
    st->buf = b;
    st->used = st->events = 0;
    atomic_store_explicit(&c->slot_buf[st->slot], (uint32_t)b + 1, memory_order_release);
    return 1;
}

static void queue_current(struct ctx *c, struct thread *st)
{
    atomic_store_explicit(&c->slot_buf[st->slot], 0, memory_order_relaxed);
    queue_push(c, (uint32_t)st->buf);
    st->buf = -1;
}

/* PureSink._emit: one event of `head` (id, ts, length if variable, fixed
 * fields) then `tail`, into the thread's buffer, which no other thread is
 * filling (put_event() sees to that for the monitor's). */
static void put_owned(struct ctx *c, struct thread *st, uint64_t ts, const uint8_t *head, size_t hlen,
                      const struct text *tail)
{
    if (atomic_load_explicit(&c->paused, memory_order_relaxed))
        return;
    uint64_t seq = st->seq++;
    size_t len = hlen + (tail ? tail->bytes : 0);
    size_t need = len + (st->lost ? LOSS_EVENT : 0);
    if (st->buf < 0 || st->used + need > c->size) {
        if (st->buf >= 0)
            queue_current(c, st);
        if (need > c->size || !take_buffer(c, st, seq)) {
            if (!st->lost)
                st->lost_first = seq;
            st->lost++;
            st->lost_bytes += len;
            atomic_fetch_add_explicit(&c->dropped, 1, memory_order_relaxed);
            return;
        }
    }
    uint8_t *base = c->mem + (size_t)st->buf * c->size;
    uint8_t *p = base + st->used;
    if (st->lost) {
        p = put_head(p, EV_DATA_LOSS, ts);
        p = put32(p, st->number);
        p = put64(p, st->lost_first);
        p = put64(p, st->lost);
        p = put64(p, st->lost_bytes);
        st->lost = st->lost_bytes = 0;
    }
    uint64_t start = (uint64_t)(p - base);
    memcpy(p, head, hlen);
    p += hlen;
    if (tail)
        p = text_put(p, tail);
    st->used = (uint32_t)(p - base);
    st->events++;
    atomic_store_explicit(&c->bufs[st->buf].committed,
                          st->used | start << COMMIT_BITS | (uint64_t)st->events << (2 * COMMIT_BITS),
                          memory_order_release);
}

static void put_event(struct ctx *c, struct thread *st, uint64_t ts, const uint8_t *head, size_t hlen,
                      const struct text *tail);

/* -- threads (cold; under c->lock unless said otherwise) ------------------ */

static struct thread *find_by_ident(struct ctx *c, unsigned long ident)
{
    for (size_t i = 0; i < c->nlive; i++)
        if (c->live[i]->in_by_ident && c->live[i]->ident == ident)
            return c->live[i];
    return NULL;
}

/* A state is reused once its thread has ended and the writer has both
 * announced it and closed it. */
static void maybe_recycle(struct ctx *c, struct thread *st)
{
    if (st->live || st->unannounced || st->unclosed)
        return;
    free(st->label);
    st->label = NULL;
    st->label_len = 0;
    st->next_free = c->free_states;
    c->free_states = st;
}

/* PureSink._new_thread.  Takes over `label` (clip_text(name)) on success;
 * an empty name gets the default, and so does a NULL one, which needs no
 * GIL.  NULL when out of memory or slots. */
static struct thread *new_thread(struct ctx *c, unsigned long ident, unsigned long native_id, PyObject *name,
                                 uint8_t *label, uint32_t label_len)
{
    if (grow((void **)&c->live, &c->cap_live, c->nlive + 1, sizeof *c->live) < 0 ||
        grow((void **)&c->fresh, &c->cap_fresh, c->nfresh + 1, sizeof *c->fresh) < 0 ||
        grow((void **)&c->announce, &c->cap_announce, c->nannounce + 1, sizeof *c->announce) < 0)
        return NULL;
    if (c->free_states == NULL && (c->chunks == NULL || c->chunk_used == CHUNK)) {
        struct chunk *k = calloc(1, sizeof *k);
        if (k == NULL)
            return NULL;
        k->next = c->chunks;
        c->chunks = k;
        c->chunk_used = 0;
    }
    uint32_t slot = 0;
    while (slot < MAX_SLOTS && (c->slot_used[slot / 64] >> (slot % 64) & 1))
        slot++;
    if (slot == MAX_SLOTS)
        return NULL;
    uint32_t number = c->next_number;
    PyObject *given = name;
    if (name == NULL || PyUnicode_GET_LENGTH(name) == 0) {
        char text[32];
        int n = snprintf(text, sizeof text, "thread-%u", number);
        /* Allocates, but runs no Python code and cannot start a collection.
         * No name at all: the background sampler's call, without the GIL;
         * lpm_take_new() makes the str. */
        given = name == NULL ? NULL : PyUnicode_FromStringAndSize(text, n);
        label = malloc((size_t)n);
        if ((name != NULL && given == NULL) || label == NULL) {
            if (name != NULL)
                PyErr_Clear();
            Py_XDECREF(given);
            free(label);
            return NULL;
        }
        memcpy(label, text, (size_t)n);
        label_len = (uint32_t)n;
    }
    else
        Py_INCREF(given);
    struct thread *st = c->free_states;
    if (st != NULL)
        c->free_states = st->next_free;
    else
        st = &c->chunks->t[c->chunk_used++];
    uint64_t gen = st->gen;
    memset(st, 0, sizeof *st);
    st->gen = gen;
    st->buf = -1;
    st->number = number;
    c->next_number++;
    st->slot = slot;
    st->ident = ident;
    st->native_id = native_id;
    st->label = label;
    st->label_len = label_len;
    st->live = 1;
    st->unannounced = 1;
    st->unnamed = given != name || name == NULL ? NAME_TRIES : 0;
    c->slot_used[slot / 64] |= UINT64_C(1) << (slot % 64);
    struct thread *old = find_by_ident(c, ident);
    if (old != NULL)
        old->in_by_ident = 0;
    st->in_by_ident = 1;
    c->live[c->nlive++] = st;
    c->fresh[c->nfresh++] = (struct fresh){number, ident, native_id, given};
    c->announce[c->nannounce++] = st;
    if (slot + 1 > atomic_load_explicit(&c->slot_top, memory_order_relaxed))
        atomic_store_explicit(&c->slot_top, slot + 1, memory_order_release);
    return st;
}

/* PureSink.thread_exit. */
static void thread_exit(struct ctx *c, struct thread *st)
{
    if (!st->live)
        return;
    st->live = 0;
    st->gen++;
    if (st->buf >= 0)
        queue_current(c, st);
    for (size_t i = 0; i < c->nlive; i++) {
        if (c->live[i] == st) {
            memmove(&c->live[i], &c->live[i + 1], (c->nlive - i - 1) * sizeof *c->live);
            c->nlive--;
            break;
        }
    }
    st->in_by_ident = 0;
    c->slot_used[st->slot / 64] &= ~(UINT64_C(1) << (st->slot % 64));
    if (grow((void **)&c->retiring, &c->cap_retiring, c->nretiring + 1, sizeof *c->retiring) == 0) {
        st->unclosed = 1;
        c->retiring[c->nretiring++] = st;
    }
    else
        maybe_recycle(c, st); /* out of memory: no closing block for it */
}

struct watch {
    uint64_t serial;
    struct thread *st;
    uint64_t gen;
};

static const char WATCH_NAME[] = "lpm.leech.exit_watch";

/* The capsule's destructor: the thread state holding it is being cleared.
 * Runs with the GIL; takes the registry lock, then the context's. */
static void alloc_final(struct ctx *c, struct thread *st);

static void watch_fired(PyObject *capsule)
{
    struct watch *w = PyCapsule_GetPointer(capsule, WATCH_NAME);
    if (w == NULL)
        return;
    pthread_mutex_lock(&g_lock);
    for (struct ctx *c = g_contexts; c != NULL; c = c->next) {
        if (c->serial == w->serial) {
            if (!inherited(c)) {
                if (w->st->gen == w->gen)
                    alloc_final(c, w->st); /* its last totals, in its own last block */
                pthread_mutex_lock(&c->lock);
                if (w->st->gen == w->gen)
                    thread_exit(c, w->st);
                pthread_mutex_unlock(&c->lock);
            }
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
    free(w);
}

/* PureSink's `_local.watch = _ExitWatch(self, st)`, keeping a watch that is
 * already on this very state (a thread moving between two sinks).  No lock. */
static int watch_thread(struct ctx *c, struct thread *st)
{
    PyObject *dict = PyThreadState_GetDict();
    if (dict == NULL)
        return 0;
    PyObject *old = PyDict_GetItemWithError(dict, c->watch_key);
    if (old != NULL && PyCapsule_IsValid(old, WATCH_NAME)) {
        struct watch *ow = PyCapsule_GetPointer(old, WATCH_NAME);
        if (ow->st == st && ow->gen == st->gen)
            return 0;
    }
    else if (old == NULL && PyErr_Occurred())
        return -1;
    struct watch *w = malloc(sizeof *w);
    if (w == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *w = (struct watch){c->serial, st, st->gen};
    PyObject *capsule = PyCapsule_New(w, WATCH_NAME, NULL);
    if (capsule == NULL) {
        free(w);
        return -1;
    }
    /* The destructor is set only once the capsule is in place, so a failed
     * insert cannot end the thread it was meant to watch. */
    if (PyDict_SetItem(dict, c->watch_key, capsule) < 0) {
        Py_DECREF(capsule);
        free(w);
        return -1;
    }
    PyCapsule_SetDestructor(capsule, watch_fired);
    Py_DECREF(capsule);
    return 0;
}

/* PureSink._register's name: threading._active[ident].name, or "" for a
 * thread threading does not know (in its teardown, or started with _thread),
 * where current_thread() would make a _DummyThread in the program. */
static PyObject *thread_name(void)
{
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL)
        return NULL;
    PyObject *active = PyObject_GetAttrString(threading, "_active");
    Py_DECREF(threading);
    if (active == NULL)
        return NULL;
    PyObject *ident = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    PyObject *thread = ident != NULL ? PyObject_GetItem(active, ident) : NULL;
    Py_XDECREF(ident);
    Py_DECREF(active);
    if (thread == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError))
            return NULL;
        PyErr_Clear();
        return PyUnicode_FromString("");
    }
    PyObject *name = PyObject_GetAttrString(thread, "name");
    Py_DECREF(thread);
    if (name != NULL && !PyUnicode_Check(name)) {
        Py_SETREF(name, PyObject_Str(name));
    }
    return name;
}

static void *no_slot(void)
{
    PyErr_SetString(PyExc_MemoryError, "lpm: no memory or no free slot for another thread");
    return NULL;
}

static void name_unnamed(struct ctx *c, struct thread *st);

/* The calling thread's state when it is registered with `c` and alive, else
 * NULL: the fast path of every event. */
static inline struct thread *registered(const struct ctx *c)
{
    return tls.serial == c->serial && tls.st->gen == tls.gen ? tls.st : NULL;
}

/* PureSink._register.  No lock held.  NULL with an exception on failure,
 * NULL without one for an inherited context (whose events go nowhere). */
static struct thread *register_thread(struct ctx *c)
{
    if (inherited(c))
        return NULL;
    struct thread *known = registered(c);
    if (known != NULL) { /* registered, still unnamed */
        name_unnamed(c, known);
        return known;
    }
    unsigned long ident = PyThread_get_thread_ident();
    unsigned long native_id = PyThread_get_thread_native_id();
    pthread_mutex_lock(&c->lock);
    struct thread *st = find_by_ident(c, ident);
    pthread_mutex_unlock(&c->lock);
    if (st == NULL || (st->native_id != native_id && st->native_id != 0)) {
        /* Asked outside the lock: it runs Python code, which may emit (a GC
         * callback) and so register this very thread first. */
        PyObject *name = thread_name();
        uint8_t *label;
        uint32_t label_len;
        if (name == NULL)
            return NULL;
        if (make_label(c, name, &label, &label_len) < 0) {
            Py_DECREF(name);
            return NULL;
        }
        pthread_mutex_lock(&c->lock);
        st = find_by_ident(c, ident);
        if (st == NULL || (st->native_id != native_id && st->native_id != 0)) {
            st = new_thread(c, ident, native_id, name, label, label_len);
            if (st != NULL)
                label = NULL;
        }
        pthread_mutex_unlock(&c->lock);
        Py_DECREF(name);
        free(label);
        if (st == NULL)
            return no_slot();
    }
    /* The sampler may have registered this thread, native id unknown, before
     * it emitted: this is that thread. */
    pthread_mutex_lock(&c->lock);
    st->native_id = native_id;
    pthread_mutex_unlock(&c->lock);
    if (watch_thread(c, st) < 0)
        return NULL;
    tls.serial = c->serial;
    tls.st = st;
    tls.gen = st->gen;
    if (st->unnamed)
        name_unnamed(c, st);
    return st;
}

/* A thread numbered before threading listed it (by the background
 * sampler's adopt(), the monitor's scan, or its own first event: a
 * collection in its start-up) carries the default name.  Its next events,
 * up to NAME_TRIES of them, look for its own name, which the monitor's scan
 * would find only if the thread lived that long.  A thread threading never
 * lists (started with _thread) costs those few lookups and keeps the
 * default. */
static void name_unnamed(struct ctx *c, struct thread *st)
{
    PyObject *name = thread_name();
    uint8_t *label = NULL;
    uint32_t label_len = 0;
    if (name == NULL || PyUnicode_GET_LENGTH(name) == 0 || make_label(c, name, &label, &label_len) < 0) {
        PyErr_Clear();
        Py_XDECREF(name);
        st->unnamed--;
        return;
    }
    st->unnamed = 0;
    pthread_mutex_lock(&c->lock);
    int announced = !st->unannounced;
    uint8_t *old = st->label;
    st->label = label;
    st->label_len = label_len;
    pthread_mutex_unlock(&c->lock);
    free(old);
    struct text t;
    if (announced && text_prepare(c, name, &t) == 0) { /* else the announcement carries the new label */
        uint64_t ts = now(c);
        uint8_t head[HEAD + 2 + 4];
        put32(put16(put_head(head, EV_THREAD_LABEL, ts), (uint16_t)(4 + t.bytes)), st->number);
        put_event(c, st, ts, head, sizeof head, &t);
    }
    PyErr_Clear();
    Py_DECREF(name);
}

static inline struct thread *current(struct ctx *c)
{
    struct thread *st = registered(c);
    return st != NULL && !st->unnamed ? st : register_thread(c);
}

/* -- the functions Python calls per event ----------------------------------- */

#define CTX(self) (((struct ctxobj *)(self))->c)

/* Positional-or-keyword arguments for METH_FASTCALL | METH_KEYWORDS. */
static int parse_args(const char *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int n,
                      const char *const *names, PyObject **out)
{
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes %d positional arguments but %zd were given", fn, n, nargs);
        return -1;
    }
    for (int i = 0; i < n; i++)
        out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int j = 0;
        while (j < n && PyUnicode_CompareWithASCIIString(key, names[j]) != 0)
            j++;
        if (j == n) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fn, key);
            return -1;
        }
        if (out[j] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fn, names[j]);
            return -1;
        }
        out[j] = args[nargs + k];
    }
    for (int i = 0; i < n; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fn, names[i]);
            return -1;
        }
    }
    return 0;
}

#define ARGS(fn, n, ...)                                               \
    static const char *const names_[] = {__VA_ARGS__};                 \
    PyObject *arg[n];                                                  \
    if (kwnames == NULL && nargs == (n))                               \
        memcpy(arg, args, sizeof arg);                                 \
    else if (parse_args(fn, args, nargs, kwnames, n, names_, arg) < 0) \
    return NULL

/* The thread's state, or the early return of an event function: NULL on an
 * error, `quiet` for an inherited context. */
#define CURRENT(st, c, quiet)                                \
    struct thread *st = current(c);                          \
    if (st == NULL)                                          \
    return PyErr_Occurred() ? NULL : (quiet)

/* message, marker: a variable event whose payload is the clipped text. */
static PyObject *text_event(PyObject *self, PyObject *text, uint16_t id)
{
    struct ctx *c = CTX(self);
    struct text t;
    if (text_prepare(c, text, &t) < 0)
        return NULL;
    uint64_t ts = now(c);
    CURRENT(st, c, Py_NewRef(Py_None));
    uint8_t head[HEAD + 2];
    put16(put_head(head, id, ts), (uint16_t)t.bytes);
    put_event(c, st, ts, head, sizeof head, &t);
    Py_RETURN_NONE;
}

static PyObject *py_message(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    ARGS("message", 1, "text");
    return text_event(self, arg[0], EV_USER_MESSAGE);
}

static PyObject *py_marker(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    ARGS("marker", 1, "name");
    return text_event(self, arg[0], EV_USER_MARKER);
}

static PyObject *py_counter(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    ARGS("counter", 2, "name", "value");
    struct ctx *c = CTX(self);
    struct text t;
    if (text_prepare(c, arg[0], &t) < 0)
        return NULL;
    double value = PyFloat_AsDouble(arg[1]);
    if (value == -1.0 && PyErr_Occurred())
        return NULL;
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    uint64_t ts = now(c);
    CURRENT(st, c, Py_NewRef(Py_None));
    uint8_t head[HEAD + 2 + 8];
    put64(put16(put_head(head, EV_COUNTER, ts), (uint16_t)(8 + t.bytes)), bits);
    put_event(c, st, ts, head, sizeof head, &t);
    Py_RETURN_NONE;
}

static PyObject *py_span_begin(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    ARGS("span_begin", 1, "name");
    struct ctx *c = CTX(self);
    CURRENT(st, c, PyLong_FromLong(0));
    uint64_t span = (uint64_t)st->number << 32 | (st->seq & 0xFFFFFFFFu);
    struct text t;
    if (text_prepare(c, arg[0], &t) < 0)
        return NULL;
    uint64_t ts = now(c);
    uint8_t head[HEAD + 2 + 8];
    put64(put16(put_head(head, EV_SPAN_BEGIN, ts), (uint16_t)(8 + t.bytes)), span);
    put_event(c, st, ts, head, sizeof head, &t);
    return PyLong_FromUnsignedLongLong(span);
}

static PyObject *py_span_end(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    ARGS("span_end", 1, "span");
    struct ctx *c = CTX(self);
    PyObject *n = PyNumber_Index(arg[0]);
    if (n == NULL)
        return NULL;
    uint64_t span = PyLong_AsUnsignedLongLongMask(n); /* span & 0xFFFFFFFFFFFFFFFF */
    Py_DECREF(n);
    if (span == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    uint64_t ts = now(c);
    CURRENT(st, c, Py_NewRef(Py_None));
    uint8_t head[HEAD + EV_SPAN_END_SIZE];
    put64(put_head(head, EV_SPAN_END, ts), span);
    put_event(c, st, ts, head, sizeof head, NULL);
    Py_RETURN_NONE;
}

static PyObject *py_emit(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    ARGS("emit", 3, "type_id", "payload", "variable");
    struct ctx *c = CTX(self);
    long type_id = PyLong_AsLong(arg[0]);
    if (type_id == -1 && PyErr_Occurred())
        return NULL;
    if (type_id < 0 || type_id > 0xFFFF) {
        PyErr_Format(PyExc_ValueError, "event type id %ld is not a u16", type_id);
        return NULL;
    }
    int variable = PyObject_IsTrue(arg[2]);
    if (variable < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(arg[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    if (variable && view.len > MAX_PAYLOAD) {
        PyErr_Format(PyExc_ValueError, "a variable-size payload holds at most %d bytes, not %zd", MAX_PAYLOAD,
                     view.len);
        goto done;
    }
    uint64_t ts = now(c);
    struct thread *st = current(c);
    if (st == NULL) {
        if (!PyErr_Occurred())
            result = Py_NewRef(Py_None);
        goto done;
    }
    uint8_t head[HEAD + 2];
    uint8_t *p = put_head(head, (uint16_t)type_id, ts);
    if (variable)
        p = put16(p, (uint16_t)view.len);
    struct text t = {view.buf, 0, (size_t)view.len, 0};
    put_event(c, st, ts, head, (size_t)(p - head), &t);
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&view);
    return result;
}

/* info.get(key, 0) for the dict gc passes (or any mapping with .get). */
static int info_get(PyObject *info, PyObject *key, uint64_t max, uint64_t *out)
{
    PyObject *v;
    if (PyDict_CheckExact(info)) {
        v = PyDict_GetItemWithError(info, key);
        if (v == NULL) {
            *out = 0;
            return PyErr_Occurred() ? -1 : 0;
        }
        Py_INCREF(v);
    }
    else {
        v = PyObject_CallMethod(info, "get", "Oi", key, 0);
        if (v == NULL)
            return -1;
    }
    PyObject *n = PyNumber_Index(v);
    Py_DECREF(v);
    if (n == NULL)
        return -1;
    *out = PyLong_AsUnsignedLongLong(n);
    Py_DECREF(n);
    if (*out == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    if (*out > max) {
        PyErr_Format(PyExc_OverflowError, "gc info %R is out of range", key);
        return -1;
    }
    return 0;
}

static PyObject *py_gc_callback(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    ARGS("gc_callback", 2, "phase", "info");
    struct ctx *c = CTX(self);
    uint64_t ts = now(c);
    int start = PyUnicode_Check(arg[0]) && PyUnicode_CompareWithASCIIString(arg[0], "start") == 0;
    CURRENT(st, c, Py_NewRef(Py_None));
    uint8_t head[HEAD + EV_GC_COLLECTION_SIZE];
    put_head(head, start ? EV_START_GC : EV_END_GC, ts);
    put_event(c, st, ts, head, HEAD, NULL);
    if (start)
        Py_RETURN_NONE;
    uint64_t gen, collected, uncollectable;
    if (info_get(arg[1], g_key_generation, 0xFFFF, &gen) < 0 ||
        info_get(arg[1], g_key_collected, UINT64_MAX, &collected) < 0 ||
        info_get(arg[1], g_key_uncollectable, UINT64_MAX, &uncollectable) < 0)
        return NULL;
    st = current(c); /* .get() of a mapping that is not a dict ran Python code */
    if (st == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    put64(put64(put16(put_head(head, EV_GC_COLLECTION, ts), (uint16_t)gen), collected), uncollectable);
    put_event(c, st, ts, head, sizeof head, NULL);
    Py_RETURN_NONE;
}


/* -- stack samples ---------------------------------------------------------- */

/* Monitor._sample_python's walk, in C: the samples cost the program one call
 * from the monitor thread instead of a Python loop per frame.  `code` is a
 * name, first line and file; the event is built whole in `out` (at most
 * HEAD + 2 + 8 + 2 * (max_text + 1) bytes: max_text is under 64 KiB - 8). */
/* PyCode: `number` is function `name` of `filename` from line `first_line`. */
static int declare(struct ctx *c, struct thread *st, uint64_t ts, uint32_t number, uint32_t first_line,
                   PyObject *name, PyObject *filename)
{
    struct text tn, tf;
    if (text_prepare(c, name, &tn) < 0 || text_prepare(c, filename, &tf) < 0)
        return -1;
    size_t len = 8 + tn.bytes + 1 + tf.bytes + 1;
    if (len > MAX_PAYLOAD) { /* two clipped texts always fit; this is a guard */
        PyErr_SetString(PyExc_ValueError, "code object description too long");
        return -1;
    }
    uint8_t *out = PyMem_Malloc(HEAD + 2 + len);
    if (out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    uint8_t *p = put16(put_head(out, EV_CODE, ts), (uint16_t)len);
    p = put32(put32(p, number), first_line);
    p = text_put(p, &tn);
    *p++ = 0;
    p = text_put(p, &tf);
    *p++ = 0;
    put_event(c, st, ts, out, (size_t)(p - out), NULL);
    PyMem_Free(out);
    return 0;
}

static int code_event(struct ctx *c, struct thread *st, uint64_t ts, PyCodeObject *code, uint32_t number)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *name = code->co_qualname;
#else
    PyObject *name = code->co_name;
#endif
    return declare(c, st, ts, number, (uint32_t)code->co_firstlineno, name, code->co_filename);
}

/* The frames of one thread, innermost first, as code numbers; new code
 * objects are numbered len(codes) + 1 and declared with PyCode. */
static int sample_thread(struct ctx *c, struct thread *st, uint64_t ts, PyThreadState *ts_other, uint32_t number,
                         PyObject *codes, PyObject *refs, uint8_t *out)
{
    uint8_t *p = put_head(out, EV_SAMPLE, ts) + 2;
    p = put32(p, number);
    uint32_t depth = 0;
    PyFrameObject *f = PyThreadState_GetFrame(ts_other);
    if (f == NULL)
        return 0; /* not running Python code: sys._current_frames() leaves it out too */
    while (f != NULL && depth < MAX_DEPTH) {
        PyCodeObject *code = PyFrame_GetCode(f);
        PyObject *key = PyLong_FromVoidPtr(code); /* id(code): see Monitor.__init__ */
        PyObject *known = key != NULL ? PyDict_GetItemWithError(codes, key) : NULL;
        long n;
        if (known != NULL)
            n = PyLong_AsLong(known);
        else if (PyErr_Occurred())
            n = -1;
        else {
            n = (long)PyDict_Size(codes) + 1;
            PyObject *value = PyLong_FromLong(n);
            if (value == NULL || PyDict_SetItem(codes, key, value) < 0 || PyList_Append(refs, (PyObject *)code) < 0 ||
                code_event(c, st, ts, code, (uint32_t)n) < 0)
                n = -1;
            Py_XDECREF(value);
        }
        Py_XDECREF(key);
        Py_DECREF(code);
        if (n < 0 && PyErr_Occurred()) {
            Py_DECREF(f);
            return -1;
        }
        p = put32(p, (uint32_t)n);
        depth++;
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    Py_XDECREF(f);
    put16(out + HEAD, (uint16_t)(4 + 4 * depth));
    put_event(c, st, ts, out, (size_t)(p - out), NULL);
    return 0;
}

/* sample(numbers, codes, refs) -> list of idents not in `numbers`, or None.
 * One PySample per thread of the interpreter whose ident maps to a thread
 * number >= 0 in `numbers` (the leech's own threads map to -1), into the
 * calling thread's buffer, all with one timestamp.  `codes` maps id(code)
 * to its number; a new code object is appended to `refs`, which keeps it
 * (and so its id) alive for the generation. */
static PyObject *py_sample(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    ARGS("sample", 3, "numbers", "codes", "refs");
    struct ctx *c = CTX(self);
    if (!PyDict_Check(arg[0]) || !PyDict_Check(arg[1]) || !PyList_Check(arg[2])) {
        PyErr_SetString(PyExc_TypeError, "sample(numbers, codes, refs) takes two dicts and a list");
        return NULL;
    }
    uint64_t ts = now(c);
    CURRENT(st, c, Py_NewRef(Py_None));
    PyObject *unknown = NULL;
    uint8_t out[HEAD + 2 + 4 + 4 * MAX_DEPTH];
    PyThreadState *me = PyThreadState_Get();
    for (PyThreadState *t = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(me)); t != NULL;
         t = PyThreadState_Next(t)) {
        PyObject *ident = PyLong_FromUnsignedLong(t->thread_id);
        if (ident == NULL)
            goto error;
        PyObject *found = PyDict_GetItemWithError(arg[0], ident);
        if (found == NULL) {
            if (PyErr_Occurred() || ((unknown != NULL || (unknown = PyList_New(0)) != NULL) &&
                                     PyList_Append(unknown, ident) < 0)) {
                Py_DECREF(ident);
                goto error;
            }
            Py_DECREF(ident);
            if (unknown == NULL)
                goto error;
            continue;
        }
        Py_DECREF(ident);
        long number = PyLong_AsLong(found);
        if (number == -1 && PyErr_Occurred())
            goto error;
        if (number < 0 || number > UINT32_MAX)
            continue;
        if (sample_thread(c, st, ts, t, (uint32_t)number, arg[1], arg[2], out) < 0)
            goto error;
    }
    return unknown != NULL ? unknown : Py_NewRef(Py_None);
error:
    Py_XDECREF(unknown);
    return NULL;
}

/* -- the background sampler: stack samples without the GIL ----------------- */

/* Taking the GIL for every sample costs the program more than the walk: at
 * each tick it stops, hands the GIL over and waits to get it back, three
 * thread wake-ups on the critical path (about 2% of wall time at 100 Hz on
 * a 2-vCPU VM, bench/overhead.py).  So, as py-spy does from outside the
 * process, this pthread reads the interpreter's thread states, frames and
 * code objects while the program runs, never taking the GIL.  Every read of
 * interpreter memory goes through process_vm_readv() on our own pid: memory
 * freed and unmapped under our feet (a data-stack chunk popped, an arena
 * released) fails the read instead of faulting, and what was read is
 * validated (a thread state's interpreter, a code object's type, a str's
 * type and layout) before use.  A walk can still see a torn stack, as
 * py-spy's non-blocking mode can; samples are statistical anyway.
 *
 * Code objects cannot be kept alive without the GIL, so the table keys a
 * code object by its address *and* what it read there (name, file, first
 * line): an address reused by another function gets a new number.
 *
 * Samples go into the monitor thread's buffer, under `lock`, which the
 * monitor's own events take too (put_event): one buffer keeps PyCode before
 * the samples that use it and PyGeneration (emitted by
 * lpm_bg_generation(), which empties the table under the same lock) between
 * one generation's numbers and the next. */

#if PY_VERSION_HEX >= 0x030B0000
typedef _PyInterpreterFrame frame_t;
#if PY_VERSION_HEX >= 0x030D0000
#define FRAME_CODE(f) ((uintptr_t)(f)->f_executable)
#else
#define FRAME_CODE(f) ((uintptr_t)(f)->f_code)
#endif
#define FRAME_BACK(f) ((uintptr_t)(f)->previous)
#else
typedef PyFrameObject frame_t;
#define FRAME_CODE(f) ((uintptr_t)(f)->f_code)
#define FRAME_BACK(f) ((uintptr_t)(f)->f_back)
#endif

#if PY_VERSION_HEX >= 0x030B0000
#define CODE_NAME(co) ((uintptr_t)(co)->co_qualname)
#else
#define CODE_NAME(co) ((uintptr_t)(co)->co_name)
#endif

/* The largest data-stack chunk copied whole; frames outside it are read
 * one by one. */
#define STACK_COPY (256u << 10)
#define BATCH 64 /* code objects read per process_vm_readv() */

struct code_entry {
    uintptr_t code, name, file;
    int32_t line;
    uint32_t number; /* 0: empty */
};

struct sampler {
    struct ctx *c;
    struct thread *st; /* the monitor thread's: its buffer takes the samples */
    PyInterpreterState *interp;
    unsigned long own_ident;
    pid_t pid;
    pthread_t thread;
    pthread_mutex_t lock; /* st's buffer, and the code table */
    pthread_mutex_t wlock;
    pthread_cond_t wcond;
    _Atomic uint64_t interval_ns; /* 0: sampling off */
    _Atomic int stop;
    _Atomic uint64_t ticks, faults, ncodes;
    struct code_entry *codes;
    size_t cap; /* a power of two */
    uint32_t next_code;
    /* Scratch of the sampler thread. */
    struct { unsigned long ident; uint32_t number; } *threads;
    size_t nthreads, cap_threads;
    uintptr_t *frames; /* per sampled thread: MAX_DEPTH code addresses */
    uint32_t *depth, *numbers;
    size_t cap_sampled;
    uint8_t *copy;  /* STACK_COPY */
    uint8_t *text;  /* 4 * (max_text + 1) */
};

static int peek(const struct sampler *s, void *dst, uintptr_t src, size_t n)
{
    struct iovec local = {dst, n}, remote = {(void *)src, n};
    return src != 0 && process_vm_readv(s->pid, &local, 1, &remote, 1, 0) == (ssize_t)n ? 0 : -1;
}

static int by_ident(const void *a, const void *b)
{
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return x < y ? -1 : x > y;
}

/* The live threads' numbers, sorted by ident, without lpm's own. */
static int snapshot_threads(struct sampler *s)
{
    struct ctx *c = s->c;
    pthread_mutex_lock(&c->lock);
    int ok = grow((void **)&s->threads, &s->cap_threads, c->nlive + 1, sizeof *s->threads) == 0;
    s->nthreads = 0;
    for (size_t i = 0; ok && i < c->nlive; i++) {
        struct thread *t = c->live[i];
        if (t->in_by_ident && t != s->st) {
            s->threads[s->nthreads].ident = t->ident;
            s->threads[s->nthreads].number = t->number;
            s->nthreads++;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (ok)
        qsort(s->threads, s->nthreads, sizeof *s->threads, by_ident);
    return ok ? 0 : -1;
}

static int64_t number_of(const struct sampler *s, unsigned long ident)
{
    size_t lo = 0, hi = s->nthreads;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->threads[mid].ident < ident)
            lo = mid + 1;
        else if (s->threads[mid].ident > ident)
            hi = mid;
        else
            return s->threads[mid].number;
    }
    return -1;
}

/* The address of a thread's innermost frame, 0 when it has none; -1 when
 * it cannot be read. */
static int top_frame(struct sampler *s, const PyThreadState *t, uintptr_t *f)
{
#if PY_VERSION_HEX >= 0x030D0000
    (void)s;
    *f = (uintptr_t)t->current_frame;
#elif PY_VERSION_HEX >= 0x030B0000
    _PyCFrame cf;
    if (peek(s, &cf, (uintptr_t)t->cframe, sizeof cf) < 0)
        return -1;
    *f = (uintptr_t)cf.current_frame;
#else
    (void)s;
    *f = (uintptr_t)t->frame;
#endif
    return 0;
}

/* One thread's frames, innermost first, as code addresses (not yet checked
 * to be code objects); -1 when a read failed on the way. */
static int64_t walk_once(struct sampler *s, const PyThreadState *t, uintptr_t f, uintptr_t *out)
{
    uintptr_t lo = 0, hi = 0;
#if PY_VERSION_HEX < 0x030B0000
    (void)t;
#else
    /* A thread's frames sit one after another in its data-stack chunk: one
     * read takes the newest chunk's frames. */
    lo = (uintptr_t)t->datastack_chunk;
    hi = (uintptr_t)t->datastack_top;
    if (hi <= lo || hi - lo > STACK_COPY || peek(s, s->copy, lo, hi - lo) < 0)
        lo = hi = 0;
#endif
    uint32_t depth = 0;
    for (int steps = 0; f != 0 && depth < MAX_DEPTH && steps < 4 * MAX_DEPTH; steps++) {
        frame_t fr;
        if (f >= lo && f < hi && hi - f >= sizeof fr) /* no f + size: a torn pointer may be near 2^64 */
            memcpy(&fr, s->copy + (f - lo), sizeof fr);
        else if (peek(s, &fr, f, sizeof fr) < 0)
            return -1;
#if PY_VERSION_HEX >= 0x030C0000
        if (fr.owner != FRAME_OWNED_BY_CSTACK) /* the C stack's shim frames */
#endif
            out[depth++] = FRAME_CODE(&fr);
        f = FRAME_BACK(&fr);
    }
    return depth;
}

/* walk_once() until the stack holds still: the thread runs on while it is
 * read, and a walk during which it returned or called may have followed
 * freed or reused frames.  A walk counts when no read failed and the
 * thread's innermost frame is where it was at the start; after WALKS tries
 * the last walk counts (its stack may be torn, as a non-blocking
 * py-spy's may). */
#define WALKS 3
static uint32_t walk(struct sampler *s, uintptr_t tp, const PyThreadState *first, uintptr_t *out)
{
    PyThreadState t = *first;
    int64_t depth = 0;
    for (int i = 0; i < WALKS; i++) {
        uintptr_t f, again;
        if (i > 0 && peek(s, &t, tp, sizeof t) < 0)
            break;
        if (top_frame(s, &t, &f) < 0)
            break;
        depth = walk_once(s, &t, f, out);
        PyThreadState now;
        if (depth >= 0 && peek(s, &now, tp, sizeof now) == 0 && top_frame(s, &now, &again) == 0 && again == f)
            return (uint32_t)depth;
        atomic_fetch_add_explicit(&s->faults, 1, memory_order_relaxed);
        if (depth < 0)
            depth = 0;
    }
    return (uint32_t)depth;
}

/* A str's text as clip_text() makes it, into s->text; -1 when it is not a
 * str this can read. */
static int peek_text(struct sampler *s, uintptr_t obj, struct text *t)
{
    PyCompactUnicodeObject u;
    if (peek(s, &u, obj, sizeof(PyASCIIObject)) < 0 || ((PyObject *)&u)->ob_type != &PyUnicode_Type ||
        !u._base.state.compact)
        return -1;
#if PY_VERSION_HEX < 0x030C0000
    if (!u._base.state.ready)
        return -1;
#endif
    size_t max = s->c->cfg.max_text;
    Py_ssize_t n = u._base.length;
    if (n < 0)
        return -1;
    if ((size_t)n > max + 1)
        n = (Py_ssize_t)max + 1; /* enough to find where clip_text() cuts */
    int kind = u._base.state.ascii ? 0 : (int)u._base.state.kind;
    uintptr_t data = obj + (kind ? sizeof(PyCompactUnicodeObject) : sizeof(PyASCIIObject));
    size_t width = kind ? (size_t)kind : 1;
    if ((kind != 0 && kind != 1 && kind != 2 && kind != 4) || peek(s, s->text, data, (size_t)n * width) < 0)
        return -1;
    return text_measure(max, kind, s->text, n, t);
}

static uint8_t *put_text_z(uint8_t *p, const struct text *t)
{
    p = text_put(p, t);
    *p++ = 0;
    return p;
}

/* The number of the code object `co` read at `addr`, declaring it (PyCode)
 * when new; 0 when it cannot be described.  Under s->lock. */
static uint32_t code_number(struct sampler *s, uint64_t ts, uintptr_t addr, const PyCodeObject *co)
{
    size_t mask = s->cap - 1, i = (addr >> 4) & mask;
    while (s->codes[i].number != 0 && s->codes[i].code != addr)
        i = (i + 1) & mask;
    struct code_entry *e = &s->codes[i];
    uintptr_t name = CODE_NAME(co), file = (uintptr_t)co->co_filename;
    if (e->number != 0 && e->name == name && e->file == file && e->line == co->co_firstlineno)
        return e->number;
    /* New, or another function at a reused address: a new number either way. */
    struct text tn, tf;
    uint8_t *out = s->text + 4 * (s->c->cfg.max_text + 1); /* after the name's copy */
    if (peek_text(s, name, &tn) < 0)
        return 0;
    uint8_t *p = put16(put_head(out, EV_CODE, ts), 0);
    p = put32(put32(p, s->next_code + 1), (uint32_t)co->co_firstlineno);
    p = put_text_z(p, &tn);
    /* The name's bytes are in place: the file may reuse the copy. */
    if (peek_text(s, file, &tf) < 0)
        return 0;
    p = put_text_z(p, &tf);
    put16(out + HEAD, (uint16_t)(p - out - HEAD - 2));
    int fresh = e->number == 0;
    *e = (struct code_entry){addr, name, file, co->co_firstlineno, ++s->next_code};
    put_owned(s->c, s->st, ts, out, (size_t)(p - out), NULL);
    if (fresh)
        atomic_fetch_add_explicit(&s->ncodes, 1, memory_order_relaxed);
    return e->number;
}

/* A thread met before the monitor's scan registered it: numbered now, named
 * "thread-N" until the scan gives it its threading name (a rename), so
 * that a thread that lives less than a scan is sampled all the same. */
static int64_t adopt(struct sampler *s, const PyThreadState *t)
{
    struct ctx *c = s->c;
    unsigned long native_id = 0;
#if PY_VERSION_HEX >= 0x030B0000
    native_id = t->native_thread_id;
#endif
    pthread_mutex_lock(&c->lock);
    struct thread *st = find_by_ident(c, t->thread_id);
    if (st == NULL)
        st = new_thread(c, t->thread_id, native_id, NULL, NULL, 0);
    int64_t number = st != NULL ? (int64_t)st->number : -1;
    pthread_mutex_unlock(&c->lock);
    return number;
}

static void sample_tick(struct sampler *s)
{
    struct ctx *c = s->c;
    if (snapshot_threads(s) < 0)
        return;
    /* Walk every thread first, outside the lock. */
    size_t n = 0;
    uintptr_t tp = (uintptr_t)PyInterpreterState_ThreadHead(s->interp); /* reads the immortal interp only */
    for (int guard = 0; tp != 0 && guard < MAX_SLOTS; guard++) {
        PyThreadState t;
        if (peek(s, &t, tp, sizeof t) < 0 || t.interp != s->interp) {
            atomic_fetch_add_explicit(&s->faults, 1, memory_order_relaxed);
            break;
        }
        uintptr_t tp_here = tp;
        tp = (uintptr_t)t.next;
        if (t.thread_id == s->own_ident)
            continue;
        int64_t number = number_of(s, t.thread_id);
        if (n == s->cap_sampled) {
            size_t cap = s->cap_sampled ? 2 * s->cap_sampled : 8;
            uintptr_t *frames = realloc(s->frames, cap * MAX_DEPTH * sizeof *frames);
            if (frames != NULL)
                s->frames = frames;
            uint32_t *depth = realloc(s->depth, cap * sizeof *depth);
            if (depth != NULL)
                s->depth = depth;
            uint32_t *numbers = realloc(s->numbers, cap * sizeof *numbers);
            if (numbers != NULL)
                s->numbers = numbers;
            if (frames == NULL || depth == NULL || numbers == NULL)
                break;
            s->cap_sampled = cap;
        }
        s->depth[n] = walk(s, tp_here, &t, s->frames + n * MAX_DEPTH);
        if (s->depth[n] == 0)
            continue; /* not running Python code (starting, or ending): as sys._current_frames() */
        if (number < 0)
            number = adopt(s, &t);
        if (number < 0)
            continue; /* out of slots */
        s->numbers[n] = (uint32_t)number;
        n++;
    }
    uint64_t ts = now(c);
    size_t most = s->next_code; /* entries the table may hold after this tick */
    for (size_t k = 0; k < n; k++)
        most += s->depth[k];
    pthread_mutex_lock(&s->lock);
    if (2 * most >= s->cap) { /* at most half full */
        size_t cap = s->cap;
        while (2 * most >= cap)
            cap *= 2;
        struct code_entry *codes = calloc(cap, sizeof *codes);
        if (codes == NULL) {
            pthread_mutex_unlock(&s->lock);
            return;
        }
        for (size_t i = 0; i < s->cap; i++) {
            if (s->codes[i].number == 0)
                continue;
            size_t j = (s->codes[i].code >> 4) & (cap - 1);
            while (codes[j].number != 0)
                j = (j + 1) & (cap - 1);
            codes[j] = s->codes[i];
        }
        free(s->codes);
        s->codes = codes;
        s->cap = cap;
    }
    uint8_t out[HEAD + 2 + 4 + 4 * MAX_DEPTH];
    for (size_t k = 0; k < n; k++) {
        uintptr_t *frames = s->frames + k * MAX_DEPTH;
        uint32_t depth = s->depth[k], kept = 0;
        uint8_t *p = put32(put_head(out, EV_SAMPLE, ts) + 2, s->numbers[k]);
        /* The code objects, BATCH to a read; one that fails is read alone,
         * so that one bad address does not cost the rest of the batch. */
        for (uint32_t i = 0; i < depth; i += BATCH) {
            uint32_t m = depth - i < BATCH ? depth - i : BATCH;
            PyCodeObject co[BATCH];
            struct iovec local[BATCH], remote[BATCH];
            for (uint32_t j = 0; j < m; j++) {
                local[j] = (struct iovec){&co[j], sizeof co[j]};
                remote[j] = (struct iovec){(void *)frames[i + j], sizeof co[j]};
            }
            ssize_t got = process_vm_readv(s->pid, local, m, remote, m, 0);
            uint32_t whole = got > 0 ? (uint32_t)((size_t)got / sizeof co[0]) : 0;
            for (uint32_t j = 0; j < m; j++) {
                if (j >= whole && peek(s, &co[j], frames[i + j], sizeof co[j]) < 0) {
                    atomic_fetch_add_explicit(&s->faults, 1, memory_order_relaxed);
                    continue;
                }
                if (((PyObject *)&co[j])->ob_type != &PyCode_Type)
                    continue; /* not a code object: 3.13's other executables, or a torn read */
                uint32_t number = code_number(s, ts, frames[i + j], &co[j]);
                if (number != 0) {
                    p = put32(p, number);
                    kept++;
                }
            }
        }
        put16(out + HEAD, (uint16_t)(4 + 4 * kept));
        put_owned(c, s->st, ts, out, (size_t)(p - out), NULL);
    }
    pthread_mutex_unlock(&s->lock);
    atomic_fetch_add_explicit(&s->ticks, 1, memory_order_relaxed);
}

static void *sampler_main(void *arg)
{
    struct sampler *s = arg;
#ifdef __linux__
    pthread_setname_np(pthread_self(), "lpm-sampler");
#endif
    uint64_t next = mono_ns();
    pthread_mutex_lock(&s->wlock);
    while (!atomic_load(&s->stop)) {
        uint64_t interval = atomic_load(&s->interval_ns), t = mono_ns();
        uint64_t wake = interval == 0 ? t + 100000000u : next;
        if (interval != 0 && t >= next) {
            pthread_mutex_unlock(&s->wlock);
            if (!atomic_load_explicit(&s->c->paused, memory_order_relaxed))
                sample_tick(s);
            pthread_mutex_lock(&s->wlock);
            next += interval;
            if (next < t)
                next = t; /* as the monitor: late ticks are not made up */
            continue;
        }
        struct timespec until = {(time_t)(wake / 1000000000u), (long)(wake % 1000000000u)};
        pthread_cond_timedwait(&s->wcond, &s->wlock, &until);
        if (interval == 0)
            next = mono_ns();
    }
    pthread_mutex_unlock(&s->wlock);
    return NULL;
}

static void sampler_free(struct sampler *s)
{
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->wlock);
    pthread_cond_destroy(&s->wcond);
    free(s->codes);
    free(s->threads);
    free(s->frames);
    free(s->depth);
    free(s->numbers);
    free(s->copy);
    free(s->text);
    free(s);
}

/* Stops and frees the context's background sampler, if it has one.  With
 * the GIL (released while it waits: the sampler may be in a tick). */
static void sampler_stop(struct ctx *c)
{
    struct sampler *s = c->bg;
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->wlock);
    atomic_store(&s->stop, 1);
    pthread_cond_signal(&s->wcond);
    pthread_mutex_unlock(&s->wlock);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(s->thread, NULL);
    Py_END_ALLOW_THREADS
    c->bg = NULL;
    sampler_free(s);
}

static void put_event(struct ctx *c, struct thread *st, uint64_t ts, const uint8_t *head, size_t hlen,
                      const struct text *tail)
{
    struct sampler *s = c->bg;
    if (s == NULL || st != s->st) {
        put_owned(c, st, ts, head, hlen, tail);
        return;
    }
    pthread_mutex_lock(&s->lock);
    put_owned(c, st, ts, head, hlen, tail);
    pthread_mutex_unlock(&s->lock);
}

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f)
static PyMethodDef SINK_FUNCTIONS[] = {
    {"emit", FASTCALL(py_emit), METH_FASTCALL | METH_KEYWORDS,
     "emit(type_id, payload, variable)\n--\n\nAny event, already encoded, into the calling thread's buffer."},
    {"message", FASTCALL(py_message), METH_FASTCALL | METH_KEYWORDS, "message(text)\n--\n\nA user message."},
    {"marker", FASTCALL(py_marker), METH_FASTCALL | METH_KEYWORDS, "marker(name)\n--\n\nA user marker."},
    {"counter", FASTCALL(py_counter), METH_FASTCALL | METH_KEYWORDS,
     "counter(name, value)\n--\n\nA counter's value."},
    {"span_begin", FASTCALL(py_span_begin), METH_FASTCALL | METH_KEYWORDS,
     "span_begin(name)\n--\n\nOpen a span; returns its id: the thread number in the high 32 bits."},
    {"span_end", FASTCALL(py_span_end), METH_FASTCALL | METH_KEYWORDS, "span_end(span)\n--\n\nClose a span."},
    {"gc_callback", FASTCALL(py_gc_callback), METH_FASTCALL | METH_KEYWORDS,
     "gc_callback(phase, info)\n--\n\nA gc.callbacks entry: StartGC, then EndGC and PyGcCollection."},
    {"sample", FASTCALL(py_sample), METH_FASTCALL | METH_KEYWORDS,
     "sample(numbers, codes, refs)\n--\n\nA PySample of every thread numbered in `numbers`; returns the idents it lacks."},
    {NULL, NULL, 0, NULL},
};

/* -- pointer maps ------------------------------------------------------------ */

static inline size_t ptrmap_home(uintptr_t key, size_t cap)
{
    return (size_t)(((uint64_t)(key >> 4) * UINT64_C(0x9E3779B97F4A7C15)) >> 20) & (cap - 1);
}

/* Its entry, or NULL. */
static inline struct ptrmap_entry *ptrmap_find(const struct ptrmap *m, uintptr_t key)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = ptrmap_home(key, m->cap); m->e[i].key != 0; i = (i + 1) & (m->cap - 1))
        if (m->e[i].key == key)
            return &m->e[i];
    return NULL;
}

static int ptrmap_grow(struct ptrmap *m)
{
    size_t cap = m->cap ? 2 * m->cap : 256;
    struct ptrmap_entry *e = calloc(cap, sizeof *e); /* libc: never through lpm's allocator wrappers */
    if (e == NULL)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->e[i].key == 0)
            continue;
        size_t j = ptrmap_home(m->e[i].key, cap);
        while (e[j].key != 0)
            j = (j + 1) & (cap - 1);
        e[j] = m->e[i];
    }
    free(m->e);
    m->e = e;
    m->cap = cap;
    return 0;
}

/* Its entry, made (value 0) if there was none; NULL when out of memory. */
static struct ptrmap_entry *ptrmap_slot(struct ptrmap *m, uintptr_t key)
{
    struct ptrmap_entry *found = ptrmap_find(m, key);
    if (found != NULL)
        return found;
    if ((m->used + 1) * 2 > m->cap && ptrmap_grow(m) < 0)
        return NULL;
    size_t i = ptrmap_home(key, m->cap);
    while (m->e[i].key != 0)
        i = (i + 1) & (m->cap - 1);
    m->used++;
    m->e[i].key = key;
    m->e[i].value = 0;
    return &m->e[i];
}

/* Takes `key` out; 1 with its value in *value, 0 if it was not there.  The
 * entries after it move back to close the gap, so no probe ever walks over
 * deleted entries (allocations churn by the million). */
static int ptrmap_take(struct ptrmap *m, uintptr_t key, uint64_t *value)
{
    struct ptrmap_entry *found = ptrmap_find(m, key);
    if (found == NULL)
        return 0;
    *value = found->value;
    size_t mask = m->cap - 1, i = (size_t)(found - m->e);
    for (size_t j = (i + 1) & mask; m->e[j].key != 0; j = (j + 1) & mask) {
        size_t home = ptrmap_home(m->e[j].key, m->cap);
        if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) { /* home not in (i, j] */
            m->e[i] = m->e[j];
            i = j;
        }
    }
    m->e[i].key = 0;
    m->used--;
    return 1;
}

static void ptrmap_free(struct ptrmap *m)
{
    free(m->e);
    m->e = NULL;
    m->cap = m->used = 0;
}

/* -- the tracer's clock -------------------------------------------------------- */

/* The tracer reads the clock at every call and return.  clock_gettime() costs
 * about 22 ns in its vDSO on the reference machine, reading the TSC about 10:
 * half of lpm's own cost per traced call (perf on bench/tracing.py).  Where
 * the kernel itself keeps time with the TSC (clocksource "tsc": it found the
 * counter invariant and in step across CPUs), the tracer's timestamps are a
 * line over the TSC, fitted to CLOCK_MONOTONIC over 2 ms when tracing first
 * starts and refitted by the writer every 100 ms: the new line starts where
 * the old one is and bends its slope to close the gap over the next
 * interval, so it never steps back and stays within microseconds of
 * CLOCK_MONOTONIC.  From the first fit on, now() reads the line too, for
 * every event of every thread: within microseconds is not close enough for
 * a marker and the call right after it, a few hundred nanoseconds apart, to
 * keep their order (tests/leech/test_tracing.py).  Anywhere else, and with a
 * fixed clock, there is no line and the tracer reads now(). */

#if defined(__x86_64__)
#include <x86intrin.h>

/* A TSC reading and CLOCK_MONOTONIC taken together: of a few tries, the one
 * whose clock_gettime() took the fewest ticks, since a try that the kernel
 * or the hypervisor interrupted pairs the two clocks microseconds apart, and
 * one such pair in a 2 ms fit tilts the line by hundreds of ppm. */
static void tsc_pair(uint64_t *tsc, uint64_t *ns)
{
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 8; i++) {
        uint64_t a = __rdtsc();
        uint64_t n = mono_ns();
        uint64_t b = __rdtsc();
        if (b > a && b - a < best) {
            best = b - a;
            *tsc = a + (b - a) / 2;
            *ns = n;
        }
    }
    if (best == UINT64_MAX) { /* the counter did not move: no line will be fitted */
        *tsc = __rdtsc();
        *ns = mono_ns();
    }
}

static void tsc_start(struct ctx *c)
{
    if (atomic_load_explicit(&c->tsc.usable, memory_order_relaxed) || c->cfg.has_fixed_clock)
        return;
    char source[32] = "";
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (f != NULL) {
        if (fgets(source, sizeof source, f) == NULL)
            source[0] = 0;
        fclose(f);
    }
    if (strcmp(source, "tsc\n") != 0)
        return;
    uint64_t t0, n0, t1, n1;
    tsc_pair(&t0, &n0);
    do
        tsc_pair(&t1, &n1);
    while (n1 - n0 < 2000000);
    if (t1 <= t0)
        return;
    uint64_t mult = (uint64_t)(((unsigned __int128)(n1 - n0) << 32) / (t1 - t0));
    atomic_store(&c->tsc.tsc, t1);
    atomic_store(&c->tsc.ns, n1 - c->t0);
    atomic_store(&c->tsc.mult, mult);
    c->tsc.fit_tsc = t1;
    c->tsc.fit_ns = n1;
    atomic_store_explicit(&c->tsc.usable, 1, memory_order_release);
}

/* From the writer. */
static void tsc_refit(struct ctx *c)
{
    uint64_t t, n;
    tsc_pair(&t, &n);
    if (n - c->tsc.fit_ns < 100000000 || t <= c->tsc.fit_tsc)
        return;
    int64_t rate = (int64_t)(((unsigned __int128)(n - c->tsc.fit_ns) << 32) / (t - c->tsc.fit_tsc));
    uint64_t base_tsc = atomic_load_explicit(&c->tsc.tsc, memory_order_relaxed);
    uint64_t base_ns = atomic_load_explicit(&c->tsc.ns, memory_order_relaxed);
    uint64_t mult = atomic_load_explicit(&c->tsc.mult, memory_order_relaxed);
    uint64_t here = base_ns + (uint64_t)(((unsigned __int128)(t - base_tsc) * mult) >> 32);
    int64_t gap = (int64_t)(n - c->t0) - (int64_t)here; /* > 0: the line is behind */
    int64_t bend = (int64_t)((__int128)rate * gap / 100000000);
    int64_t most = rate / 1000; /* at most 1000 ppm */
    bend = bend > most ? most : bend < -most ? -most : bend;
    atomic_fetch_add_explicit(&c->tsc.seq, 1, memory_order_acq_rel);
    atomic_store_explicit(&c->tsc.tsc, t, memory_order_relaxed);
    atomic_store_explicit(&c->tsc.ns, here, memory_order_relaxed);
    atomic_store_explicit(&c->tsc.mult, (uint64_t)(rate + bend), memory_order_relaxed);
    atomic_fetch_add_explicit(&c->tsc.seq, 1, memory_order_release);
    c->tsc.fit_tsc = t;
    c->tsc.fit_ns = n;
}

/* The line read whole (seqlock): its sequence number. */
static uint32_t line_read(const struct ctx *c, uint64_t *base, uint64_t *ns, uint64_t *mult)
{
    uint32_t seq;
    do {
        seq = atomic_load_explicit(&c->tsc.seq, memory_order_acquire);
        *base = atomic_load_explicit(&c->tsc.tsc, memory_order_relaxed);
        *ns = atomic_load_explicit(&c->tsc.ns, memory_order_relaxed);
        *mult = atomic_load_explicit(&c->tsc.mult, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
    } while ((seq & 1) || seq != atomic_load_explicit(&c->tsc.seq, memory_order_relaxed));
    return seq;
}

/* The line into the thread's copy; 0 while there is no line. */
static __attribute__((noinline, cold)) int tsc_copy(struct ctx *c, struct thread *st)
{
    if (!atomic_load_explicit(&c->tsc.usable, memory_order_acquire))
        return 0;
    st->tsc_seq = line_read(c, &st->tsc_base, &st->tsc_ns, &st->tsc_mult) + 1;
    return 1;
}

/* The line at the TSC's reading now. */
static inline uint64_t line_at(uint64_t base, uint64_t ns, uint64_t mult)
{
    uint64_t t = __rdtsc();
    if ((int64_t)(t - base) < 0)
        return ns;
    return ns + (uint64_t)(((unsigned __int128)(t - base) * mult) >> 32);
}

/* Each thread reads the line again only when the writer has refitted it
 * (one load and a compare per event instead of the seqlock's five loads):
 * a refit that starts just after that load leaves this event on the old
 * line, which is where the new one starts. */
static inline uint64_t trace_now(struct ctx *c, struct thread *st)
{
    uint32_t seq = atomic_load_explicit(&c->tsc.seq, memory_order_acquire);
    if (__builtin_expect(seq + 1 != st->tsc_seq, 0) && !tsc_copy(c, st))
        return now(c);
    return line_at(st->tsc_base, st->tsc_ns, st->tsc_mult);
}

/* now() while the line runs, from any thread. */
static uint64_t line_now(const struct ctx *c)
{
    uint64_t base, ns, mult;
    line_read(c, &base, &ns, &mult);
    return line_at(base, ns, mult);
}
#else
static void tsc_start(struct ctx *c) { (void)c; }
static void tsc_refit(struct ctx *c) { (void)c; }
static inline uint64_t trace_now(struct ctx *c, struct thread *st) { (void)st; return now(c); }
static uint64_t line_now(const struct ctx *c) { return mono_ns() - c->t0; }
#endif

/* -- call tracing ---------------------------------------------------------- */

/* Every call and return of Python and C functions, as PyCall and PyReturn
 * (code number only: 14 bytes each) into the calling thread's own buffer,
 * through the interpreter's cheapest hook: a C profile function before 3.12
 * (installed in every thread, and through threading.setprofile in threads
 * started later), sys.monitoring from 3.12 (one registration for every
 * thread, its callbacks builtins made here).  The events map as the 3.12
 * legacy profiler maps sys.monitoring's: start, resume and throw are calls;
 * return, yield and unwind are returns; C functions (builtins and method
 * descriptors, as cProfile counts them) have their own calls and returns.
 *
 * A code object's number lives in its co_extra slot with the generation it
 * was given in, so the lookup is an array index and a freed code object
 * takes its number with it (no address is ever mistaken for another).  C
 * functions are keyed by their PyMethodDef, which builtins keep for the
 * life of the process.  The tracer's numbers start at 2**31, apart from the
 * samplers', and each stands for one function for the whole run (the
 * samplers' start again every generation).  Each is declared (PyCode) once
 * per generation, in the buffer of the thread that used it first, so another
 * thread's uses can reach a reader before the declaration does: a reader
 * keeps the tracer's names for the whole run and may learn one late.  A new
 * generation declares them again, same numbers, for readers that joined
 * since.  TRACE_FLOOR
 * installs the same hooks with empty callbacks: the interpreter's own cost
 * for any tracer, which bench/tracing.py measures lpm against. */

enum { TRACE_OFF, TRACE_ON, TRACE_FLOOR };
#define TRACE_FIRST UINT32_C(0x80000000)

#if PY_VERSION_HEX >= 0x030C0000
#define CODE_GET_EXTRA PyUnstable_Code_GetExtra
#define CODE_SET_EXTRA PyUnstable_Code_SetExtra
#define REQUEST_EXTRA PyUnstable_Eval_RequestCodeExtraIndex
#else
#define CODE_GET_EXTRA _PyCode_GetExtra
#define CODE_SET_EXTRA _PyCode_SetExtra
#define REQUEST_EXTRA _PyEval_RequestCodeExtraIndex
#endif

static Py_ssize_t code_extra = -1; /* the co_extra index: (gen << 32 | number) */
static PyObject *builtin_file;     /* "<built-in>", the file C functions are declared with */

static inline uint32_t trace_next(struct ctx *c)
{
    return TRACE_FIRST | (++c->tr.next & 0x7FFFFFFFu);
}

/* Declarations run Python's C API; the event being traced may have an
 * exception in flight, which they must neither see nor lose. */
#define KEEP_ERROR(body)                              \
    do {                                              \
        PyObject *et_, *ev_, *tb_;                    \
        PyErr_Fetch(&et_, &ev_, &tb_);                \
        body;                                         \
        PyErr_Clear();                                \
        PyErr_Restore(et_, ev_, tb_);                 \
    } while (0)

/* co_extra's layout (_PyCodeObjectExtra, the same from 3.6 to 3.13), read
 * here rather than through _PyCode_GetExtra(): a call and three checks at
 * every traced call and return. */
struct code_extras {
    Py_ssize_t size;
    void *extras[1];
};

/* A code object met for the first time in this generation: numbered (or
 * its number kept) and declared.  Out of line: the common case is above. */
static __attribute__((noinline)) uint32_t traced_code_new(struct ctx *c, struct thread *st, PyObject *code,
                                                          uint64_t ts, uint32_t n)
{
    if (n == 0)
        n = trace_next(c);
    KEEP_ERROR({
        if (CODE_SET_EXTRA(code, code_extra, (void *)(uintptr_t)((uint64_t)c->tr.gen << 32 | n)) == 0)
            code_event(c, st, ts, (PyCodeObject *)code, n);
    });
    return n;
}

/* The code object's co_extra slot: (gen << 32 | number), 0 if never numbered. */
static inline uint64_t code_slot(PyObject *code)
{
    const struct code_extras *e = ((PyCodeObject *)code)->co_extra;
    return e != NULL && code_extra < e->size ? (uint64_t)(uintptr_t)e->extras[code_extra] : 0;
}

static inline uint32_t traced_code(struct ctx *c, struct thread *st, PyObject *code, uint64_t ts)
{
    uint64_t v = code_slot(code);
    if (v != 0 && (uint32_t)(v >> 32) == c->tr.gen)
        return (uint32_t)v;
    /* Never numbered (0), or numbered in an earlier generation: declared again, same number. */
    return traced_code_new(c, st, code, ts, (uint32_t)v);
}

/* Exact type checks: PyCFunction_Check() walks the MRO of every other
 * callable (a Python function, at each CALL event from 3.12). */
static inline const PyMethodDef *c_function(PyObject *callable)
{
    PyTypeObject *t = Py_TYPE(callable);
    if (t == &PyCFunction_Type || t == &PyCMethod_Type)
        return ((PyCFunctionObject *)callable)->m_ml;
    if (t == &PyMethodDescr_Type)
        return ((PyMethodDescrObject *)callable)->d_method;
    return NULL;
}

/* "module.name" or "type.name", as cProfile names them. */
static PyObject *c_function_name(PyObject *callable, const PyMethodDef *ml)
{
    if (Py_IS_TYPE(callable, &PyMethodDescr_Type))
        return PyUnicode_FromFormat("%s.%s", ((PyDescrObject *)callable)->d_type->tp_name, ml->ml_name);
    PyObject *self = ((PyCFunctionObject *)callable)->m_self;
    if (self != NULL && !PyModule_Check(self))
        return PyUnicode_FromFormat("%s.%s", Py_TYPE(self)->tp_name, ml->ml_name);
    PyObject *module = ((PyCFunctionObject *)callable)->m_module;
    if (module != NULL && PyUnicode_Check(module))
        return PyUnicode_FromFormat("%U.%s", module, ml->ml_name);
    return PyUnicode_FromString(ml->ml_name);
}

/* A C function's number, 0 for a callable that is not one. */
static uint32_t cfunc_number(struct ctx *c, struct thread *st, PyObject *callable, uint64_t ts)
{
    const PyMethodDef *ml = c_function(callable);
    if (ml == NULL)
        return 0;
    struct tracer *tr = &c->tr;
    struct ptrmap_entry *known = ptrmap_find(&tr->cfns, (uintptr_t)ml);
    if (known != NULL && (uint32_t)(known->value >> 32) == tr->gen)
        return (uint32_t)known->value;
    if (known == NULL && (known = ptrmap_slot(&tr->cfns, (uintptr_t)ml)) == NULL)
        return 0;
    /* New, or declared again in this generation under the same number. */
    uint32_t n = known->value != 0 ? (uint32_t)known->value : trace_next(c);
    known->value = (uint64_t)tr->gen << 32 | n;
    KEEP_ERROR({
        PyObject *name = c_function_name(callable, ml);
        if (name != NULL && (builtin_file != NULL || (builtin_file = PyUnicode_InternFromString("<built-in>"))))
            declare(c, st, ts, n, 0, name, builtin_file);
        Py_XDECREF(name);
    });
    return n;
}

/* Whether a 14-byte event goes straight into the thread's buffer. */
static inline int trace_room(const struct ctx *c, const struct thread *st)
{
    /* The atomic first: the compiler then keeps what it read of st for trace_write(). */
    return !atomic_load_explicit(&c->paused, memory_order_relaxed) && st->buf >= 0 && !st->lost &&
           st->used + HEAD + 4 <= c->size;
}

/* The event written there, when trace_room() said so. */
static inline void trace_write(const struct ctx *c, struct thread *st, uint16_t id, uint64_t ts, uint32_t n)
{
    uint32_t start = st->used;
    put32(put_head(c->mem + (size_t)st->buf * c->size + start, id, ts), n);
    st->seq++;
    st->used = start + HEAD + 4;
    st->events++;
    atomic_store_explicit(&c->bufs[st->buf].committed,
                          st->used | (uint64_t)start << COMMIT_BITS | (uint64_t)st->events << (2 * COMMIT_BITS),
                          memory_order_release);
}

/* put_owned() for a 14-byte event, its common case inline. */
static inline void trace_put(struct ctx *c, struct thread *st, uint16_t id, uint64_t ts, uint32_t n)
{
    if (trace_room(c, st)) {
        trace_write(c, st, id, ts, n);
        return;
    }
    uint8_t head[HEAD + 4];
    put32(put_head(head, id, ts), n);
    put_owned(c, st, ts, head, sizeof head, NULL);
}

/* The traced thread's state, or NULL to trace nothing here.  Unlike
 * current(), spends none of an unnamed thread's tries to find its name: a
 * thread's start-up makes dozens of calls before threading lists it. */
static inline struct thread *traced(struct ctx *c)
{
    struct thread *st = registered(c);
    if (st == NULL)
        st = register_thread(c);
    if (st == NULL) {
        PyErr_Clear();
        return NULL;
    }
    return st->ident == c->tr.skip ? NULL : st;
}

/* The fast path.  An event whose thread, function and clock line are known
 * already and whose buffer has room needs no call, so it is written by leaf
 * code that saves no registers: callgrind put 19 of the 118 instructions of
 * an event in saving and restoring them, for the calls of the rarer cases.
 * Anything else (0 here) takes the whole way, which does it all again. */
static inline uint32_t known_code(const struct ctx *c, PyObject *code)
{
    uint64_t v = code_slot(code);
    return v != 0 && (uint32_t)(v >> 32) == c->tr.gen ? (uint32_t)v : 0;
}

static inline uint32_t known_cfunc(const struct ctx *c, const PyMethodDef *ml)
{
    const struct ptrmap_entry *known = ptrmap_find(&c->tr.cfns, (uintptr_t)ml);
    return known != NULL && (uint32_t)(known->value >> 32) == c->tr.gen ? (uint32_t)known->value : 0;
}

static inline __attribute__((always_inline)) int trace_fast(const struct ctx *c, uint16_t id, uint32_t n)
{
#if defined(__x86_64__)
    struct thread *st = registered(c);
    /* lpm's monitor thread, which is not traced, goes the whole way too: only
     * a traced thread gets a copy of the clock line (trace_now after traced()),
     * so its tsc_seq stays 0. */
    if (n == 0 || st == NULL || atomic_load_explicit(&c->tsc.seq, memory_order_acquire) + 1 != st->tsc_seq)
        return 0;
    if (!trace_room(c, st))
        return 0;
    trace_write(c, st, id, line_at(st->tsc_base, st->tsc_ns, st->tsc_mult), n);
    return 1;
#else
    (void)c, (void)id, (void)n;
    return 0;
#endif
}

#if PY_VERSION_HEX < 0x030C0000
#if PY_VERSION_HEX >= 0x030B0000
#define PROFILE_CODE(frame) ((PyObject *)(frame)->f_frame->f_code) /* borrowed: PyFrame_GetCode() is a call and a ref */
#else
#define PROFILE_CODE(frame) ((PyObject *)(frame)->f_code)
#endif

static __attribute__((noinline)) int trace_event(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg);

static int trace_profile(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    const struct ctx *c = CTX(obj);
    if (what == PyTrace_CALL || what == PyTrace_RETURN) {
        if (trace_fast(c, what == PyTrace_CALL ? EV_CALL : EV_RETURN, known_code(c, PROFILE_CODE(frame))))
            return 0;
    }
    else if (what == PyTrace_C_CALL || what == PyTrace_C_RETURN || what == PyTrace_C_EXCEPTION) {
        const PyMethodDef *ml = c_function(arg);
        if (ml == NULL || trace_fast(c, what == PyTrace_C_CALL ? EV_CALL : EV_RETURN, known_cfunc(c, ml)))
            return 0;
    }
    else
        return 0;
    return trace_event(obj, frame, what, arg);
}

static int trace_event(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    struct ctx *c = CTX(obj);
    struct thread *st = traced(c);
    if (st == NULL)
        return 0;
    uint64_t ts = trace_now(c, st);
    if (what == PyTrace_CALL || what == PyTrace_RETURN) {
        trace_put(c, st, what == PyTrace_CALL ? EV_CALL : EV_RETURN, ts, traced_code(c, st, PROFILE_CODE(frame), ts));
    }
    else if (what == PyTrace_C_CALL || what == PyTrace_C_RETURN || what == PyTrace_C_EXCEPTION) {
        uint32_t n = cfunc_number(c, st, arg, ts);
        if (n != 0)
            trace_put(c, st, what == PyTrace_C_CALL ? EV_CALL : EV_RETURN, ts, n);
    }
    return 0;
}

static int trace_empty(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj, (void)frame, (void)what, (void)arg;
    return 0;
}

/* threading.setprofile's hook: a thread started while tracing runs it once
 * (through sys.setprofile's trampoline), and it puts the C function in its
 * place, then traces the event that called it. */
static PyObject *trace_installer(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct ctx *c = CTX(self);
    if (c->tr.mode == TRACE_OFF) {
        PyEval_SetProfile(NULL, NULL);
        Py_RETURN_NONE;
    }
    PyEval_SetProfile(c->tr.mode == TRACE_ON ? trace_profile : trace_empty, self);
    if (c->tr.mode == TRACE_ON && nargs == 3 && PyFrame_Check(args[0]) && PyUnicode_Check(args[1])) {
        const char *e = PyUnicode_AsUTF8(args[1]);
        int what = e == NULL                       ? -1
                   : strcmp(e, "call") == 0        ? PyTrace_CALL
                   : strcmp(e, "return") == 0      ? PyTrace_RETURN
                   : strcmp(e, "c_call") == 0      ? PyTrace_C_CALL
                   : strcmp(e, "c_return") == 0    ? PyTrace_C_RETURN
                   : strcmp(e, "c_exception") == 0 ? PyTrace_C_EXCEPTION
                                                   : -1;
        PyErr_Clear();
        if (what >= 0)
            trace_profile(self, (PyFrameObject *)args[0], what, args[2]);
    }
    Py_RETURN_NONE;
}

static PyMethodDef INSTALLER = {"lpm_trace_installer", FASTCALL(trace_installer), METH_FASTCALL,
                                "Puts lpm's C profile function in a new thread."};

static int trace_start(struct ctx *c, PyObject *obj, int mode)
{
    Py_tracefunc fn = mode == TRACE_ON ? trace_profile : trace_empty;
    PyThreadState *me = PyThreadState_Get();
    for (PyThreadState *t = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(me)); t != NULL;
         t = PyThreadState_Next(t)) {
        if (t->thread_id == c->tr.skip)
            continue; /* the monitor */
        if (t->c_profilefunc != NULL && t->c_profilefunc != trace_profile && t->c_profilefunc != trace_empty) {
            c->tr.skipped++; /* another profiler's: not ours to replace */
            continue;
        }
        if (_PyEval_SetProfile(t, fn, obj) < 0)
            return -1;
    }
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL)
        return -1;
    PyObject *old = PyObject_GetAttrString(threading, "_profile_hook");
    PyObject *hook = old != NULL ? PyCFunction_NewEx(&INSTALLER, obj, NULL) : NULL;
    PyObject *r = hook != NULL ? PyObject_CallMethod(threading, "setprofile", "O", hook) : NULL;
    Py_DECREF(threading);
    Py_XDECREF(hook);
    if (r == NULL) {
        Py_XDECREF(old);
        return -1;
    }
    Py_DECREF(r);
    Py_XSETREF(c->tr.old_hook, old);
    return 0;
}

static int trace_stop(struct ctx *c, PyObject *obj)
{
    PyThreadState *me = PyThreadState_Get();
    for (PyThreadState *t = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(me)); t != NULL;
         t = PyThreadState_Next(t))
        if ((t->c_profilefunc == trace_profile || t->c_profilefunc == trace_empty) && t->c_profileobj == obj &&
            _PyEval_SetProfile(t, NULL, NULL) < 0)
            return -1;
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL)
        return -1;
    PyObject *r = PyObject_CallMethod(threading, "setprofile", "O", c->tr.old_hook ? c->tr.old_hook : Py_None);
    Py_DECREF(threading);
    Py_CLEAR(c->tr.old_hook);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}
#else
/* sys.monitoring's callbacks: (code, offset, ...); CALL, C_RETURN and
 * C_RAISE also (callable, arg0). */
static __attribute__((noinline)) PyObject *mon_code_slow(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                                        uint16_t id)
{
    struct ctx *c = CTX(self);
    struct thread *st = nargs >= 1 ? traced(c) : NULL;
    if (st != NULL && PyCode_Check(args[0])) {
        uint64_t ts = trace_now(c, st);
        trace_put(c, st, id, ts, traced_code(c, st, args[0], ts));
    }
    Py_RETURN_NONE;
}

static inline PyObject *mon_code(PyObject *self, PyObject *const *args, Py_ssize_t nargs, uint16_t id)
{
    if (nargs >= 1 && PyCode_Check(args[0]) && trace_fast(CTX(self), id, known_code(CTX(self), args[0])))
        Py_RETURN_NONE;
    return mon_code_slow(self, args, nargs, id);
}

static __attribute__((noinline)) PyObject *mon_function_slow(PyObject *self, PyObject *const *args, uint16_t id)
{
    struct ctx *c = CTX(self);
    struct thread *st = traced(c);
    if (st != NULL) {
        uint64_t ts = trace_now(c, st);
        uint32_t n = cfunc_number(c, st, args[2], ts);
        if (n != 0)
            trace_put(c, st, id, ts, n);
    }
    Py_RETURN_NONE;
}

static inline PyObject *mon_function(PyObject *self, PyObject *const *args, Py_ssize_t nargs, uint16_t id)
{
    const PyMethodDef *ml = nargs >= 3 ? c_function(args[2]) : NULL;
    if (ml == NULL || trace_fast(CTX(self), id, known_cfunc(CTX(self), ml)))
        Py_RETURN_NONE; /* ml NULL: a Python function, PY_START and PY_RETURN tell */
    return mon_function_slow(self, args, id);
}

static PyObject *mon_enter(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return mon_code(self, args, nargs, EV_CALL);
}

static PyObject *mon_leave(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return mon_code(self, args, nargs, EV_RETURN);
}

static PyObject *mon_c_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return mon_function(self, args, nargs, EV_CALL);
}

static PyObject *mon_c_leave(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return mon_function(self, args, nargs, EV_RETURN);
}

static PyObject *mon_nothing(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self, (void)args, (void)nargs;
    Py_RETURN_NONE;
}

static PyMethodDef MON_CALLBACKS[] = {
    {"lpm_enter", FASTCALL(mon_enter), METH_FASTCALL, NULL},
    {"lpm_leave", FASTCALL(mon_leave), METH_FASTCALL, NULL},
    {"lpm_c_call", FASTCALL(mon_c_call), METH_FASTCALL, NULL},
    {"lpm_c_leave", FASTCALL(mon_c_leave), METH_FASTCALL, NULL},
    {"lpm_nothing", FASTCALL(mon_nothing), METH_FASTCALL, NULL},
};

/* sys.monitoring events and the callback (index into MON_CALLBACKS) each gets. */
static const struct {
    const char *event;
    int callback;
} MON_EVENTS[] = {
    {"PY_START", 0}, {"PY_RESUME", 0}, {"PY_THROW", 0}, {"PY_RETURN", 1}, {"PY_YIELD", 1},
    {"PY_UNWIND", 1}, {"CALL", 2},     {"C_RETURN", 3}, {"C_RAISE", 3},
};
#define MON_NEVENTS (sizeof MON_EVENTS / sizeof MON_EVENTS[0])

static int mon_register(PyObject *mon, int tool, PyObject *obj, int mode)
{
    PyObject *events = PyObject_GetAttrString(mon, "events");
    if (events == NULL)
        return -1;
    long mask = 0;
    int rc = 0;
    for (size_t i = 0; i < MON_NEVENTS && rc == 0; i++) {
        PyObject *bit = PyObject_GetAttrString(events, MON_EVENTS[i].event);
        long value = bit != NULL ? PyLong_AsLong(bit) : -1;
        Py_XDECREF(bit);
        if (value == -1 && PyErr_Occurred()) {
            rc = -1;
            break;
        }
        mask |= value;
        PyObject *fn = mode == TRACE_OFF ? Py_NewRef(Py_None)
                                         : PyCFunction_NewEx(&MON_CALLBACKS[mode == TRACE_ON ? MON_EVENTS[i].callback : 4],
                                                             obj, NULL);
        PyObject *r = fn != NULL ? PyObject_CallMethod(mon, "register_callback", "ilO", tool, value, fn) : NULL;
        Py_XDECREF(fn);
        if (r == NULL)
            rc = -1;
        Py_XDECREF(r);
    }
    Py_DECREF(events);
    if (rc == 0) {
        PyObject *r = PyObject_CallMethod(mon, "set_events", "il", tool, mode == TRACE_OFF ? 0L : mask);
        if (r == NULL)
            rc = -1;
        Py_XDECREF(r);
    }
    return rc;
}

static int trace_start(struct ctx *c, PyObject *obj, int mode)
{
    PyObject *mon = PySys_GetObject("monitoring"); /* borrowed */
    if (mon == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "sys.monitoring is missing");
        return -1;
    }
    /* The profiler's id, else one no other tool holds. */
    static const int tools[] = {2, 4, 3};
    int tool = -1;
    for (size_t i = 0; i < sizeof tools / sizeof tools[0] && tool < 0; i++) {
        PyObject *r = PyObject_CallMethod(mon, "use_tool_id", "is", tools[i], "lpm");
        if (r != NULL) {
            tool = tools[i];
            Py_DECREF(r);
        }
        else if (PyErr_ExceptionMatches(PyExc_ValueError))
            PyErr_Clear();
        else
            return -1;
    }
    if (tool < 0) {
        PyErr_SetString(PyExc_RuntimeError, "every sys.monitoring tool id lpm could use is taken");
        return -1;
    }
    c->tr.tool = tool;
    if (mon_register(mon, tool, obj, mode) < 0) {
        KEEP_ERROR({
            mon_register(mon, tool, obj, TRACE_OFF);
            PyObject *r = PyObject_CallMethod(mon, "free_tool_id", "i", tool);
            Py_XDECREF(r);
        });
        c->tr.tool = -1;
        return -1;
    }
    return 0;
}

static int trace_stop(struct ctx *c, PyObject *obj)
{
    PyObject *mon = PySys_GetObject("monitoring");
    if (mon == NULL || c->tr.tool < 0)
        return 0;
    int rc = mon_register(mon, c->tr.tool, obj, TRACE_OFF);
    PyObject *r = PyObject_CallMethod(mon, "free_tool_id", "i", c->tr.tool);
    if (r == NULL)
        rc = -1;
    Py_XDECREF(r);
    c->tr.tool = -1;
    return rc;
}
#endif

/* -- allocations ------------------------------------------------------------- */

/* Allocation tracking: the PyMem allocators of the "mem" and "object" domains
 * wrapped, delegating to the ones installed before (as tracemalloc does), so
 * every block Python code allocates passes here with the GIL held.  Each
 * thread counts what it allocates; a block allocated while tracking is on is
 * kept in a map (address -> size, see struct leaf) so that its free counts as
 * freed bytes for the thread that frees it; one allocation in every `sample_bytes`
 * (counted per thread, as Go and memray sample) is recorded with its stack as
 * PyAllocSample.  The monitor emits every thread's totals (PyAllocStats) at
 * the heap interval.
 *
 * The wrappers stay installed once put in (another tool may have wrapped
 * them since, and the chain cannot be cut in the middle): turning tracking
 * off makes them pass through and empties the table; the domain records are
 * never freed, and a stopped context is unhooked from them.  The tracker's
 * own work allocates (a frame object for a sample, a declaration), so a
 * thread inside it counts nothing. */

struct adomain {
    PyMemAllocatorEx orig;
    struct ctx *_Atomic c; /* NULL: pass through */
    int installed;
};
static struct adomain g_domains[2]; /* PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ */

/* The sizes of the blocks allocated while tracking, by address: a two-level
 * map from each 4 KiB of address space to 256 sizes (blocks start at least
 * 16 bytes apart, pymalloc's and malloc's alignment), so that blocks next to
 * each other, which a program allocates and frees together, share a cache
 * line of it.  A size that does not fit 16 bits goes to a hash table.  One
 * probe into a hash table of every block cost a cache miss per allocation
 * and per free: three quarters of the tracker's time. */
enum { LEAF_SHIFT = 12, SLOT_SHIFT = 4, SLOTS = 1 << (LEAF_SHIFT - SLOT_SHIFT), LEVEL_BITS = 18 };
#define BIG_SIZE 0xFFFFu

struct leaf {
    uint16_t size[SLOTS]; /* 0: none; BIG_SIZE: in the hash table */
};

struct allocs {
    int on;
    uint64_t sample_bytes; /* 0: no samples */
    struct leaf ***map;    /* [address >> 30][address >> 12 & level mask] */
    size_t leaves;
    struct ptrmap big;     /* the blocks whose size or address the map cannot hold */
    uint64_t untracked; /* blocks the map had no room for */
    uint64_t other_bytes, others; /* allocated by threads lpm has not numbered */
};

static int abig_put(struct allocs *a, uintptr_t p, size_t size)
{
    struct ptrmap_entry *e = ptrmap_slot(&a->big, p);
    if (e == NULL)
        return -1;
    e->value = size;
    return 0;
}

static size_t abig_take(struct allocs *a, uintptr_t p)
{
    uint64_t size = 0;
    return ptrmap_take(&a->big, p, &size) ? (size_t)size : 0;
}

/* The leaf of address `p`, made when `make`; NULL if none (or out of memory). */
static struct leaf *aleaf(struct allocs *a, uintptr_t p, int make)
{
    if (p >> (LEAF_SHIFT + 2 * LEVEL_BITS))
        return NULL; /* past 48 bits of address */
    size_t top = p >> (LEAF_SHIFT + LEVEL_BITS), mid = (p >> LEAF_SHIFT) & ((1u << LEVEL_BITS) - 1);
    if (a->map == NULL) {
        if (!make || (a->map = calloc((size_t)1 << LEVEL_BITS, sizeof *a->map)) == NULL)
            return NULL;
    }
    struct leaf **level = a->map[top];
    if (level == NULL) {
        if (!make || (level = a->map[top] = calloc((size_t)1 << LEVEL_BITS, sizeof *level)) == NULL)
            return NULL;
    }
    struct leaf *leaf = level[mid];
    if (leaf == NULL && make && (leaf = level[mid] = calloc(1, sizeof *leaf)) != NULL)
        a->leaves++;
    return leaf;
}

static void atable_put(struct allocs *a, void *ptr, size_t size)
{
    uintptr_t p = (uintptr_t)ptr;
    struct leaf *leaf = aleaf(a, p, 1);
    if (leaf == NULL || (p & ((1u << SLOT_SHIFT) - 1))) {
        if (abig_put(a, p, size) < 0)
            a->untracked++;
        return;
    }
    uint16_t *slot = &leaf->size[(p >> SLOT_SHIFT) & (SLOTS - 1)];
    if (size > 0 && size < BIG_SIZE)
        *slot = (uint16_t)size;
    else if (abig_put(a, p, size) == 0)
        *slot = BIG_SIZE;
    else {
        *slot = 0;
        a->untracked++;
    }
}

/* The size of a block allocated while tracking, taken out; 0 if unknown. */
static size_t atable_take(struct allocs *a, void *ptr)
{
    uintptr_t p = (uintptr_t)ptr;
    struct leaf *leaf = aleaf(a, p, 0);
    if (leaf == NULL || (p & ((1u << SLOT_SHIFT) - 1)))
        return abig_take(a, p);
    uint16_t *slot = &leaf->size[(p >> SLOT_SHIFT) & (SLOTS - 1)];
    size_t size = *slot;
    *slot = 0;
    return size == BIG_SIZE ? abig_take(a, p) : size;
}

static void atable_free(struct allocs *a)
{
    if (a->map != NULL) {
        for (size_t top = 0; top < (size_t)1 << LEVEL_BITS; top++) {
            struct leaf **level = a->map[top];
            if (level == NULL)
                continue;
            for (size_t mid = 0; mid < (size_t)1 << LEVEL_BITS; mid++)
                free(level[mid]);
            free(level);
        }
        free(a->map);
        a->map = NULL;
    }
    a->leaves = 0;
    ptrmap_free(&a->big);
}

static void alloc_sample(struct ctx *c, struct thread *st, uint64_t size);

/* PyAllocStats of `st` into `into`'s buffer. */
static void alloc_stats_event(struct ctx *c, struct thread *into, struct thread *st, uint64_t ts)
{
    uint8_t head[HEAD + EV_ALLOC_STATS_SIZE];
    put64(put64(put64(put64(put32(put_head(head, EV_ALLOC_STATS, ts), st->number), st->alloc_bytes), st->allocs),
                st->freed_bytes),
          st->frees);
    put_event(c, into, ts, head, sizeof head, NULL);
}

/* A thread ends (in its teardown, with the GIL): its last totals. */
static void alloc_final(struct ctx *c, struct thread *st)
{
    if (c->al != NULL && (st->allocs || st->frees)) {
        tls.in_alloc++;
        alloc_stats_event(c, st, st, now(c));
        tls.in_alloc--;
    }
}

static void alloc_note(struct ctx *c, void *ptr, size_t size)
{
    struct allocs *a = c->al;
    if (a == NULL || !a->on || tls.in_alloc)
        return;
    tls.in_alloc = 1;
    atable_put(a, ptr, size);
    struct thread *st = registered(c); /* never registers one here: that would allocate */
    if (st == NULL) {
        a->other_bytes += size;
        a->others++;
    }
    else {
        st->alloc_bytes += size;
        st->allocs++;
        if (a->sample_bytes && (st->until_sample -= (int64_t)size) <= 0) {
            uint64_t n = 0;
            while (st->until_sample <= 0) {
                st->until_sample += (int64_t)a->sample_bytes;
                n++;
            }
            alloc_sample(c, st, n * a->sample_bytes);
        }
    }
    tls.in_alloc = 0;
}

static void free_note(struct ctx *c, void *ptr)
{
    struct allocs *a = c->al;
    if (a == NULL || !a->on || tls.in_alloc)
        return;
    size_t size = atable_take(a, ptr);
    if (size == 0)
        return;
    struct thread *st = registered(c); /* never registers one here: that would allocate */
    if (st != NULL) {
        st->freed_bytes += size;
        st->frees++;
    }
}

static void *al_malloc(void *ctx, size_t size)
{
    struct adomain *d = ctx;
    void *p = d->orig.malloc(d->orig.ctx, size);
    struct ctx *c = atomic_load_explicit(&d->c, memory_order_relaxed);
    if (p != NULL && c != NULL)
        alloc_note(c, p, size);
    return p;
}

static void *al_calloc(void *ctx, size_t n, size_t size)
{
    struct adomain *d = ctx;
    void *p = d->orig.calloc(d->orig.ctx, n, size);
    struct ctx *c = atomic_load_explicit(&d->c, memory_order_relaxed);
    if (p != NULL && c != NULL)
        alloc_note(c, p, n * size);
    return p;
}

static void *al_realloc(void *ctx, void *ptr, size_t size)
{
    struct adomain *d = ctx;
    struct ctx *c = atomic_load_explicit(&d->c, memory_order_relaxed);
    void *p = d->orig.realloc(d->orig.ctx, ptr, size);
    if (p != NULL && c != NULL) {
        if (ptr != NULL)
            free_note(c, ptr);
        alloc_note(c, p, size);
    }
    return p;
}

static void al_free(void *ctx, void *ptr)
{
    struct adomain *d = ctx;
    struct ctx *c = atomic_load_explicit(&d->c, memory_order_relaxed);
    if (ptr != NULL && c != NULL)
        free_note(c, ptr);
    d->orig.free(d->orig.ctx, ptr);
}

/* The allocating thread's Python stack, innermost first, as the tracer's
 * code numbers (declared in this thread's buffer as the tracer does). */
static void alloc_sample(struct ctx *c, struct thread *st, uint64_t size)
{
    uint8_t out[HEAD + 2 + 8 + 4 * MAX_DEPTH];
    uint64_t ts = now(c);
    uint8_t *p = put64(put_head(out, EV_ALLOC_SAMPLE, ts) + 2, size);
    uint32_t depth = 0;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (code_extra < 0)
        code_extra = REQUEST_EXTRA(NULL);
    PyFrameObject *f = code_extra >= 0 ? PyThreadState_GetFrame(PyThreadState_Get()) : NULL;
    while (f != NULL && depth < MAX_DEPTH) {
        PyCodeObject *code = PyFrame_GetCode(f);
        p = put32(p, traced_code(c, st, (PyObject *)code, ts));
        Py_DECREF(code);
        depth++;
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    Py_XDECREF(f);
    PyErr_Clear();
    PyErr_Restore(et, ev, tb);
    put16(out + HEAD, (uint16_t)(8 + 4 * depth));
    put_event(c, st, ts, out, (size_t)(p - out), NULL);
}

static int alloc_install(struct ctx *c)
{
    static const PyMemAllocatorDomain domains[2] = {PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};
    for (int i = 0; i < 2; i++) {
        struct adomain *d = &g_domains[i];
        if (!d->installed) {
            PyMem_GetAllocator(domains[i], &d->orig);
            PyMemAllocatorEx mine = {d, al_malloc, al_calloc, al_realloc, al_free};
            atomic_store(&d->c, c);
            PyMem_SetAllocator(domains[i], &mine);
            d->installed = 1;
        }
        else {
            struct ctx *expected = NULL;
            if (!atomic_compare_exchange_strong(&d->c, &expected, c) && expected != c) {
                PyErr_SetString(PyExc_RuntimeError, "another lpm leech tracks allocations in this process");
                return -1;
            }
        }
    }
    return 0;
}

/* -- the writer pthread ----------------------------------------------------- */

/* PureSink._block; 0 when out of memory (the bytes wait for the next round). */
static int block(struct ctx *c, uint32_t b)
{
    struct buf *m = &c->bufs[b];
    uint64_t committed = atomic_load_explicit(&m->committed, memory_order_acquire);
    uint32_t end = (uint32_t)(committed & COMMIT_MASK);
    uint32_t last = (uint32_t)(committed >> COMMIT_BITS & COMMIT_MASK);
    uint32_t events = (uint32_t)(committed >> 2 * COMMIT_BITS);
    uint32_t start = m->flushed;
    if (end <= start)
        return 1;
    if (reserve(&c->pend, BLOCK_OVERHEAD + end - start) < 0)
        return 0;
    const uint8_t *data = c->mem + (size_t)b * c->size;
    uint64_t first_ts = get64(data + start + 2), last_ts = get64(data + last + 2);
    uint8_t *p = claim(&c->pend, BLOCK_OVERHEAD + end - start);
    p = put_head(p, EV_BLOCK, first_ts);
    p = put16(put64(put32(p, BLOCK_OVERHEAD + end - start), last_ts), (uint16_t)m->slot);
    p = put_head(p, EV_BLOCK_INFO, first_ts);
    p = put64(put32(p, m->number), m->flushed_events ? m->base_seq + m->flushed_events : m->first_seq);
    memcpy(p, data + start, end - start);
    m->flushed = end;
    m->flushed_events = events;
    return 1;
}

static uint8_t *global_marker(uint8_t *p, uint64_t ts, size_t size)
{
    p = put_head(p, EV_BLOCK, ts);
    return put16(put64(put32(p, (uint32_t)size), ts), GLOBAL_CAP);
}

/* PureSink._announce_block.  Under c->lock. */
static void announce_block(struct ctx *c, struct thread **threads, size_t n)
{
    if (n == 0)
        return;
    uint64_t ts = now(c);
    size_t size = MARKER_EVENT;
    for (size_t i = 0; i < n; i++)
        size += HEAD + EV_CREATE_THREAD_SIZE + HEAD + 2 + 4 + threads[i]->label_len + HEAD + EV_THREAD_INFO_SIZE;
    if (reserve(&c->pend, size) < 0)
        return;
    uint8_t *p = global_marker(claim(&c->pend, size), ts, size);
    for (size_t i = 0; i < n; i++) {
        struct thread *st = threads[i];
        p = put32(put_head(p, EV_CREATE_THREAD, ts), st->number);
        p = put32(put16(put_head(p, EV_THREAD_LABEL, ts), (uint16_t)(4 + st->label_len)), st->number);
        if (st->label_len)
            memcpy(p, st->label, st->label_len);
        p += st->label_len;
        p = put64(put32(put_head(p, EV_THREAD_INFO, ts), st->number), st->native_id);
    }
}

/* PureSink._closing_block, from entries taken with c->lock held. */
static void closing_block(struct ctx *c, const struct closing *items, size_t n, int stop)
{
    if (n == 0)
        return;
    uint64_t ts = now(c);
    size_t size = MARKER_EVENT;
    for (size_t i = 0; i < n; i++)
        size += (items[i].lost ? LOSS_EVENT : 0) + (stop ? HEAD + EV_STOP_THREAD_SIZE : 0) + HEAD + EV_SEQ_POINT_SIZE;
    if (reserve(&c->pend, size) < 0)
        return;
    uint8_t *p = global_marker(claim(&c->pend, size), ts, size);
    for (size_t i = 0; i < n; i++) {
        const struct closing *e = &items[i];
        if (e->lost)
            p = put64(put64(put64(put32(put_head(p, EV_DATA_LOSS, ts), e->number), e->lost_first), e->lost),
                      e->lost_bytes);
        if (stop)
            p = put32(put16(put32(put_head(p, EV_STOP_THREAD, ts), e->number), THREAD_FINISHED), 0);
        p = put64(put32(put_head(p, EV_SEQ_POINT, ts), e->number), e->seq);
    }
}

static struct closing closing_of(struct thread *st)
{
    struct closing e = {st->number, st->lost, st->lost_first, st->lost_bytes, st->seq};
    st->lost = st->lost_bytes = 0;
    return e;
}

static int by_number(const void *a, const void *b)
{
    uint32_t x = (*(struct thread *const *)a)->number, y = (*(struct thread *const *)b)->number;
    return (x > y) - (x < y);
}

static int by_slot(const void *a, const void *b)
{
    uint32_t x = (*(struct thread *const *)a)->slot, y = (*(struct thread *const *)b)->slot;
    return (x > y) - (x < y);
}

/* PureSink._status_block: every live thread and every ended one not yet
 * closed, for a new reader. */
static void status_block(struct ctx *c)
{
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->nannounce; i++) {
        c->announce[i]->unannounced = 0;
        maybe_recycle(c, c->announce[i]);
    }
    c->nannounce = 0;
    size_t n = c->nlive + c->nretiring;
    struct thread **all = malloc((n + 1) * sizeof *all);
    if (all != NULL) {
        if (c->nlive)
            memcpy(all, c->live, c->nlive * sizeof *all);
        if (c->nretiring)
            memcpy(all + c->nlive, c->retiring, c->nretiring * sizeof *all);
        qsort(all, n, sizeof *all, by_number);
        announce_block(c, all, n);
        free(all);
    }
    pthread_mutex_unlock(&c->lock);
}

/* PureSink._drain_full.  One round takes at most nbufs queued buffers, so
 * producers that keep queueing cannot keep the writer from writing.  0 when
 * the output could not take a block. */
static int drain_queue(struct ctx *c)
{
    for (uint32_t i = 0; i < c->nbufs; i++) {
        int32_t b = queue_peek(c);
        if (b < 0)
            break;
        if (!block(c, (uint32_t)b))
            return 0;
        queue_pop(c);
        c->bufs[b].flushed = c->bufs[b].flushed_events = 0;
        pool_put(c, (uint32_t)b);
    }
    return 1;
}

/* PureSink._collect. */
static void collect(struct ctx *c, int partial)
{
    pthread_mutex_lock(&c->lock);
    announce_block(c, c->announce, c->nannounce);
    for (size_t i = 0; i < c->nannounce; i++) {
        c->announce[i]->unannounced = 0;
        maybe_recycle(c, c->announce[i]);
    }
    c->nannounce = 0;
    pthread_mutex_unlock(&c->lock);

    if (!drain_queue(c))
        return;

    pthread_mutex_lock(&c->lock);
    if (c->nretiring > 0) {
        struct closing *ended = malloc(c->nretiring * sizeof *ended);
        if (ended != NULL) {
            for (size_t i = 0; i < c->nretiring; i++) {
                struct thread *st = c->retiring[i];
                ended[i] = closing_of(st);
                st->unclosed = 0;
                maybe_recycle(c, st);
            }
            closing_block(c, ended, c->nretiring, 1);
            free(ended);
            c->nretiring = 0;
        }
    }
    pthread_mutex_unlock(&c->lock);

    if (!partial)
        return;
    uint32_t top = atomic_load_explicit(&c->slot_top, memory_order_acquire);
    for (uint32_t s = 0; s < top; s++) {
        uint32_t v = atomic_load_explicit(&c->slot_buf[s], memory_order_acquire);
        if (v == 0)
            continue;
        /* The thread queued its previous buffer before making v current, so
         * draining now writes that one first: a thread's blocks stay in order.
         * If v itself was queued meanwhile, the drain has written it: skip. */
        if (!drain_queue(c))
            return;
        if (atomic_load_explicit(&c->slot_buf[s], memory_order_acquire) == v && !block(c, v - 1))
            return;
    }
}

static void append(struct bytes *b, const void *data, size_t n)
{
    if (reserve(b, n) == 0)
        memcpy(claim(b, n), data, n);
}

/* pure.py's _open_own: `path` opened non-blocking, or -1 when it cannot be,
 * or is not what this process made there: a symlink (never followed), or
 * anything but a FIFO or regular file of this user. */
static int open_own(const char *path, int mode)
{
    int fd = open(path, mode | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0 || !(S_ISFIFO(st.st_mode) || S_ISREG(st.st_mode)) || st.st_uid != geteuid()) {
        close(fd);
        return -1;
    }
    return fd;
}

/* PureSink._connect.  A failure other than "nobody reads" (ENXIO) or "not
 * there yet" (ENOENT) would end PureSink's writer; this one goes on trying. */
static int connect_reader(struct ctx *c)
{
    int fd = open_own(c->path, O_WRONLY);
    if (fd < 0)
        return 0;
    (void)fcntl(fd, F_SETPIPE_SZ, 1 << 20); /* best effort; fails on files */
    atomic_store(&c->fd, fd);
    atomic_fetch_add(&c->connections, 1);
    atomic_fetch_add(&c->reader_events, 1);
    c->pend.len = c->pend.off = 0;
    append(&c->pend, c->header, c->header_len);
    status_block(c);
    return 1;
}

/* PureSink._write: 0 when the reader left (EPIPE, or any other error). */
static int write_pending(struct ctx *c)
{
    int fd = atomic_load(&c->fd);
    struct bytes *p = &c->pend;
    while (p->off < p->len) {
        ssize_t n = write(fd, p->data + p->off, p->len - p->off);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return 1;
            close(fd);
            atomic_store(&c->fd, -1);
            p->len = p->off = 0;
            return 0;
        }
        p->off += (size_t)n;
        atomic_fetch_add_explicit(&c->bytes_written, (uint64_t)n, memory_order_relaxed);
    }
    p->len = p->off = 0;
    return 1;
}

static int is_space(uint8_t ch) { return ch == ' ' || (ch >= '\t' && ch <= '\r') || (ch >= 0x1C && ch <= 0x1F); }

/* One control line, stripped as str.strip() strips it. */
static void control_line(struct ctx *c, const uint8_t *p, size_t n, int *attached)
{
    while (n > 0 && is_space(p[0]))
        p++, n--;
    while (n > 0 && is_space(p[n - 1]))
        n--;
    if (n == 6 && memcmp(p, "attach", 6) == 0) {
        *attached = 1;
        return;
    }
    if (n == 0)
        return;
    uint8_t *copy = malloc(n);
    if (copy == NULL)
        return;
    memcpy(copy, p, n);
    pthread_mutex_lock(&c->wlock);
    if (c->ncmd == MAX_COMMANDS) {
        free(c->commands[c->cmd_first].data);
        c->cmd_first = (c->cmd_first + 1) % MAX_COMMANDS;
        c->ncmd--;
    }
    c->commands[(c->cmd_first + c->ncmd++) % MAX_COMMANDS] = (struct bytes){copy, n, 0, n};
    pthread_mutex_unlock(&c->wlock);
}

/* PureSink._read_control: 1 when a reader said "attach".  A control FIFO
 * that cannot be opened is tried again next round. */
static int read_control(struct ctx *c)
{
    if (c->control_path == NULL)
        return 0;
    int fd = atomic_load(&c->cfd);
    if (fd < 0) {
        fd = open_own(c->control_path, O_RDONLY);
        if (fd < 0)
            return 0;
        atomic_store(&c->cfd, fd);
    }
    int attached = 0;
    for (;;) {
        ssize_t n = read(fd, c->cbuf + c->clen, CONTROL_READ);
        if (n <= 0)
            break;
        const uint8_t *p = c->cbuf, *end = c->cbuf + c->clen + (size_t)n;
        const uint8_t *nl;
        while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
            control_line(c, p, (size_t)(nl - p), &attached);
            p = nl + 1;
        }
        if (end - p > CONTROL_KEEP)
            p = end - CONTROL_KEEP;
        c->clen = (size_t)(end - p);
        memmove(c->cbuf, p, c->clen);
    }
    return attached;
}

static void writer_wait(struct ctx *c, double seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    time_t whole = (time_t)seconds;
    until.tv_sec += whole;
    until.tv_nsec += (long)((seconds - (double)whole) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->wlock);
    while (!atomic_load(&c->stopping))
        if (pthread_cond_timedwait(&c->wcond, &c->wlock, &until) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&c->wlock);
}

/* PureSink._finish, less what stop() did with the GIL held, while no thread
 * could be writing: moving the live buffers to the queue, and taking the
 * live threads' final counts. */
static void finish(struct ctx *c)
{
    if (atomic_load(&c->fd) < 0 && !connect_reader(c))
        return;
    collect(c, 0);
    closing_block(c, c->final, c->nfinal, 0);
    append(&c->pend, "\xff\xff", 2);
    double deadline = mono_s() + c->cfg.stop_timeout;
    while (c->pend.off < c->pend.len && atomic_load(&c->fd) >= 0 && mono_s() < deadline) {
        if (write_pending(c) && c->pend.off < c->pend.len) {
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
    }
}

/* PureSink._run. */
static void *writer_main(void *arg)
{
    struct ctx *c = arg;
#ifdef __linux__
    pthread_setname_np(pthread_self(), "lpm-writer");
#endif
    double delay = c->cfg.backoff_first, next_try = 0;
    int partial = c->cfg.flush_interval > 0;
    double tick = partial ? c->cfg.flush_interval : c->cfg.idle_tick;
    while (!atomic_load(&c->stopping)) {
        double t = mono_s();
        int was_connected = atomic_load(&c->fd) >= 0;
        if (!was_connected && t >= next_try) {
            if (connect_reader(c))
                delay = c->cfg.backoff_first;
            else {
                next_try = t + delay;
                delay *= c->cfg.backoff_factor;
                if (delay > c->cfg.backoff_last)
                    delay = c->cfg.backoff_last;
            }
        }
        if (read_control(c) && was_connected && atomic_load(&c->fd) >= 0) {
            /* A reader that attached while an earlier one held the pipe:
             * after the whole blocks in flight, a fresh header. */
            append(&c->pend, c->header, c->header_len);
            status_block(c);
            atomic_fetch_add(&c->reader_events, 1);
        }
        if (atomic_load(&c->fd) >= 0) {
            if (c->pend.off == c->pend.len)
                collect(c, partial);
            write_pending(c);
        }
        if (atomic_load_explicit(&c->tsc.usable, memory_order_acquire))
            tsc_refit(c);
        writer_wait(c, tick);
    }
    if (!atomic_load(&c->abort))
        finish(c);
    int fd = atomic_exchange(&c->fd, -1);
    if (fd >= 0)
        close(fd);
    fd = atomic_exchange(&c->cfd, -1);
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* -- contexts ------------------------------------------------------------- */

static void atfork_prepare(void) { pthread_mutex_lock(&g_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&g_lock); }

static void atfork_child(void)
{
    pthread_mutex_init(&g_lock, NULL);
    atomic_fetch_add(&g_forkgen, 1);
    for (struct ctx *c = g_contexts; c != NULL; c = c->next) {
        /* Else the reader would wait for this child to exit too. */
        int fd = atomic_exchange(&c->fd, -1);
        if (fd >= 0)
            close(fd);
        fd = atomic_exchange(&c->cfd, -1);
        if (fd >= 0)
            close(fd);
    }
    /* The parent's allocation tracking is not the child's: its wrappers pass
     * through until a leech of the child turns tracking on. */
    for (int i = 0; i < 2; i++)
        atomic_store(&g_domains[i].c, NULL);
    tls.serial = 0;
    tls.st = NULL;
}

static void ctx_free(struct ctx *c)
{
    int own = c->forkgen == atomic_load(&g_forkgen);
    for (int i = 0; i < 2; i++) { /* the allocation wrappers stay, passing through */
        struct ctx *mine = c;
        atomic_compare_exchange_strong(&g_domains[i].c, &mine, NULL);
    }
    if (c->al != NULL) {
        atable_free(c->al);
        free(c->al);
        c->al = NULL;
    }
    ptrmap_free(&c->tr.cfns);
    if (own)
        sampler_stop(c);
    if (own && (c->state == RUNNING || c->state == STOPPING)) {
        /* Dropped while running (at interpreter exit: the Python side keeps
         * running sinks alive).  The writer never waits for the GIL, so
         * joining it here cannot deadlock. */
        pthread_mutex_lock(&c->wlock);
        atomic_store(&c->abort, 1);
        atomic_store(&c->stopping, 1);
        pthread_cond_signal(&c->wcond);
        pthread_mutex_unlock(&c->wlock);
        pthread_join(c->writer, NULL);
    }
    pthread_mutex_lock(&g_lock);
    for (struct ctx **p = &g_contexts; *p != NULL; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
    int fd = atomic_exchange(&c->fd, -1);
    if (fd >= 0)
        close(fd);
    fd = atomic_exchange(&c->cfd, -1);
    if (fd >= 0)
        close(fd);
    for (size_t i = 0; i < c->nfresh; i++)
        Py_XDECREF(c->fresh[i].name);
    Py_XDECREF(c->watch_key);
    if (own) {
        /* An inherited mutex may be held by a thread that is not in this
         * process: it is left alone, and only its memory freed. */
        pthread_mutex_destroy(&c->lock);
        pthread_mutex_destroy(&c->wlock);
        pthread_cond_destroy(&c->wcond);
    }
    while (c->chunks != NULL) {
        struct chunk *k = c->chunks;
        c->chunks = k->next;
        for (size_t i = 0; i < CHUNK; i++)
            free(k->t[i].label);
        free(k);
    }
    for (size_t i = 0; i < c->ncmd; i++)
        free(c->commands[(c->cmd_first + i) % MAX_COMMANDS].data);
    free(c->mem);
    free(c->bufs);
    free(c->free_bits);
    free(c->ring);
    free(c->slot_buf);
    free(c->slot_used);
    free(c->live);
    free(c->announce);
    free(c->retiring);
    free(c->fresh);
    free(c->final);
    free(c->pend.data);
    free(c->cbuf);
    free(c->header);
    free(c->path);
    free(c->control_path);
    free(c);
}

static void ctxobj_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (CTX(self) != NULL)
        ctx_free(CTX(self));
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot CTX_SLOTS[] = {
    {Py_tp_dealloc, (void *)ctxobj_dealloc},
    {Py_tp_doc, (void *)"A native leech's buffers, threads and writer (opaque)."},
    {0, NULL},
};

static PyType_Spec CTX_SPEC = {
    "lpm._native.Context",
    sizeof(struct ctxobj),
    0,
#ifdef Py_TPFLAGS_DISALLOW_INSTANTIATION
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
#else
    Py_TPFLAGS_DEFAULT,
#endif
    CTX_SLOTS,
};

static int setup_once(void)
{
    if (g_ready)
        return 0;
    g_ctx_type = (PyTypeObject *)PyType_FromSpec(&CTX_SPEC);
    g_empty = PyUnicode_FromString("");
    g_key_generation = PyUnicode_InternFromString("generation");
    g_key_collected = PyUnicode_InternFromString("collected");
    g_key_uncollectable = PyUnicode_InternFromString("uncollectable");
    if (!g_ctx_type || !g_empty || !g_key_generation || !g_key_collected || !g_key_uncollectable)
        return -1;
    int rc = pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    g_ready = 1;
    return 0;
}

static struct ctx *ctx_arg(PyObject *obj)
{
    if (g_ctx_type == NULL || Py_TYPE(obj) != g_ctx_type || CTX(obj) == NULL) {
        PyErr_SetString(PyExc_TypeError, "expected an lpm native context");
        return NULL;
    }
    return CTX(obj);
}

static struct ctx *ctx_new(const struct lpm_config *cfg, PyObject *header, PyObject *path, PyObject *control)
{
    struct ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->cfg = *cfg;
    c->size = (uint32_t)cfg->buffer_size;
    c->nbufs = (uint32_t)cfg->buffers;
    c->t0 = mono_ns();
    c->tr.tool = -1;
    c->forkgen = ~atomic_load(&g_forkgen); /* until the locks exist: nothing for ctx_free to destroy */
    atomic_init(&c->fd, -1);
    atomic_init(&c->cfd, -1);
    c->next_number = 1;
    uint64_t ring = 1;
    while (ring < c->nbufs)
        ring <<= 1;
    c->ring_mask = ring - 1;
    c->free_words = (c->nbufs + 63) / 64;
    c->header_len = (size_t)PyBytes_GET_SIZE(header);
    c->mem = malloc((size_t)c->nbufs * c->size);
    if (posix_memalign((void **)&c->bufs, 64, (size_t)c->nbufs * sizeof *c->bufs) == 0)
        memset(c->bufs, 0, (size_t)c->nbufs * sizeof *c->bufs);
    else
        c->bufs = NULL;
    c->free_bits = calloc(c->free_words, sizeof *c->free_bits);
    c->ring = calloc(ring, sizeof *c->ring);
    c->slot_buf = calloc(MAX_SLOTS, sizeof *c->slot_buf);
    c->slot_used = calloc((MAX_SLOTS + 63) / 64, sizeof *c->slot_used);
    c->cbuf = malloc(CONTROL_KEEP + CONTROL_READ);
    c->header = malloc(c->header_len + 1);
    c->path = strdup(PyBytes_AS_STRING(path));
    if (control != Py_None)
        c->control_path = strdup(PyBytes_AS_STRING(control));
    if (!c->mem || !c->bufs || !c->free_bits || !c->ring || !c->slot_buf || !c->slot_used || !c->cbuf ||
        !c->header || !c->path || (control != Py_None && !c->control_path))
        goto fail;
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        goto fail;
    int ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&c->wcond, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (!ok)
        goto fail;
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        pthread_cond_destroy(&c->wcond);
        goto fail;
    }
    if (pthread_mutex_init(&c->wlock, NULL) != 0) {
        pthread_cond_destroy(&c->wcond);
        pthread_mutex_destroy(&c->lock);
        goto fail;
    }
    c->forkgen = atomic_load(&g_forkgen);
    memcpy(c->header, PyBytes_AS_STRING(header), c->header_len);
    for (uint32_t b = 0; b < c->nbufs; b++)
        atomic_fetch_or(&c->free_bits[b / 64], UINT64_C(1) << (b % 64));
    atomic_store(&c->free_count, c->nbufs);
    return c;
fail:
    ctx_free(c);
    return NULL;
}

LPM_EXPORT int lpm_abi_version(void) { return LPM_ABI_VERSION; }

LPM_EXPORT const char *lpm_event_table(void) { return EVENT_TABLE; }

LPM_EXPORT PyObject *lpm_sink_new(const struct lpm_config *cfg, PyObject *header, PyObject *path, PyObject *control)
{
    if (setup_once() < 0)
        return NULL;
    if (!PyBytes_Check(header) || !PyBytes_Check(path) || (control != Py_None && !PyBytes_Check(control))) {
        PyErr_SetString(PyExc_TypeError, "header and paths must be bytes");
        return NULL;
    }
    if (cfg->buffers < 1 || cfg->buffers > (UINT64_C(1) << 30) || cfg->buffer_size < 64 ||
        cfg->buffer_size > MAX_BUFFER_SIZE || cfg->max_text > MAX_PAYLOAD - 8) {
        PyErr_SetString(PyExc_ValueError, "lpm: buffers, buffer size or text limit out of range");
        return NULL;
    }
    struct ctx *c = ctx_new(cfg, header, path, control);
    if (c == NULL)
        return PyErr_NoMemory();
    pthread_mutex_lock(&g_lock);
    c->serial = ++g_serial;
    c->next = g_contexts;
    g_contexts = c;
    pthread_mutex_unlock(&g_lock);
    struct ctxobj *obj = (struct ctxobj *)PyType_GenericAlloc(g_ctx_type, 0);
    c->watch_key = PyUnicode_FromFormat("lpm.leech.exit_watch.%llu", (unsigned long long)c->serial);
    if (obj == NULL || c->watch_key == NULL) {
        Py_XDECREF(obj);
        ctx_free(c);
        return NULL;
    }
    obj->c = c;
    return (PyObject *)obj;
}

LPM_EXPORT PyObject *lpm_sink_functions(PyObject *obj)
{
    if (ctx_arg(obj) == NULL)
        return NULL;
    PyObject *out = PyDict_New();
    for (PyMethodDef *def = SINK_FUNCTIONS; out != NULL && def->ml_name != NULL; def++) {
        PyObject *fn = PyCFunction_NewEx(def, obj, NULL);
        if (fn == NULL || PyDict_SetItemString(out, def->ml_name, fn) < 0)
            Py_CLEAR(out);
        Py_XDECREF(fn);
    }
    return out;
}

LPM_EXPORT int lpm_sink_start(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return -1;
    if (c->state != IDLE || inherited(c))
        return 0;
    /* The writer starts with the asynchronous signals blocked: SIGPIPE then
     * shows up as EPIPE from write(), and the program's signals go to its
     * own threads. */
    sigset_t all, old;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGABRT);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&c->writer, NULL, writer_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    c->state = RUNNING;
    return 0;
}

LPM_EXPORT int lpm_sink_stop(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return -1;
    if (c->state != RUNNING || inherited(c))
        return 0;
    sampler_stop(c); /* the monitor stops it first; this is the guard */
    c->state = STOPPING;
    pthread_mutex_lock(&c->lock);
    struct thread **order = malloc((c->nlive + 1) * sizeof *order);
    c->final = malloc((c->nlive + 1) * sizeof *c->final);
    if (order != NULL && c->final != NULL) {
        if (c->nlive)
            memcpy(order, c->live, c->nlive * sizeof *order);
        qsort(order, c->nlive, sizeof *order, by_slot);
        for (size_t i = 0; i < c->nlive; i++)
            if (order[i]->buf >= 0)
                queue_current(c, order[i]);
        for (size_t i = 0; i < c->nlive; i++)
            c->final[i] = closing_of(order[i]);
        c->nfinal = c->nlive;
    }
    free(order);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_lock(&c->wlock);
    atomic_store(&c->stopping, 1);
    pthread_cond_signal(&c->wcond);
    pthread_mutex_unlock(&c->wlock);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(c->writer, NULL);
    Py_END_ALLOW_THREADS
    c->state = STOPPED;
    return 0;
}

LPM_EXPORT int64_t lpm_thread_number(PyObject *obj, unsigned long ident, unsigned long native_id, PyObject *name)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return -1;
    if (inherited(c))
        return 0;
    uint8_t *label;
    uint32_t label_len;
    if (make_label(c, name, &label, &label_len) < 0)
        return -1;
    pthread_mutex_lock(&c->lock);
    struct thread *st = find_by_ident(c, ident);
    if (st == NULL) {
        st = new_thread(c, ident, native_id, name, label, label_len);
        if (st != NULL)
            label = NULL;
    }
    int64_t number = st ? (int64_t)st->number : -1;
    pthread_mutex_unlock(&c->lock);
    free(label);
    if (number < 0)
        no_slot();
    return number;
}

LPM_EXPORT int lpm_thread_renamed(PyObject *obj, unsigned long ident, PyObject *name)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return -1;
    if (inherited(c))
        return 0;
    uint8_t *label;
    uint32_t label_len;
    if (make_label(c, name, &label, &label_len) < 0)
        return -1;
    pthread_mutex_lock(&c->lock);
    struct thread *st = find_by_ident(c, ident);
    if (st != NULL) {
        uint8_t *old = st->label;
        st->label = label;
        st->label_len = label_len;
        st->unnamed = 0;
        label = old;
    }
    pthread_mutex_unlock(&c->lock);
    free(label);
    return 0;
}

LPM_EXPORT int lpm_thread_gone(PyObject *obj, unsigned long ident)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return -1;
    if (inherited(c))
        return 0;
    pthread_mutex_lock(&c->lock);
    struct thread *st = find_by_ident(c, ident);
    pthread_mutex_unlock(&c->lock);
    if (st != NULL && c->al != NULL && (st->allocs || st->frees)) {
        /* Its last allocation totals, from the caller (the monitor). */
        struct thread *me = current(c);
        if (me == NULL)
            PyErr_Clear();
        else if (me != st)
            alloc_stats_event(c, me, st, now(c));
    }
    pthread_mutex_lock(&c->lock);
    st = find_by_ident(c, ident);
    if (st != NULL)
        thread_exit(c, st);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

LPM_EXPORT PyObject *lpm_take_new(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return NULL;
    struct fresh *items = NULL;
    size_t n = 0;
    if (!inherited(c)) {
        pthread_mutex_lock(&c->lock);
        items = c->fresh;
        n = c->nfresh;
        c->fresh = NULL;
        c->nfresh = c->cap_fresh = 0;
        pthread_mutex_unlock(&c->lock);
    }
    PyObject *out = PyList_New(0);
    for (size_t i = 0; i < n; i++) {
        PyObject *item = NULL;
        PyObject *name = items[i].name;
        if (name == NULL) /* registered by the background sampler */
            name = PyUnicode_FromFormat("thread-%u", items[i].number);
        if (out != NULL && name != NULL)
            item = Py_BuildValue("(IkkO)", items[i].number, items[i].ident, items[i].native_id, name);
        if (item == NULL || PyList_Append(out, item) < 0)
            Py_CLEAR(out);
        Py_XDECREF(item);
        Py_XDECREF(name);
    }
    free(items);
    return out;
}

LPM_EXPORT PyObject *lpm_take_commands(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return NULL;
    struct bytes lines[MAX_COMMANDS];
    size_t n = 0;
    if (!inherited(c)) {
        pthread_mutex_lock(&c->wlock);
        for (; n < c->ncmd; n++)
            lines[n] = c->commands[(c->cmd_first + n) % MAX_COMMANDS];
        c->cmd_first = c->ncmd = 0;
        pthread_mutex_unlock(&c->wlock);
    }
    PyObject *out = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; i < n; i++) {
        if (out != NULL) {
            PyObject *line = PyBytes_FromStringAndSize((const char *)lines[i].data, (Py_ssize_t)lines[i].len);
            if (line == NULL)
                Py_CLEAR(out);
            else
                PyList_SET_ITEM(out, (Py_ssize_t)i, line);
        }
        free(lines[i].data);
    }
    return out;
}

LPM_EXPORT PyObject *lpm_sequence_points(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL || inherited(c))
        return out;
    /* Building the list runs no Python code that could change the threads,
     * and the GIL keeps every other changer out. */
    for (size_t i = 0; i < c->nlive; i++) {
        PyObject *item = Py_BuildValue("(IK)", c->live[i]->number, (unsigned long long)c->live[i]->seq);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

LPM_EXPORT PyObject *lpm_stats(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return NULL;
    unsigned long long produced = 0;
    size_t threads = 0;
    if (!inherited(c)) {
        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < c->nlive; i++)
            produced += c->live[i]->seq;
        threads = c->nlive;
        pthread_mutex_unlock(&c->lock);
    }
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:n,s:I}", "produced_live_threads", produced, "dropped",
                         (unsigned long long)atomic_load(&c->dropped), "bytes_written",
                         (unsigned long long)atomic_load(&c->bytes_written), "connections",
                         (unsigned long long)atomic_load(&c->connections), "threads", (Py_ssize_t)threads,
                         "free_buffers", (unsigned)atomic_load(&c->free_count));
}

LPM_EXPORT int lpm_set_paused(PyObject *obj, int paused)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return -1;
    atomic_store(&c->paused, paused != 0);
    return 0;
}

LPM_EXPORT int lpm_paused(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    return c == NULL ? -1 : atomic_load(&c->paused);
}

LPM_EXPORT uint64_t lpm_now(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    return c == NULL ? 0 : now(c);
}

LPM_EXPORT uint64_t lpm_start_ns(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    return c == NULL ? 0 : c->t0;
}

LPM_EXPORT uint64_t lpm_reader_events(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    return c == NULL ? 0 : atomic_load(&c->reader_events);
}

LPM_EXPORT uint64_t lpm_backlog(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return 0;
    pthread_mutex_lock(&c->lock);
    uint64_t n = atomic_load(&c->q_tail) - atomic_load(&c->q_head) + c->nretiring + c->nannounce;
    pthread_mutex_unlock(&c->lock);
    return n;
}

LPM_EXPORT int lpm_bg_start(PyObject *obj, double rate)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return -1;
    if (inherited(c) || c->bg != NULL || c->state != RUNNING)
        return 0;
    struct thread *st = current(c); /* the monitor's: the caller */
    if (st == NULL)
        return PyErr_Occurred() ? -1 : 0;
    struct sampler *s = calloc(1, sizeof *s);
    if (s == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->c = c;
    s->st = st;
    s->own_ident = PyThread_get_thread_ident();
    s->interp = PyThreadState_GetInterpreter(PyThreadState_Get());
    s->pid = getpid();
    s->cap = 1024;
    s->codes = calloc(s->cap, sizeof *s->codes);
    s->copy = malloc(STACK_COPY);
    s->text = malloc(4 * ((size_t)c->cfg.max_text + 1) + HEAD + 2 + 8 + 2 * ((size_t)c->cfg.max_text + 1));
    atomic_store(&s->interval_ns, rate > 0 ? (uint64_t)(1e9 / rate) : 0);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->wlock, NULL);
    pthread_cond_init(&s->wcond, &attr);
    pthread_condattr_destroy(&attr);
    /* A kernel or sandbox that refuses process_vm_readv() (seccomp, no
     * CONFIG_CROSS_MEMORY_ATTACH) leaves sampling to the monitor. */
    uint64_t probe = 0, here = 0x6c706d;
    if (s->codes == NULL || s->copy == NULL || s->text == NULL || peek(s, &probe, (uintptr_t)&here, 8) < 0 ||
        probe != here) {
        sampler_free(s);
        return 0;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* signals stay with the program's threads */
    int err = pthread_create(&s->thread, NULL, sampler_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        sampler_free(s);
        return 0;
    }
    c->bg = s;
    return 1;
}

LPM_EXPORT int lpm_bg_rate(PyObject *obj, double rate)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return -1;
    struct sampler *s = c->bg;
    if (s != NULL) {
        pthread_mutex_lock(&s->wlock);
        atomic_store(&s->interval_ns, rate > 0 ? (uint64_t)(1e9 / rate) : 0);
        pthread_cond_signal(&s->wcond);
        pthread_mutex_unlock(&s->wlock);
    }
    return 0;
}

/* PyGeneration `gen` into the monitor's buffer, and an empty code table,
 * with no sample between them. */
LPM_EXPORT int lpm_bg_generation(PyObject *obj, uint32_t gen)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return -1;
    struct thread *st = current(c);
    if (st == NULL)
        return PyErr_Occurred() ? -1 : 0;
    uint64_t ts = now(c);
    uint8_t head[HEAD + EV_GENERATION_SIZE];
    put32(put_head(head, EV_GENERATION, ts), gen);
    c->tr.gen = gen; /* the tracer declares its numbers again from here */
    struct sampler *s = c->bg;
    if (s == NULL || st != s->st) {
        put_event(c, st, ts, head, sizeof head, NULL);
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    put_owned(c, st, ts, head, sizeof head, NULL);
    memset(s->codes, 0, s->cap * sizeof *s->codes);
    s->next_code = 0;
    atomic_store(&s->ncodes, 0);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* On (1) or off (0), or the floor (2: the wrappers installed, passing
 * through, what any allocation tracker costs); `sample_bytes` between
 * sampled allocations (0: none). */
LPM_EXPORT int lpm_alloc(PyObject *obj, int on, unsigned long long sample_bytes)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return -1;
    if (inherited(c))
        return 0;
    if (c->al == NULL) {
        if (!on)
            return 0;
        c->al = calloc(1, sizeof *c->al);
        if (c->al == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    struct allocs *a = c->al;
    if (on && !a->on && alloc_install(c) < 0)
        return -1;
    if (on == 2)
        on = 0; /* installed, passing through */
    a->sample_bytes = sample_bytes;
    if (!on && a->on) {
        atable_free(a); /* what was allocated while on and is still live is forgotten */
    }
    a->on = on;
    return 0;
}

/* PyAllocStats of every live thread that allocated, into the caller's
 * (the monitor's) buffer; (bytes not attributed, blocks the map missed,
 * leaves of the map: 512 bytes each) or None when tracking never started. */
LPM_EXPORT PyObject *lpm_alloc_stats(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return NULL;
    struct allocs *a = c->al;
    if (a == NULL || inherited(c))
        Py_RETURN_NONE;
    struct thread *me = current(c);
    if (me == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    uint64_t ts = now(c);
    pthread_mutex_lock(&c->lock);
    size_t n = c->nlive;
    struct thread **live = malloc((n + 1) * sizeof *live);
    if (live != NULL)
        memcpy(live, c->live, n * sizeof *live);
    pthread_mutex_unlock(&c->lock);
    if (live == NULL)
        return PyErr_NoMemory();
    for (size_t i = 0; i < n; i++)
        if (live[i]->allocs || live[i]->frees)
            alloc_stats_event(c, me, live[i], ts);
    free(live);
    return Py_BuildValue("(KKK)", (unsigned long long)a->other_bytes, (unsigned long long)a->untracked,
                         (unsigned long long)a->leaves);
}

/* Call tracing off (0), on (1), or its floor (2: the same hooks, empty),
 * in every thread but `skip` (the monitor's). */
LPM_EXPORT int lpm_trace(PyObject *obj, int mode, unsigned long skip)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return -1;
    if (inherited(c))
        return 0;
    if (mode < TRACE_OFF || mode > TRACE_FLOOR) {
        PyErr_Format(PyExc_ValueError, "trace mode %d is not 0 (off), 1 (on) or 2 (floor)", mode);
        return -1;
    }
    c->tr.skip = skip;
    if (mode == c->tr.mode)
        return 0;
    if (code_extra < 0 && (code_extra = REQUEST_EXTRA(NULL)) < 0)
        return -1;
    if (c->tr.mode != TRACE_OFF) {
        if (trace_stop(c, obj) < 0)
            return -1;
        c->tr.mode = TRACE_OFF;
    }
    if (mode != TRACE_OFF) {
        tsc_start(c); /* before the writer may refit it */
        c->tr.mode = mode; /* before the hooks: a thread they start sees it */
        if (trace_start(c, obj, mode) < 0) {
            KEEP_ERROR(trace_stop(c, obj));
            c->tr.mode = TRACE_OFF;
            return -1;
        }
    }
    return 0;
}

/* (mode, code and C function numbers given out, threads left to another
 * profiler). */
LPM_EXPORT PyObject *lpm_trace_stats(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return NULL;
    return Py_BuildValue("(iIK)", c->tr.mode, c->tr.next, (unsigned long long)c->tr.skipped);
}

/* (ticks, code objects in the table, failed reads), or None when no
 * background sampler runs. */
LPM_EXPORT PyObject *lpm_bg_stats(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return NULL;
    struct sampler *s = c->bg;
    if (s == NULL)
        Py_RETURN_NONE;
    return Py_BuildValue("(KKK)", (unsigned long long)atomic_load(&s->ticks),
                         (unsigned long long)atomic_load(&s->ncodes), (unsigned long long)atomic_load(&s->faults));
}

LPM_EXPORT int lpm_bg_stop(PyObject *obj)
{
    struct ctx *c = ctx_arg(obj);
    if (c == NULL)
        return -1;
    sampler_stop(c);
    return 0;
}

/* -- lpm's own objects, kept out of the program's collections ---------------
 *
 * Every full collection walks every tracked object, and each of lpm's
 * (its modules' functions, classes and dicts, ctypes, the running leech) is
 * a cache miss or more in a walk that exists for the program's garbage, not
 * lpm's: on an allocation-heavy program lpm's ~1,500 long-lived objects
 * cost a few percent by the clock.  CPython's own answer for long-lived
 * objects is gc.freeze(), the permanent generation, which takes every
 * object at once; this takes only the objects Python names
 * (lpm.leech.footprint) and moves them into a ring of their own, as the
 * runtime anchors keep a profiler's state off the profiled heap (JFR's
 * buffers and tables are native memory the Java collector never scans).
 *
 * A collection only walks the generation lists, so an object on this ring
 * is never examined, as a frozen one is not; it stays tracked, so CPython's
 * deallocators, which unlink an object from whatever list holds it without
 * asking which, work unchanged (untracking lpm's objects instead would make
 * them unlink an object from no list at all and crash).  What the ring
 * costs is what freezing costs: garbage cycles through these objects wait
 * until lpm_gc_let_in() hands the ring back, which lpm.leech does first
 * thing when it stops, after fork, and at exit.
 *
 * It relies on the list links every GIL build of 3.9 to 3.13 puts before a
 * tracked object (two words: next, then prev with two flag bits), the
 * layout the interpreter's own inline functions use.  Other builds keep
 * nothing out.
 */
#if PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
#define GC_RING 1
struct gc_link {
    uintptr_t next;
    uintptr_t prev; /* the low two bits are flags (finalized, collecting) */
};
enum { COLLECTING = 2, PREV_FLAGS = 3, UNREACHABLE = 1 };

static struct gc_link g_ring; /* the head of the ring; all zero until first used */

static struct gc_link *gc_link(PyObject *o) { return (struct gc_link *)o - 1; }

static void link_after(struct gc_link *at, struct gc_link *first, struct gc_link *last)
{
    struct gc_link *next = (struct gc_link *)at->next;
    at->next = (uintptr_t)first;
    first->prev = (first->prev & PREV_FLAGS) | (uintptr_t)at;
    last->next = (uintptr_t)next;
    next->prev = (next->prev & PREV_FLAGS) | (uintptr_t)last;
}

static void unlink_gc(struct gc_link *g)
{
    struct gc_link *prev = (struct gc_link *)(g->prev & ~(uintptr_t)PREV_FLAGS);
    struct gc_link *next = (struct gc_link *)g->next;
    prev->next = (uintptr_t)next;
    next->prev = (next->prev & PREV_FLAGS) | (uintptr_t)prev;
}
#endif

/* Hand every kept-out object back to the collector, as the youngest of
 * generation 0.  The objects go in after a new list (which the interpreter
 * tracks at the end of generation 0, wherever that list's head lives), and
 * freeing the list takes it out again. */
LPM_EXPORT Py_ssize_t lpm_gc_let_in(void)
{
#ifdef GC_RING
    if (g_ring.next == 0 || g_ring.next == (uintptr_t)&g_ring)
        return 0;
    Py_ssize_t n = 0; /* counted now: a kept-out object freed since left the ring as it went */
    for (uintptr_t g = g_ring.next; g != (uintptr_t)&g_ring; g = ((struct gc_link *)g)->next)
        n++;
    PyObject *anchor = PyList_New(0);
    if (anchor == NULL)
        return -1;
    link_after(gc_link(anchor), (struct gc_link *)g_ring.next, (struct gc_link *)(g_ring.prev & ~(uintptr_t)PREV_FLAGS));
    g_ring.next = g_ring.prev = (uintptr_t)&g_ring;
    Py_DECREF(anchor);
    return n;
#else
    return 0;
#endif
}

/* Keep the objects of `objects` (a list) out of collections: those tracked,
 * and not inside a collection running now (the caller could be a finalizer).
 * Whatever was kept out before is let in first, so a second call replaces
 * the first.  The number kept out, or -1 with an exception. */
LPM_EXPORT Py_ssize_t lpm_gc_keep_out(PyObject *objects)
{
    if (!PyList_Check(objects)) {
        PyErr_SetString(PyExc_TypeError, "lpm_gc_keep_out takes a list");
        return -1;
    }
#ifdef GC_RING
    if (lpm_gc_let_in() < 0)
        return -1;
    if (g_ring.next == 0)
        g_ring.next = g_ring.prev = (uintptr_t)&g_ring;
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(objects); i++) {
        PyObject *o = PyList_GET_ITEM(objects, i);
        if (!PyObject_IS_GC(o) || !PyObject_GC_IsTracked(o))
            continue;
        struct gc_link *g = gc_link(o);
        if ((g->prev & COLLECTING) || (g->next & UNREACHABLE))
            continue; /* in a collection's working lists */
        unlink_gc(g);
        link_after((struct gc_link *)(g_ring.prev & ~(uintptr_t)PREV_FLAGS), g, g);
        n++;
    }
    return n;
#else
    return 0;
#endif
}
