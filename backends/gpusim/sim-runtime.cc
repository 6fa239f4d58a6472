/*
 * sim-runtime.cc — the simulated CUDA device: runtime calls, memory,
 * streams, events, graphs, errors, and the fiber scheduler that runs
 * kernels (the model is described at the top of sim-vendor.h).
 *
 * Threading: the runtime's tables are guarded by mutexes; work on any
 * stream runs under one device mutex (streams execute at enqueue), and a
 * launch spreads its blocks over the worker pool. Each OS thread that runs
 * blocks has its own executor (fibers, stacks, barrier state) in TLS.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "sim-vendor.h"

#if defined(__SANITIZE_ADDRESS__)
#define SIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIM_ASAN 1
#endif
#endif
#ifdef SIM_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace copse_gpusim_rt {

/* ---------------------------------------------------------------- configuration */

#define SIM_DEVICE_NAME "copse gpusim (CPU)"
#define SIM_MAX_THREADS 1024
#define SIM_STATIC_SHMEM ((size_t)48 << 10)
#define SIM_MAX_SHMEM_OPTIN ((size_t)227 << 10)
#ifdef SIM_ASAN
#define SIM_STACK ((size_t)512 << 10)
#else
#define SIM_STACK ((size_t)128 << 10)
#endif

/* bytes from the environment, with an optional K, M or G suffix; dflt when unset or malformed */
static size_t env_size(const char *name, size_t dflt)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return dflt;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        goto bad;
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    default: break;
    }
    if (*end)
        goto bad;
    return (size_t)v;
bad:
    fprintf(stderr, "copse gpusim: %s='%s' is not a byte count, ignored\n", name, s);
    return dflt;
}

struct config {
    size_t total_mem, mem_limit;
    unsigned long long fail_launch; /* 0: never */
    int threads;
};

static const config &cfg(void)
{
    static const config c = [] {
        config r;
        r.total_mem = env_size("COPSE_GPUSIM_MEM", (size_t)8 << 30);
        r.mem_limit = env_size("COPSE_GPUSIM_MEM_LIMIT", r.total_mem);
        if (r.mem_limit > r.total_mem)
            r.mem_limit = r.total_mem;
        r.fail_launch = (unsigned long long)env_size("COPSE_GPUSIM_FAIL_LAUNCH", 0);
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        int t = (int)env_size("COPSE_GPUSIM_THREADS", nc >= 2 ? 2 : 1);
        r.threads = t < 1 ? 1 : t > 64 ? 64 : t;
        return r;
    }();
    return c;
}

/* ---------------------------------------------------------------- errors */

static std::atomic<int> sticky_error{cudaSuccess}; /* a fatal error: every later call returns it */
static thread_local cudaError_t last_error = cudaSuccess;

static cudaError_t fail(cudaError_t e)
{
    if (e != cudaSuccess && last_error == cudaSuccess)
        last_error = e;
    return e;
}

/* Every call starts here: the sticky error, if any. */
static cudaError_t enter(void)
{
    const int s = sticky_error.load(std::memory_order_relaxed);
    return s != cudaSuccess ? fail((cudaError_t)s) : cudaSuccess;
}

static void set_sticky(cudaError_t e)
{
    int expect = cudaSuccess;
    sticky_error.compare_exchange_strong(expect, e);
    fail(e);
}

cudaError_t GetLastError(void)
{
    const int s = sticky_error.load(std::memory_order_relaxed);
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return s != cudaSuccess ? (cudaError_t)s : e;
}

cudaError_t PeekAtLastError(void)
{
    const int s = sticky_error.load(std::memory_order_relaxed);
    return s != cudaSuccess ? (cudaError_t)s : last_error;
}

#define SIM_ERRORS(X)                                                                                             \
    X(cudaSuccess, "no error")                                                                                    \
    X(cudaErrorInvalidValue, "invalid argument")                                                                  \
    X(cudaErrorMemoryAllocation, "out of memory")                                                                 \
    X(cudaErrorInitializationError, "initialization error")                                                       \
    X(cudaErrorInvalidConfiguration, "invalid configuration argument")                                            \
    X(cudaErrorInvalidMemcpyDirection, "invalid copy direction for memcpy")                                       \
    X(cudaErrorInsufficientDriver, "CUDA driver version is insufficient for CUDA runtime version")                \
    X(cudaErrorInvalidDeviceFunction, "invalid device function")                                                  \
    X(cudaErrorNoDevice, "no CUDA-capable device is detected")                                                    \
    X(cudaErrorInvalidDevice, "invalid device ordinal")                                                           \
    X(cudaErrorNoKernelImageForDevice, "no kernel image is available for execution on the device")               \
    X(cudaErrorInvalidResourceHandle, "invalid resource handle")                                                  \
    X(cudaErrorIllegalState, "the operation cannot be performed in the present state")                           \
    X(cudaErrorNotReady, "device not ready")                                                                      \
    X(cudaErrorIllegalAddress, "an illegal memory access was encountered")                                        \
    X(cudaErrorLaunchOutOfResources, "too many resources requested for launch")                                   \
    X(cudaErrorAssert, "device-side assert triggered")                                                            \
    X(cudaErrorLaunchFailure, "unspecified launch failure")                                                       \
    X(cudaErrorNotSupported, "operation not supported")                                                           \
    X(cudaErrorStreamCaptureUnsupported, "operation not permitted when stream is capturing")                     \
    X(cudaErrorStreamCaptureInvalidated, "operation failed due to a previous error during capture")              \
    X(cudaErrorStreamCaptureUnmatched, "capture was not initiated in this stream")                                \
    X(cudaErrorStreamCaptureImplicit, "operation would make the legacy stream depend on a capturing blocking stream") \
    X(cudaErrorGraphExecUpdateFailure, "the graph update was not performed because it included changes which violated constraints specific to instantiated graph update") \
    X(cudaErrorUnknown, "unknown error")

const char *GetErrorString(cudaError_t e)
{
#define X(c, s)                                                                                                   \
    case c:                                                                                                       \
        return s;
    switch (e) { SIM_ERRORS(X) }
#undef X
    return "unrecognized error code";
}

const char *GetErrorName(cudaError_t e)
{
#define X(c, s)                                                                                                   \
    case c:                                                                                                       \
        return #c;
    switch (e) { SIM_ERRORS(X) }
#undef X
    return "cudaErrorUnknown";
}

/* ---------------------------------------------------------------- device */

cudaError_t GetDeviceCount(int *n)
{
    *n = 1;
    return enter();
}

cudaError_t GetDeviceProperties(cudaDeviceProp *p, int dev)
{
    if (dev != 0)
        return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", SIM_DEVICE_NAME);
    p->totalGlobalMem = cfg().total_mem;
    p->sharedMemPerBlock = SIM_STATIC_SHMEM;
    p->sharedMemPerBlockOptin = SIM_MAX_SHMEM_OPTIN;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = SIM_MAX_THREADS;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->major = 0; /* "sim": no real compute capability */
    p->minor = 0;
    p->multiProcessorCount = 2;
    p->maxThreadsPerMultiProcessor = 2048;
    return cudaSuccess;
}

cudaError_t SetDevice(int dev)
{
    if (dev != 0)
        return fail(cudaErrorInvalidDevice);
    return enter();
}

cudaError_t GetDevice(int *dev)
{
    *dev = 0;
    return cudaSuccess;
}

/* ---------------------------------------------------------------- memory */

static std::mutex mem_mu;
static std::map<uintptr_t, size_t> dev_allocs, host_allocs;
static size_t dev_used;

cudaError_t MemGetInfo(size_t *free_b, size_t *total_b)
{
    cudaError_t e = enter();
    if (e != cudaSuccess)
        return e;
    std::lock_guard<std::mutex> lock(mem_mu);
    *total_b = cfg().total_mem;
    *free_b = cfg().mem_limit - dev_used;
    return cudaSuccess;
}

cudaError_t Malloc(void **p, size_t n)
{
    *p = NULL;
    cudaError_t e = enter();
    if (e != cudaSuccess)
        return e;
    std::lock_guard<std::mutex> lock(mem_mu);
    if (n > cfg().mem_limit - dev_used)
        return fail(cudaErrorMemoryAllocation);
    void *m = NULL;
    /* the exact size: a sanitizer sees every byte past it */
    if (posix_memalign(&m, 256, n ? n : 1) != 0)
        return fail(cudaErrorMemoryAllocation);
    dev_allocs[(uintptr_t)m] = n;
    dev_used += n;
    *p = m;
    return cudaSuccess;
}

/* Frees even after a sticky error (no leak), but reports it. */
cudaError_t Free(void *p)
{
    if (!p)
        return enter();
    {
        std::lock_guard<std::mutex> lock(mem_mu);
        auto it = dev_allocs.find((uintptr_t)p);
        if (it == dev_allocs.end())
            return fail(cudaErrorInvalidValue);
        mem_used(p, it->second, it->second);
        dev_used -= it->second;
        dev_allocs.erase(it);
    }
    free(p);
    return enter();
}

cudaError_t HostAlloc(void **p, size_t n, unsigned flags)
{
    (void)flags;
    *p = NULL;
    cudaError_t e = enter();
    if (e != cudaSuccess)
        return e;
    void *m = NULL;
    if (posix_memalign(&m, 4096, n ? n : 1) != 0)
        return fail(cudaErrorMemoryAllocation);
    std::lock_guard<std::mutex> lock(mem_mu);
    host_allocs[(uintptr_t)m] = n;
    *p = m;
    return cudaSuccess;
}

cudaError_t FreeHost(void *p)
{
    if (!p)
        return enter();
    {
        std::lock_guard<std::mutex> lock(mem_mu);
        if (host_allocs.erase((uintptr_t)p) == 0)
            return fail(cudaErrorInvalidValue);
    }
    free(p);
    return enter();
}

void mem_used(void *p, size_t used, size_t cap)
{
#ifdef SIM_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, used);
    ASAN_POISON_MEMORY_REGION((unsigned char *)p + used, cap - used);
#else
    (void)p, (void)used, (void)cap;
#endif
}

/* [p, p + n) inside one live device allocation? */
static bool in_device(const void *p, size_t n)
{
    std::lock_guard<std::mutex> lock(mem_mu);
    auto it = dev_allocs.upper_bound((uintptr_t)p);
    if (it == dev_allocs.begin())
        return false;
    --it;
    const uintptr_t a = (uintptr_t)p;
    return a >= it->first && a - it->first <= it->second && n <= it->second - (a - it->first);
}

static bool copy_ok(void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
    if (n == 0)
        return true;
    switch (kind) {
    case cudaMemcpyHostToHost: return true;
    case cudaMemcpyHostToDevice: return in_device(dst, n);
    case cudaMemcpyDeviceToHost: return in_device(src, n);
    case cudaMemcpyDeviceToDevice: return in_device(dst, n) && in_device(src, n);
    case cudaMemcpyDefault: return true;
    }
    return false;
}

/* ---------------------------------------------------------------- streams, graphs */

typedef std::function<cudaError_t()> work;

struct graph {
    std::vector<work> ops;
};

struct graph_exec {
    std::vector<work> ops;
};

struct stream {
    unsigned flags;
    graph *capture; /* non-NULL while capturing */
    bool capture_failed;
};

struct event {
    std::chrono::steady_clock::time_point t;
    bool recorded;
    bool timing;
};

static stream legacy_stream; /* stream 0 */
static std::mutex exec_mu;   /* work on the device runs one item at a time */

static stream *S(cudaStream_t s)
{
    return s ? s : &legacy_stream;
}

/* Run w now, or record it when s is capturing. */
static cudaError_t submit(cudaStream_t s, work w)
{
    stream *st = S(s);
    if (st->capture) {
        st->capture->ops.push_back(std::move(w));
        return cudaSuccess;
    }
    cudaError_t e;
    {
        std::lock_guard<std::mutex> lock(exec_mu);
        e = enter();
        if (e == cudaSuccess)
            e = w();
    }
    return e == cudaSuccess ? e : fail(e);
}

/* A synchronizing call on a capturing stream invalidates the capture. */
static cudaError_t sync_point(cudaStream_t s)
{
    stream *st = S(s);
    if (st->capture) {
        st->capture_failed = true;
        return fail(cudaErrorStreamCaptureUnsupported);
    }
    return enter();
}

cudaError_t MemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s)
{
    cudaError_t e = enter();
    if (e != cudaSuccess)
        return e;
    if ((unsigned)kind > cudaMemcpyDefault)
        return fail(cudaErrorInvalidMemcpyDirection);
    if (!copy_ok(dst, src, n, kind)) {
        fprintf(stderr, "copse gpusim: cudaMemcpy of %zu bytes %p -> %p (kind %d) is outside the device allocations\n",
                n, src, dst, (int)kind);
        return fail(cudaErrorInvalidValue);
    }
    return submit(s, [dst, src, n]() {
        if (n)
            memmove(dst, src, n);
        return cudaSuccess;
    });
}

cudaError_t Memcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
    return MemcpyAsync(dst, src, n, kind, NULL);
}

cudaError_t MemsetAsync(void *dst, int v, size_t n, cudaStream_t s)
{
    cudaError_t e = enter();
    if (e != cudaSuccess)
        return e;
    if (n && !in_device(dst, n))
        return fail(cudaErrorInvalidValue);
    return submit(s, [dst, v, n]() {
        memset(dst, v, n);
        return cudaSuccess;
    });
}

cudaError_t Memset(void *dst, int v, size_t n)
{
    return MemsetAsync(dst, v, n, NULL);
}

cudaError_t StreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    *s = NULL;
    cudaError_t e = enter();
    if (e != cudaSuccess)
        return e;
    stream *st = new (std::nothrow) stream();
    if (!st)
        return fail(cudaErrorMemoryAllocation);
    st->flags = flags;
    *s = st;
    return cudaSuccess;
}

cudaError_t StreamCreate(cudaStream_t *s)
{
    return StreamCreateWithFlags(s, cudaStreamDefault);
}

cudaError_t StreamDestroy(cudaStream_t s)
{
    if (!s)
        return fail(cudaErrorInvalidResourceHandle);
    delete s->capture;
    delete s;
    return enter();
}

cudaError_t StreamSynchronize(cudaStream_t s)
{
    return sync_point(s); /* the work already ran */
}

cudaError_t StreamQuery(cudaStream_t s)
{
    (void)s;
    return enter();
}

cudaError_t DeviceSynchronize(void)
{
    return enter();
}

cudaError_t StreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags)
{
    (void)s, (void)flags;
    return e ? enter() : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t EventCreateWithFlags(cudaEvent_t *e, unsigned flags)
{
    *e = NULL;
    cudaError_t r = enter();
    if (r != cudaSuccess)
        return r;
    event *ev = new (std::nothrow) event();
    if (!ev)
        return fail(cudaErrorMemoryAllocation);
    ev->timing = (flags & cudaEventDisableTiming) == 0;
    *e = ev;
    return cudaSuccess;
}

cudaError_t EventCreate(cudaEvent_t *e)
{
    return EventCreateWithFlags(e, cudaEventDefault);
}

cudaError_t EventRecord(cudaEvent_t e, cudaStream_t s)
{
    if (!e)
        return fail(cudaErrorInvalidResourceHandle);
    return submit(s, [e]() {
        e->t = std::chrono::steady_clock::now();
        e->recorded = true;
        return cudaSuccess;
    });
}

cudaError_t EventSynchronize(cudaEvent_t e)
{
    return e ? enter() : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t EventQuery(cudaEvent_t e)
{
    return e ? enter() : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t EventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    if (!a || !b)
        return fail(cudaErrorInvalidResourceHandle);
    if (!a->timing || !b->timing)
        return fail(cudaErrorInvalidResourceHandle);
    if (!a->recorded || !b->recorded)
        return fail(cudaErrorNotReady);
    *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
    return enter();
}

cudaError_t EventDestroy(cudaEvent_t e)
{
    if (!e)
        return fail(cudaErrorInvalidResourceHandle);
    delete e;
    return enter();
}

cudaError_t StreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode)
{
    (void)mode;
    cudaError_t e = enter();
    if (e != cudaSuccess)
        return e;
    if (!s || s->capture)
        return fail(cudaErrorStreamCaptureUnsupported); /* the legacy stream cannot be captured */
    s->capture = new (std::nothrow) graph();
    s->capture_failed = false;
    return s->capture ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t StreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    *g = NULL;
    if (!s || !s->capture)
        return fail(cudaErrorIllegalState);
    graph *gr = s->capture;
    s->capture = NULL;
    if (s->capture_failed) {
        delete gr;
        return fail(cudaErrorStreamCaptureInvalidated);
    }
    *g = gr;
    return enter();
}

cudaError_t GraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags)
{
    (void)flags;
    *x = NULL;
    if (!g)
        return fail(cudaErrorInvalidValue);
    graph_exec *ge = new (std::nothrow) graph_exec();
    if (!ge)
        return fail(cudaErrorMemoryAllocation);
    ge->ops = g->ops;
    *x = ge;
    return enter();
}

cudaError_t GraphLaunch(cudaGraphExec_t x, cudaStream_t s)
{
    if (!x)
        return fail(cudaErrorInvalidResourceHandle);
    return submit(s, [x]() {
        for (const work &w : x->ops) {
            cudaError_t e = w();
            if (e != cudaSuccess)
                return e;
        }
        return cudaSuccess;
    });
}

cudaError_t GraphExecUpdate(cudaGraphExec_t x, cudaGraph_t g, cudaGraphExecUpdateResultInfo *info)
{
    if (!x || !g)
        return fail(cudaErrorInvalidValue);
    const bool same = x->ops.size() == g->ops.size();
    if (info)
        info->result = same ? 0 : 1;
    if (!same)
        return fail(cudaErrorGraphExecUpdateFailure);
    x->ops = g->ops;
    return enter();
}

cudaError_t GraphExecDestroy(cudaGraphExec_t x)
{
    delete x;
    return enter();
}

cudaError_t GraphDestroy(cudaGraph_t g)
{
    delete g;
    return enter();
}

/* ---------------------------------------------------------------- function attributes */

static std::mutex fn_mu;
static std::unordered_map<const void *, int> fn_max_dyn_shmem;

cudaError_t FuncGetAttributes(cudaFuncAttributes *a, const void *fn)
{
    if (!fn)
        return fail(cudaErrorInvalidDeviceFunction);
    memset(a, 0, sizeof *a);
    a->maxThreadsPerBlock = SIM_MAX_THREADS;
    a->numRegs = 32;
    a->ptxVersion = a->binaryVersion = 0;
    std::lock_guard<std::mutex> lock(fn_mu);
    auto it = fn_max_dyn_shmem.find(fn);
    a->maxDynamicSharedSizeBytes = it != fn_max_dyn_shmem.end() ? it->second : (int)SIM_STATIC_SHMEM;
    return enter();
}

cudaError_t FuncSetAttribute(const void *fn, cudaFuncAttribute attr, int value)
{
    if (!fn)
        return fail(cudaErrorInvalidDeviceFunction);
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || (size_t)value > SIM_MAX_SHMEM_OPTIN)
            return fail(cudaErrorInvalidValue);
        std::lock_guard<std::mutex> lock(fn_mu);
        fn_max_dyn_shmem[fn] = value;
    }
    return enter();
}

static size_t max_dyn_shmem(const void *fn)
{
    std::lock_guard<std::mutex> lock(fn_mu);
    auto it = fn_max_dyn_shmem.find(fn);
    return it != fn_max_dyn_shmem.end() ? (size_t)it->second : SIM_STATIC_SHMEM;
}

/* ---------------------------------------------------------------- fibers */

#if defined(__x86_64__)
/* copse_gpusim_switch(save, to): saves the callee-saved registers on the
 * current stack, stores the stack pointer in *save, and resumes the context
 * whose stack pointer is to. (MXCSR and the x87 control word are not
 * switched: nothing in a kernel changes the rounding mode.) */
extern "C" void copse_gpusim_switch(void **save, void *to);
asm(".text\n"
    ".globl copse_gpusim_switch\n"
    ".hidden copse_gpusim_switch\n"
    ".type copse_gpusim_switch,@function\n"
    "copse_gpusim_switch:\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size copse_gpusim_switch, .-copse_gpusim_switch\n");
struct ctx {
    void *sp;
};
#else
struct ctx {
    ucontext_t uc;
};
#endif

enum fiber_state { F_READY, F_WAIT, F_DONE };

struct fiber {
    ctx c;
    unsigned char *stack; /* lowest address; a guard page below stack + page */
    void *fake;           /* ASan fake stack while switched out */
    uint3 tid;
    int lane, warp;
    int state;
    unsigned wpar, bpar;   /* parity of the lane's warp / block barrier rounds */
    const char *file;     /* where it waits */
    int line;
    bool at_block;        /* waiting at __syncthreads (else at a warp primitive) */
};

struct warp_st {
    uint32_t live;    /* lanes that exist and have not returned */
    uint32_t arrived; /* lanes at the current round's barrier */
    uint32_t mask;    /* the round's mask */
    uint32_t valid[2];
    unsigned par; /* the open round's parity */
    const char *file;
    int line;
    unsigned char slot[2][32][16];
};

struct launch_desc {
    const char *name;
    dim3 grid, block;
    int nthreads;
    const std::function<void()> *body;
};

struct executor {
    std::vector<fiber> f;
    std::vector<warp_st> w;
    std::vector<int> ready; /* ring of fiber indices */
    size_t rhead, rcount;
    int n, done, cur;
    /* block barrier */
    int live, arrived;
    const char *bfile;
    int bline;
    const char *bfile2;
    int bline2;
    int bcount[2], bpred;
    unsigned bpar; /* the open round's parity */
    const launch_desc *L;
    ctx sched;
    void *sched_fake;
    const void *sched_bottom;
    size_t sched_size, page;
};

static thread_local executor *tl_ex;

static executor &ex_get(void)
{
    if (!tl_ex) {
        executor *e = new executor();
        e->page = (size_t)sysconf(_SC_PAGESIZE);
        pthread_attr_t a;
        if (pthread_getattr_np(pthread_self(), &a) == 0) {
            void *addr = NULL;
            size_t size = 0;
            pthread_attr_getstack(&a, &addr, &size);
            e->sched_bottom = addr;
            e->sched_size = size;
            pthread_attr_destroy(&a);
        }
        tl_ex = e;
    }
    return *tl_ex;
}

[[noreturn]] static void sim_abort(const executor &ex, const char *what)
{
    fprintf(stderr, "copse gpusim: kernel %s, block (%u,%u,%u): %s\n", ex.L->name, t_block_idx.x, t_block_idx.y,
            t_block_idx.z, what);
    fflush(stderr);
    abort();
}

static void ready_push(executor &ex, int i)
{
    ex.f[(size_t)i].state = F_READY;
    ex.ready[(ex.rhead + ex.rcount) % ex.ready.size()] = i;
    ex.rcount++;
}

static int ready_pop(executor &ex)
{
    if (ex.rcount == 0)
        return -1;
    const int i = ex.ready[ex.rhead];
    ex.rhead = (ex.rhead + 1) % ex.ready.size();
    ex.rcount--;
    return i;
}

static void set_current(executor &ex, int i)
{
    fiber &fb = ex.f[(size_t)i];
    ex.cur = i;
    t_thread_idx = fb.tid;
    t_lane = fb.lane;
}

static void raw_switch(ctx *from, ctx *to)
{
#if defined(__x86_64__)
    copse_gpusim_switch(&from->sp, to->sp);
#else
    swapcontext(&from->uc, &to->uc);
#endif
}

/* Leave the current context (from, its ASan fake stack slot; fake NULL when
 * the context ends) for the next ready fiber, or the scheduler if none. */
static void go_next(executor &ex, ctx *from, void **fake)
{
    const int nx = ready_pop(ex);
    ctx *to;
    const void *bottom;
    size_t size;
    if (nx >= 0) {
        set_current(ex, nx);
        fiber &fb = ex.f[(size_t)nx];
        to = &fb.c;
        bottom = fb.stack + ex.page;
        size = SIM_STACK - ex.page;
    } else {
        to = &ex.sched;
        bottom = ex.sched_bottom;
        size = ex.sched_size;
    }
#ifdef SIM_ASAN
    __sanitizer_start_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
    raw_switch(from, to);
#ifdef SIM_ASAN
    __sanitizer_finish_switch_fiber(fake ? *fake : NULL, NULL, NULL);
#endif
}

/* The current fiber waits at a barrier until it is made ready again. */
static void wait_here(executor &ex)
{
    fiber &fb = ex.f[(size_t)ex.cur];
    fb.state = F_WAIT;
    go_next(ex, &fb.c, &fb.fake);
}

/* ---------------------------------------------------------------- barriers */

static void warp_release(executor &ex, warp_st &w, int self)
{
    w.valid[w.par] = w.arrived;
    const int base = (int)(&w - ex.w.data()) * 32;
    for (int l = 0; l < 32; l++)
        if (((w.arrived >> l) & 1u) && base + l != self)
            ready_push(ex, base + l);
    w.arrived = 0;
}

static bool warp_complete(const warp_st &w)
{
    const uint32_t need = w.mask & w.live;
    return w.arrived != 0 && (w.arrived & need) == need;
}

static void block_release(executor &ex, int self)
{
    if (ex.bfile2) {
        char msg[512];
        snprintf(msg, sizeof msg,
                 "__syncthreads reached at different places by the threads of one block (%s:%d and %s:%d): "
                 "divergent barrier, a kernel bug",
                 ex.bfile, ex.bline, ex.bfile2, ex.bline2);
        sim_abort(ex, msg);
    }
    ex.bcount[ex.bpar] = ex.bpred;
    ex.bpred = 0;
    for (int i = 0; i < ex.n; i++)
        if (i != self && ex.f[(size_t)i].state == F_WAIT && ex.f[(size_t)i].at_block)
            ready_push(ex, i);
    ex.arrived = 0;
    ex.bfile = NULL;
}

static int block_barrier(const char *file, int line, int pred)
{
    executor &ex = *tl_ex;
    fiber &fb = ex.f[(size_t)ex.cur];
    if (ex.arrived == 0) {
        ex.bfile = file;
        ex.bline = line;
        ex.bfile2 = NULL;
        ex.bpar = fb.bpar;
    } else if ((line != ex.bline || strcmp(file, ex.bfile) != 0) && !ex.bfile2) {
        ex.bfile2 = file;
        ex.bline2 = line;
    }
    ex.arrived++;
    ex.bpred += pred != 0;
    fb.at_block = true;
    fb.file = file;
    fb.line = line;
    const unsigned par = fb.bpar;
    fb.bpar ^= 1u;
    if (ex.arrived == ex.live)
        block_release(ex, ex.cur);
    else
        wait_here(ex);
    return ex.bcount[par];
}

void sync_block(const char *file, int line)
{
    (void)block_barrier(file, line, 0);
}

int sync_block_count(const char *file, int line, int pred)
{
    return block_barrier(file, line, pred);
}

/* A warp round: the lane's n bytes in; returns the round's parity. */
static unsigned warp_round(const char *file, int line, uint32_t mask, const void *in, size_t n)
{
    executor &ex = *tl_ex;
    fiber &fb = ex.f[(size_t)ex.cur];
    warp_st &w = ex.w[(size_t)fb.warp];
    const uint32_t bit = 1u << fb.lane;
    if (!(mask & bit)) {
        char msg[256];
        snprintf(msg, sizeof msg, "lane %d calls a warp primitive at %s:%d with mask 0x%08x, which leaves it out",
                 fb.lane, file, line, mask);
        sim_abort(ex, msg);
    }
    if (w.arrived == 0) {
        w.mask = mask;
        w.par = fb.wpar;
        w.file = file;
        w.line = line;
    } else if (w.mask != mask) {
        char msg[512];
        snprintf(msg, sizeof msg,
                 "the lanes of warp %d disagree on a warp primitive's mask: 0x%08x at %s:%d, 0x%08x at %s:%d", fb.warp,
                 w.mask, w.file, w.line, mask, file, line);
        sim_abort(ex, msg);
    }
    const unsigned par = fb.wpar;
    fb.wpar ^= 1u;
    switch (n) { /* fixed sizes: inlined copies */
    case 4: memcpy(w.slot[par][fb.lane], in, 4); break;
    case 8: memcpy(w.slot[par][fb.lane], in, 8); break;
    default: memcpy(w.slot[par][fb.lane], in, n); break;
    }
    w.arrived |= bit;
    fb.at_block = false;
    fb.file = file;
    fb.line = line;
    if (warp_complete(w))
        warp_release(ex, w, ex.cur);
    else
        wait_here(ex);
    return par;
}

void warp_exchange(const char *file, int line, uint32_t mask, const void *in, size_t n, int src, void *out)
{
    const unsigned par = warp_round(file, line, mask, in, n);
    executor &ex = *tl_ex;
    const warp_st &w = ex.w[(size_t)ex.f[(size_t)ex.cur].warp];
    if (src >= 0 && src < 32 && ((w.valid[par] >> src) & 1u)) {
        if (n == 4)
            memcpy(out, w.slot[par][src], 4);
        else if (n == 8)
            memcpy(out, w.slot[par][src], 8);
        else
            memcpy(out, w.slot[par][src], n);
    }
    else
        memset(out, 0xff, n); /* an exited or absent lane: poison */
}

uint32_t warp_ballot(const char *file, int line, uint32_t mask, int pred)
{
    const int v = pred != 0;
    const unsigned par = warp_round(file, line, mask, &v, sizeof v);
    executor &ex = *tl_ex;
    const warp_st &w = ex.w[(size_t)ex.f[(size_t)ex.cur].warp];
    uint32_t r = 0;
    for (int l = 0; l < 32; l++) {
        int p = 0;
        if ((w.valid[par] >> l) & 1u)
            memcpy(&p, w.slot[par][l], sizeof p);
        r |= (uint32_t)(p != 0) << l;
    }
    return r;
}

/* ---------------------------------------------------------------- running blocks */

static void thread_exit(executor &ex)
{
    fiber &fb = ex.f[(size_t)ex.cur];
    fb.state = F_DONE;
    ex.done++;
    warp_st &w = ex.w[(size_t)fb.warp];
    w.live &= ~(1u << fb.lane);
    if (warp_complete(w))
        warp_release(ex, w, -1);
    ex.live--;
    if (ex.arrived > 0 && ex.arrived == ex.live)
        block_release(ex, -1);
}

#ifdef SIM_ASAN
__attribute__((no_sanitize_address))
#endif
static void fiber_main(void)
{
#ifdef SIM_ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    executor &ex = *tl_ex;
    (*ex.L->body)();
    thread_exit(ex);
    ctx dead;
    go_next(ex, &dead, NULL);
    abort(); /* never resumed */
}

#if !defined(__x86_64__)
static void fiber_main_uc(void)
{
    fiber_main();
}
#endif

static bool fiber_init(executor &ex, fiber &fb)
{
    if (!fb.stack) {
        void *m = mmap(NULL, SIM_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            return false;
        (void)mprotect(m, ex.page, PROT_NONE); /* guard page: a stack overflow faults */
        fb.stack = (unsigned char *)m;
    }
#if defined(__x86_64__)
    /* six saved registers, the "return address" fiber_main, a zero above
     * it: fiber_main starts with the stack aligned as after a call */
    uintptr_t top = ((uintptr_t)fb.stack + SIM_STACK) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)(top - 64);
    for (int i = 0; i < 6; i++)
        sp[i] = 0;
    sp[6] = (uint64_t)(uintptr_t)fiber_main;
    sp[7] = 0;
    fb.c.sp = sp;
#else
    getcontext(&fb.c.uc);
    fb.c.uc.uc_stack.ss_sp = fb.stack + ex.page;
    fb.c.uc.uc_stack.ss_size = SIM_STACK - ex.page;
    fb.c.uc.uc_link = NULL;
    makecontext(&fb.c.uc, fiber_main_uc, 0);
#endif
    return true;
}

static void describe_deadlock(executor &ex)
{
    char msg[1024];
    size_t at = 0;
    at += (size_t)snprintf(msg + at, sizeof msg - at, "deadlock: %d of %d threads wait and none can go on:", ex.n - ex.done,
                           ex.n);
    int shown = 0;
    for (int i = 0; i < ex.n && at < sizeof msg - 100 && shown < 6; i++) {
        const fiber &fb = ex.f[(size_t)i];
        if (fb.state != F_WAIT)
            continue;
        /* one line per (kind, site) */
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = ex.f[(size_t)j].state == F_WAIT && ex.f[(size_t)j].line == fb.line &&
                   ex.f[(size_t)j].at_block == fb.at_block && strcmp(ex.f[(size_t)j].file, fb.file) == 0;
        if (seen)
            continue;
        at += (size_t)snprintf(msg + at, sizeof msg - at, " thread %d (warp %d) at %s %s:%d;", i, fb.warp,
                               fb.at_block ? "__syncthreads" : "a warp primitive", fb.file, fb.line);
        shown++;
    }
    sim_abort(ex, msg);
}

static void run_block(executor &ex, const launch_desc &L, uint3 bidx)
{
    const int n = L.nthreads;
    if (ex.f.size() < (size_t)n) {
        ex.f.resize((size_t)n);
        ex.ready.resize((size_t)n + 1);
    }
    const int nw = (n + 31) / 32;
    if (ex.w.size() < (size_t)nw)
        ex.w.resize((size_t)nw);
    ex.L = &L;
    ex.n = n;
    ex.done = 0;
    ex.live = n;
    ex.arrived = 0;
    ex.bfile = ex.bfile2 = NULL;
    ex.bpred = 0;
    ex.rhead = ex.rcount = 0;
    t_block_idx = bidx;
    t_block_dim = uint3{L.block.x, L.block.y, L.block.z};
    t_grid_dim = uint3{L.grid.x, L.grid.y, L.grid.z};
    for (int i = 0; i < nw; i++) {
        warp_st &w = ex.w[(size_t)i];
        const int lanes = n - 32 * i < 32 ? n - 32 * i : 32;
        w.live = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
        w.arrived = 0;
        w.valid[0] = w.valid[1] = 0;
    }
    for (int i = 0; i < n; i++) {
        fiber &fb = ex.f[(size_t)i];
        if (!fiber_init(ex, fb)) {
            fprintf(stderr, "copse gpusim: no memory for fiber stacks\n");
            abort();
        }
        fb.tid = uint3{(unsigned)i % L.block.x, ((unsigned)i / L.block.x) % L.block.y,
                       (unsigned)i / (L.block.x * L.block.y)};
        fb.lane = i % 32;
        fb.warp = i / 32;
        fb.wpar = fb.bpar = 0;
        fb.fake = NULL;
        fb.file = "";
        fb.line = 0;
        fb.at_block = false;
        ready_push(ex, i);
    }
    go_next(ex, &ex.sched, &ex.sched_fake);
    if (ex.done != n)
        describe_deadlock(ex);
}

/* ---------------------------------------------------------------- launches */

struct job {
    const launch_desc *L;
    std::atomic<uint64_t> next{0};
    uint64_t n_blocks;
};

static void run_blocks(job &j)
{
    executor &ex = ex_get();
    const dim3 g = j.L->grid;
    for (;;) {
        const uint64_t b = j.next.fetch_add(1, std::memory_order_relaxed);
        if (b >= j.n_blocks)
            break;
        const uint3 bi{(unsigned)(b % g.x), (unsigned)(b / g.x % g.y), (unsigned)(b / ((uint64_t)g.x * g.y))};
        run_block(ex, *j.L, bi);
    }
}

/* Helper threads for multi-block launches (the launching thread works too). */
struct pool {
    std::mutex mu;
    std::condition_variable go, idle;
    uint64_t gen = 0;
    job *j = NULL;
    int busy = 0;
    int n = 0;
};

static pool *workers(void)
{
    static pool *p = [] {
        pool *q = new pool();
        q->n = cfg().threads - 1;
        for (int i = 0; i < q->n; i++)
            std::thread([q] {
                uint64_t seen = 0;
                for (;;) {
                    job *j;
                    {
                        std::unique_lock<std::mutex> lock(q->mu);
                        q->go.wait(lock, [&] { return q->gen != seen; });
                        seen = q->gen;
                        j = q->j;
                    }
                    run_blocks(*j);
                    std::lock_guard<std::mutex> lock(q->mu);
                    if (--q->busy == 0)
                        q->idle.notify_all();
                }
            }).detach();
        return q;
    }();
    return p;
}

static std::atomic<unsigned long long> n_launches{0};

static cudaError_t execute(const launch_desc &L)
{
    const unsigned long long k = n_launches.fetch_add(1) + 1;
    if (cfg().fail_launch && k == cfg().fail_launch) {
        fprintf(stderr, "copse gpusim: launch %llu (%s) fails: COPSE_GPUSIM_FAIL_LAUNCH=%llu\n", k, L.name,
                cfg().fail_launch);
        set_sticky(cudaErrorLaunchFailure);
        return cudaErrorLaunchFailure;
    }
    job j;
    j.L = &L;
    j.n_blocks = (uint64_t)L.grid.x * L.grid.y * L.grid.z;
    pool *p = j.n_blocks > 1 ? workers() : NULL;
    if (p && p->n > 0) {
        {
            std::lock_guard<std::mutex> lock(p->mu);
            p->j = &j;
            p->busy = p->n;
            p->gen++;
        }
        p->go.notify_all();
        run_blocks(j);
        std::unique_lock<std::mutex> lock(p->mu);
        p->idle.wait(lock, [&] { return p->busy == 0; });
    } else {
        run_blocks(j);
    }
    return cudaSuccess;
}

cudaError_t launch(const char *name, const void *fn, dim3 grid, dim3 block, size_t shmem, cudaStream_t s,
                   std::function<void()> body)
{
    cudaError_t e = enter();
    if (e != cudaSuccess)
        return e;
    const uint64_t nt = (uint64_t)block.x * block.y * block.z;
    if (nt == 0 || nt > SIM_MAX_THREADS || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu) {
        fprintf(stderr, "copse gpusim: launch of %s: invalid configuration grid (%u,%u,%u) block (%u,%u,%u)\n", name,
                grid.x, grid.y, grid.z, block.x, block.y, block.z);
        return fail(cudaErrorInvalidConfiguration);
    }
    if (shmem > max_dyn_shmem(fn)) {
        fprintf(stderr, "copse gpusim: launch of %s: %zu bytes of dynamic shared memory, the limit is %zu%s\n", name,
                shmem, max_dyn_shmem(fn),
                shmem <= SIM_MAX_SHMEM_OPTIN ? " (raise it with cudaFuncSetAttribute)" : "");
        return fail(cudaErrorInvalidValue);
    }
    auto shared = std::make_shared<launch_desc>();
    auto fnbody = std::make_shared<std::function<void()>>(std::move(body));
    shared->name = name;
    shared->grid = grid;
    shared->block = block;
    shared->nthreads = (int)nt;
    shared->body = fnbody.get();
    return submit(s, [shared, fnbody]() { return execute(*shared); });
}

} // namespace copse_gpusim_rt
