/*
 * sim-vendor.h — runs the CUDA backend's sources on the CPU (internal): a
 * simulator of the CUDA runtime and of kernel execution, the third "vendor"
 * next to CUDA itself and HIP (backends/hip/hip-vendor.h).
 *
 * backends/cuda/gpu-common.cuh includes this instead of the CUDA headers
 * when COPSE_GPU_SIM is defined (backends/gpusim/meson.build compiles the
 * .cu files with the host C++ compiler, -x c++ -std=c++17 -ffp-contract=off).
 * The result is the backend "gpusim" (one device, "copse gpusim (CPU)"),
 * used only when asked for by name (--backend gpusim); it exists so that CI,
 * which has no GPU, runs the real kernel sources.
 *
 * Execution model (sim-runtime.cc):
 *   - Streams run their work in order, synchronously, when it is enqueued
 *     (a legal CUDA schedule); events take a host timestamp; a captured
 *     stream records launches, copies and memsets as closures (kernel
 *     arguments by value, as CUDA does) that a graph launch replays.
 *   - A launch runs every block; a block's threads are fibers (a small
 *     context switch, stacks reused across blocks) on one OS thread. A fiber
 *     runs until it reaches a barrier or returns: __syncthreads waits for the
 *     block's live threads (a returned thread counts as arrived); a warp
 *     shuffle / vote / __syncwarp waits for the live lanes of its own warp
 *     only. Blocks are spread over a few OS threads (COPSE_GPUSIM_THREADS,
 *     default min(2, cores)); __shared__ is `static thread_local`, so it is
 *     per OS thread, i.e. per running block. Atomics are real atomics.
 *   - Device memory is host heap memory, allocated at the exact size asked,
 *     so an AddressSanitizer build catches a kernel's out-of-bounds access;
 *     with ASan, the backend's rounding slack and cached (free) blocks are
 *     poisoned too (GPU_MEM_USED).
 *
 * What it checks: launch configurations (0 or more than 1024 threads, grid
 * limits, dynamic shared memory above 48 KiB without cudaFuncSetAttribute:
 * cudaErrorInvalidConfiguration / cudaErrorInvalidValue), copies against
 * the live allocations (cudaErrorInvalidValue), __syncthreads reached at
 * different places by the threads of a block (a kernel bug: the process
 * stops with a message naming the kernel and the lines), deadlocks (every
 * live thread of a block waits and no barrier can complete), shuffles whose
 * lanes disagree on the mask or whose source lane has exited (the value
 * read is poison: all bits set, NaN for floats). Memory limits and faults
 * for tests: COPSE_GPUSIM_MEM (bytes, default 8 GiB) is the device's size,
 * COPSE_GPUSIM_MEM_LIMIT makes allocations beyond it fail with
 * cudaErrorMemoryAllocation, COPSE_GPUSIM_FAIL_LAUNCH=N makes the N-th
 * launch fail with cudaErrorLaunchFailure, a sticky error.
 *
 * What it cannot check: timing and occupancy; the memory model (data races
 * between threads or blocks are not detected: fibers switch only at
 * barriers, so a missing __syncthreads before a read of shared memory can
 * pass here); warp-synchronous code that relies on lockstep execution
 * without __syncwarp / shuffles; register or shared memory limits of real
 * parts; the rounding of the GPU's transcendental functions (expf, sinf,
 * pow, ... are the host libm's; __fadd_rn, __fmul_rn, fmaf and the other
 * basic operations are exact IEEE single roundings, as on the GPU).
 * Dynamic shared memory (extern __shared__) is not supported yet.
 */
#ifndef COPSE_GPUSIM_VENDOR_H
#define COPSE_GPUSIM_VENDOR_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define COPSE_WARP 32
#define COPSE_GPU_NAME "gpusim"
#define COPSE_GPU_NS copse_gpusim
#define COPSE_GPU_REG_FN copse_backend_gpusim_reg

/* ---------------------------------------------------------------- qualifiers */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __constant__
/* per OS thread = per running block, see the top of this file */
#define __shared__ static thread_local

/* ---------------------------------------------------------------- vector types */
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct uint3 {
    unsigned x, y, z;
};

#define COPSE_SIM_VEC2(T, N, A)                                                                                   \
    struct __attribute__((may_alias, aligned(A))) N { T x, y; };                                                 \
    static inline N make_##N(T a, T b) { N v; v.x = a; v.y = b; return v; }
#define COPSE_SIM_VEC4(T, N, A)                                                                                   \
    struct __attribute__((may_alias, aligned(A))) N { T x, y, z, w; };                                           \
    static inline N make_##N(T a, T b, T c, T d) { N v; v.x = a; v.y = b; v.z = c; v.w = d; return v; }
COPSE_SIM_VEC2(float, float2, 8)
COPSE_SIM_VEC4(float, float4, 16)
COPSE_SIM_VEC2(int, int2, 8)
COPSE_SIM_VEC4(int, int4, 16)
COPSE_SIM_VEC2(unsigned, uint2, 8)
COPSE_SIM_VEC4(unsigned, uint4, 16)
COPSE_SIM_VEC4(signed char, char4, 4)
COPSE_SIM_VEC4(unsigned char, uchar4, 4)
#undef COPSE_SIM_VEC2
#undef COPSE_SIM_VEC4

/* ---------------------------------------------------------------- runtime types */
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInsufficientDriver = 35,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorNoKernelImageForDevice = 209,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalState = 401,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorAssert = 710,
    cudaErrorLaunchFailure = 719,
    cudaErrorNotSupported = 801,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureUnmatched = 903,
    cudaErrorStreamCaptureImplicit = 906,
    cudaErrorGraphExecUpdateFailure = 910,
    cudaErrorUnknown = 999,
};

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2,
};

enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};

#define cudaHostAllocDefault 0u
#define cudaHostAllocPortable 1u
#define cudaHostAllocMapped 2u
#define cudaStreamDefault 0u
#define cudaStreamNonBlocking 1u
#define cudaEventDefault 0u
#define cudaEventDisableTiming 2u

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    size_t sharedMemPerBlockOptin;
    int regsPerBlock;
    int warpSize;
    int maxThreadsPerBlock;
    int maxThreadsDim[3];
    int maxGridSize[3];
    int major, minor;
    int multiProcessorCount;
    int maxThreadsPerMultiProcessor;
    int clockRate;
    int memoryBusWidth;
};

struct cudaFuncAttributes {
    size_t sharedSizeBytes, constSizeBytes, localSizeBytes;
    int maxThreadsPerBlock, numRegs, ptxVersion, binaryVersion;
    int maxDynamicSharedSizeBytes;
};

namespace copse_gpusim_rt {
struct stream;
struct event;
struct graph;
struct graph_exec;
} // namespace copse_gpusim_rt
typedef copse_gpusim_rt::stream *cudaStream_t;
typedef copse_gpusim_rt::event *cudaEvent_t;
typedef copse_gpusim_rt::graph *cudaGraph_t;
typedef copse_gpusim_rt::graph_exec *cudaGraphExec_t;
typedef struct cudaGraphExecUpdateResultInfo {
    int result; /* 0: success, 1: error (topology changed) */
} cudaGraphExecUpdateResultInfo;

/* ---------------------------------------------------------------- runtime API (sim-runtime.cc) */
namespace copse_gpusim_rt {
cudaError_t GetDeviceCount(int *n);
cudaError_t GetDeviceProperties(cudaDeviceProp *p, int dev);
cudaError_t SetDevice(int dev);
cudaError_t GetDevice(int *dev);
cudaError_t DeviceSynchronize(void);
cudaError_t MemGetInfo(size_t *free_b, size_t *total_b);
cudaError_t Malloc(void **p, size_t n);
cudaError_t Free(void *p);
cudaError_t HostAlloc(void **p, size_t n, unsigned flags);
cudaError_t FreeHost(void *p);
cudaError_t Memcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind);
cudaError_t MemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t Memset(void *dst, int v, size_t n);
cudaError_t MemsetAsync(void *dst, int v, size_t n, cudaStream_t s);
cudaError_t StreamCreate(cudaStream_t *s);
cudaError_t StreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t StreamDestroy(cudaStream_t s);
cudaError_t StreamSynchronize(cudaStream_t s);
cudaError_t StreamQuery(cudaStream_t s);
cudaError_t StreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t EventCreate(cudaEvent_t *e);
cudaError_t EventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t EventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t EventSynchronize(cudaEvent_t e);
cudaError_t EventQuery(cudaEvent_t e);
cudaError_t EventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t EventDestroy(cudaEvent_t e);
cudaError_t StreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t StreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t GraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags = 0);
cudaError_t GraphLaunch(cudaGraphExec_t x, cudaStream_t s);
/* In place when g has as many nodes as x (the simulator's notion of "the
 * same topology"), else cudaErrorGraphExecUpdateFailure, not sticky. */
cudaError_t GraphExecUpdate(cudaGraphExec_t x, cudaGraph_t g, cudaGraphExecUpdateResultInfo *info);
cudaError_t GraphExecDestroy(cudaGraphExec_t x);
cudaError_t GraphDestroy(cudaGraph_t g);
cudaError_t FuncGetAttributes(cudaFuncAttributes *a, const void *fn);
cudaError_t FuncSetAttribute(const void *fn, cudaFuncAttribute attr, int value);
cudaError_t GetLastError(void);
cudaError_t PeekAtLastError(void);
const char *GetErrorString(cudaError_t e);
const char *GetErrorName(cudaError_t e);

/* A launch: body runs once per thread of every block. */
cudaError_t launch(const char *name, const void *fn, dim3 grid, dim3 block, size_t shmem, cudaStream_t s,
                   std::function<void()> body);
/* ASan: bytes [used, cap) of a device block are not to be touched (no-op
 * without ASan). */
void mem_used(void *p, size_t used, size_t cap);

template <typename F>
cudaError_t func_get_attributes(cudaFuncAttributes *a, F *fn)
{
    return FuncGetAttributes(a, (const void *)fn);
}
template <typename F>
cudaError_t func_set_attribute(F *fn, cudaFuncAttribute attr, int value)
{
    return FuncSetAttribute((const void *)fn, attr, value);
}
template <typename T>
cudaError_t malloc_t(T **p, size_t n)
{
    void *v = NULL;
    cudaError_t e = Malloc(&v, n);
    *p = (T *)v;
    return e;
}
template <typename T>
cudaError_t host_alloc_t(T **p, size_t n, unsigned flags = 0)
{
    void *v = NULL;
    cudaError_t e = HostAlloc(&v, n, flags);
    *p = (T *)v;
    return e;
}

/* GPU_LAUNCH's object: the call operator converts the arguments to the
 * kernel's parameter types and captures them by value. */
template <typename... P>
struct launcher {
    void (*fn)(P...);
    dim3 grid, block;
    size_t shmem;
    cudaStream_t stream;
    const char *name;
    template <typename... A>
    void operator()(A &&...a) const
    {
        static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
        std::tuple<typename std::decay<P>::type...> params(static_cast<typename std::decay<P>::type>(a)...);
        void (*f)(P...) = fn;
        (void)launch(name, (const void *)fn, grid, block, shmem, stream,
                     std::function<void()>([f, params]() { std::apply(f, params); }));
    }
};
template <typename... P>
static inline launcher<P...> make_launcher(dim3 grid, dim3 block, size_t shmem, cudaStream_t s, const char *name,
                                           void (*fn)(P...))
{
    return launcher<P...>{fn, grid, block, shmem, s, name};
}

/* ---------------------------------------------------------------- device side */

/* The running simulated thread (set by the scheduler at every switch). */
inline thread_local uint3 t_thread_idx, t_block_idx, t_block_dim, t_grid_dim;
inline thread_local int t_lane; /* linear thread index % 32 */

/* Barriers (sim-runtime.cc): the calling fiber waits; site names it. */
void sync_block(const char *file, int line);
/* Warp exchange: the lane's 16 bytes in, the source lane's out (poison when
 * that lane has exited). mask: the participating lanes. */
void warp_exchange(const char *file, int line, uint32_t mask, const void *in, size_t n, int src, void *out);
/* Ballot over the warp's participating lanes. */
uint32_t warp_ballot(const char *file, int line, uint32_t mask, int pred);
int sync_block_count(const char *file, int line, int pred);

/* A call site of a warp or block primitive (named in error reports). */
struct site {
    const char *file;
    int line;

    template <typename T>
    T xchg(uint32_t mask, T v, int s) const
    {
        static_assert(sizeof(T) <= 16 && std::is_trivially_copyable<T>::value, "shuffle of an unsupported type");
        T out;
        warp_exchange(file, line, mask, &v, sizeof v, s, &out);
        return out;
    }
    template <typename T>
    T shfl(uint32_t mask, T v, int src, int width = 32) const
    {
        const int w = width > 0 && width <= 32 ? width : 32;
        return xchg(mask, v, (t_lane & ~(w - 1)) + (src & (w - 1)));
    }
    template <typename T>
    T shfl_xor(uint32_t mask, T v, int lane_mask, int width = 32) const
    {
        const int w = width > 0 && width <= 32 ? width : 32;
        const int s = t_lane ^ lane_mask;
        return xchg(mask, v, s >= (t_lane & ~(w - 1)) + w ? t_lane : s); /* a later group: own value */
    }
    template <typename T>
    T shfl_down(uint32_t mask, T v, unsigned d, int width = 32) const
    {
        const int w = width > 0 && width <= 32 ? width : 32;
        const int s = t_lane + (int)d;
        return xchg(mask, v, s >= (t_lane & ~(w - 1)) + w ? t_lane : s);
    }
    template <typename T>
    T shfl_up(uint32_t mask, T v, unsigned d, int width = 32) const
    {
        const int w = width > 0 && width <= 32 ? width : 32;
        const int s = t_lane - (int)d;
        return xchg(mask, v, s < (t_lane & ~(w - 1)) ? t_lane : s);
    }
    void syncwarp(uint32_t mask = 0xffffffffu) const { (void)warp_ballot(file, line, mask, 0); }
};

/* ---------------------------------------------------------------- atomics */
template <typename T>
static inline T atomic_add(T *p, T v)
{
    if constexpr (std::is_floating_point<T>::value) {
        typedef typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type U;
        U old = __atomic_load_n((U *)(void *)p, __ATOMIC_RELAXED), nw;
        do {
            T f;
            memcpy(&f, &old, sizeof f);
            f = f + v;
            memcpy(&nw, &f, sizeof nw);
        } while (!__atomic_compare_exchange_n((U *)(void *)p, &old, nw, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
        T r;
        memcpy(&r, &old, sizeof r);
        return r;
    } else {
        return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
    }
}
template <typename T>
static inline T atomic_max(T *p, T v)
{
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <typename T>
static inline T atomic_min(T *p, T v)
{
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <typename T>
static inline T atomic_cas(T *p, T cmp, T v)
{
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return cmp; /* the old value either way */
}
template <typename T>
static inline T atomic_exch(T *p, T v)
{
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
} // namespace copse_gpusim_rt

#define threadIdx (::copse_gpusim_rt::t_thread_idx)
#define blockIdx (::copse_gpusim_rt::t_block_idx)
#define blockDim (::copse_gpusim_rt::t_block_dim)
#define gridDim (::copse_gpusim_rt::t_grid_dim)
static constexpr int warpSize = 32;

#define GPU_LAUNCH(grid, block, shmem, stream, ...)                                                               \
    ::copse_gpusim_rt::make_launcher((grid), (block), (shmem), (stream), #__VA_ARGS__, __VA_ARGS__)
#define GPU_MEM_USED(p, used, cap) ::copse_gpusim_rt::mem_used((p), (used), (cap))

#define __syncthreads() ::copse_gpusim_rt::sync_block(__FILE__, __LINE__)
#define __syncthreads_count(p) ::copse_gpusim_rt::sync_block_count(__FILE__, __LINE__, (p))
#define __syncthreads_or(p) (::copse_gpusim_rt::sync_block_count(__FILE__, __LINE__, (p)) != 0)
#define __syncthreads_and(p) (::copse_gpusim_rt::sync_block_count(__FILE__, __LINE__, !(p)) == 0)
#define __syncwarp(...) ::copse_gpusim_rt::site{__FILE__, __LINE__}.syncwarp(__VA_ARGS__)
#define __ballot_sync(mask, p) ::copse_gpusim_rt::warp_ballot(__FILE__, __LINE__, (mask), (p))
#define __any_sync(mask, p) (::copse_gpusim_rt::warp_ballot(__FILE__, __LINE__, (mask), (p)) != 0)
#define __all_sync(mask, p) (::copse_gpusim_rt::warp_ballot(__FILE__, __LINE__, (mask), !(p)) == 0)
#define __activemask() 0xffffffffu
/* (mask, var, lane [, width]) */
#define __shfl_sync(...) ::copse_gpusim_rt::site{__FILE__, __LINE__}.shfl(__VA_ARGS__)
#define __shfl_xor_sync(...) ::copse_gpusim_rt::site{__FILE__, __LINE__}.shfl_xor(__VA_ARGS__)
#define __shfl_down_sync(...) ::copse_gpusim_rt::site{__FILE__, __LINE__}.shfl_down(__VA_ARGS__)
#define __shfl_up_sync(...) ::copse_gpusim_rt::site{__FILE__, __LINE__}.shfl_up(__VA_ARGS__)
#define gpu_shfl_xor(v, o) __shfl_xor_sync(0xffffffffu, (v), (o), COPSE_WARP)
#define gpu_shfl(v, src) __shfl_sync(0xffffffffu, (v), (src), COPSE_WARP)

#define atomicAdd(p, v) ::copse_gpusim_rt::atomic_add((p), (v))
#define atomicMax(p, v) ::copse_gpusim_rt::atomic_max((p), (v))
#define atomicMin(p, v) ::copse_gpusim_rt::atomic_min((p), (v))
#define atomicCAS(p, c, v) ::copse_gpusim_rt::atomic_cas((p), (c), (v))
#define atomicExch(p, v) ::copse_gpusim_rt::atomic_exch((p), (v))
#define __threadfence() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define __threadfence_block() __atomic_signal_fence(__ATOMIC_SEQ_CST)

/* ---------------------------------------------------------------- float intrinsics */
/* Every operation is one IEEE single rounding (built with -ffp-contract=off,
 * so nothing is fused behind the code's back; fmaf is the real fused one). */
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
/* the fast-math intrinsics (glibc declares these names itself: macros) */
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __powf(a, b) powf((a), (b))
static inline float __saturatef(float x) { return x != x ? 0.0f : x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline int __float_as_int(float f) { int u; memcpy(&u, &f, 4); return u; }
static inline double __longlong_as_double(long long u) { double f; memcpy(&f, &u, 8); return f; }
static inline long long __double_as_longlong(double f) { long long u; memcpy(&u, &f, 8); return u; }
static inline int __float2int_rn(float x) { return (int)rintf(x); }
static inline int __float2int_rz(float x) { return (int)x; }

/* ---------------------------------------------------------------- fp16 */
struct __half {
    unsigned short x;
};
struct __attribute__((aligned(4))) __half2 {
    __half x, y;
};
static inline __half __ushort_as_half(unsigned short u) { __half h; h.x = u; return h; }
static inline unsigned short __half_as_ushort(__half h) { return h.x; }
static inline float __half2float(__half h)
{
    const uint32_t s = (uint32_t)(h.x & 0x8000u) << 16, e = (h.x >> 10) & 0x1f, m = h.x & 0x3ffu;
    uint32_t u;
    if (e == 0x1f) {
        u = s | 0x7f800000u | (m << 13); /* inf, NaN (payload kept) */
    } else if (e != 0) {
        u = s | ((e + 112) << 23) | (m << 13);
    } else if (m == 0) {
        u = s;
    } else { /* subnormal: exact as m * 2^-24 */
        const float f = (float)m * 0x1p-24f;
        memcpy(&u, &f, 4);
        u |= s;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* round to nearest even, overflow to infinity, NaN stays NaN (quiet) */
static inline __half __float2half_rn(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint16_t s = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7fffffffu;
    __half h;
    if (a > 0x7f800000u) {
        h.x = (uint16_t)(s | 0x7e00u | ((a >> 13) & 0x3ffu));
    } else if (a >= 0x477ff000u) { /* >= 65520: rounds to infinity */
        h.x = (uint16_t)(s | 0x7c00u);
    } else if (a < 0x38800000u) { /* below 2^-14: subnormal or zero */
        const float af = __uint_as_float(a);
        const float q = rintf(af * 0x1p24f); /* exact scaling; rint rounds to nearest even */
        h.x = (uint16_t)(s | (uint16_t)q);
    } else {
        uint32_t r = a + 0x0fffu + ((a >> 13) & 1u); /* round to nearest even at bit 13 */
        h.x = (uint16_t)(s | ((r - 0x38000000u) >> 13));
    }
    return h;
}
static inline __half __float2half(float f) { return __float2half_rn(f); }
static inline float __low2float(__half2 h) { return __half2float(h.x); }
static inline float __high2float(__half2 h) { return __half2float(h.y); }

/* ---------------------------------------------------------------- integer intrinsics */
template <typename T>
static inline T __ldg(const T *p) { return *p; }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
/* CUDA's integer min/max device functions */
template <typename T> static inline T min(T a, T b) { return b < a ? b : a; }
template <typename T> static inline T max(T a, T b) { return a < b ? b : a; }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline unsigned __brev(unsigned x)
{
    unsigned r = 0;
    for (int i = 0; i < 32; i++)
        r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
static inline int __dp4a(int a, int b, int c)
{
    for (int i = 0; i < 4; i++)
        c += (int)(signed char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i));
    return c;
}
static inline unsigned __dp4a(unsigned a, unsigned b, unsigned c)
{
    for (int i = 0; i < 4; i++)
        c += ((a >> (8 * i)) & 0xffu) * ((b >> (8 * i)) & 0xffu);
    return c;
}
/* byte i of the result is byte (s >> 4i) & 7 of the 8-byte value {y, x} */
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s)
{
    const uint64_t v = (uint64_t)y << 32 | x;
    unsigned r = 0;
    for (int i = 0; i < 4; i++)
        r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
    return r;
}
/* per-byte a - b, modulo 256 */
static inline unsigned __vsub4(unsigned a, unsigned b)
{
    unsigned r = 0;
    for (int i = 0; i < 4; i++)
        r |= (((a >> (8 * i)) - (b >> (8 * i))) & 0xffu) << (8 * i);
    return r;
}
static inline unsigned __vadd4(unsigned a, unsigned b)
{
    unsigned r = 0;
    for (int i = 0; i < 4; i++)
        r |= (((a >> (8 * i)) + (b >> (8 * i))) & 0xffu) << (8 * i);
    return r;
}
static inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }
static inline int __mulhi(int a, int b) { return (int)(((int64_t)a * b) >> 32); }

/* ---------------------------------------------------------------- runtime names */
#define cudaDeviceSynchronize ::copse_gpusim_rt::DeviceSynchronize
#define cudaEventCreate ::copse_gpusim_rt::EventCreate
#define cudaEventCreateWithFlags ::copse_gpusim_rt::EventCreateWithFlags
#define cudaEventDestroy ::copse_gpusim_rt::EventDestroy
#define cudaEventElapsedTime ::copse_gpusim_rt::EventElapsedTime
#define cudaEventQuery ::copse_gpusim_rt::EventQuery
#define cudaEventRecord ::copse_gpusim_rt::EventRecord
#define cudaEventSynchronize ::copse_gpusim_rt::EventSynchronize
#define cudaFree ::copse_gpusim_rt::Free
#define cudaFreeHost ::copse_gpusim_rt::FreeHost
#define cudaFuncGetAttributes ::copse_gpusim_rt::func_get_attributes
#define cudaFuncSetAttribute ::copse_gpusim_rt::func_set_attribute
#define cudaGetDevice ::copse_gpusim_rt::GetDevice
#define cudaGetDeviceCount ::copse_gpusim_rt::GetDeviceCount
#define cudaGetDeviceProperties ::copse_gpusim_rt::GetDeviceProperties
#define cudaGetErrorName ::copse_gpusim_rt::GetErrorName
#define cudaGetErrorString ::copse_gpusim_rt::GetErrorString
#define cudaGetLastError ::copse_gpusim_rt::GetLastError
#define cudaGraphDestroy ::copse_gpusim_rt::GraphDestroy
#define cudaGraphExecDestroy ::copse_gpusim_rt::GraphExecDestroy
#define cudaGraphInstantiate ::copse_gpusim_rt::GraphInstantiate
#define cudaGraphLaunch ::copse_gpusim_rt::GraphLaunch
#define cudaGraphExecUpdate ::copse_gpusim_rt::GraphExecUpdate
#define cudaHostAlloc ::copse_gpusim_rt::host_alloc_t
#define cudaMallocHost ::copse_gpusim_rt::host_alloc_t
#define cudaMalloc ::copse_gpusim_rt::malloc_t
#define cudaMemGetInfo ::copse_gpusim_rt::MemGetInfo
#define cudaMemcpy ::copse_gpusim_rt::Memcpy
#define cudaMemcpyAsync ::copse_gpusim_rt::MemcpyAsync
#define cudaMemset ::copse_gpusim_rt::Memset
#define cudaMemsetAsync ::copse_gpusim_rt::MemsetAsync
#define cudaPeekAtLastError ::copse_gpusim_rt::PeekAtLastError
#define cudaSetDevice ::copse_gpusim_rt::SetDevice
#define cudaStreamBeginCapture ::copse_gpusim_rt::StreamBeginCapture
#define cudaStreamCreate ::copse_gpusim_rt::StreamCreate
#define cudaStreamCreateWithFlags ::copse_gpusim_rt::StreamCreateWithFlags
#define cudaStreamDestroy ::copse_gpusim_rt::StreamDestroy
#define cudaStreamEndCapture ::copse_gpusim_rt::StreamEndCapture
#define cudaStreamQuery ::copse_gpusim_rt::StreamQuery
#define cudaStreamSynchronize ::copse_gpusim_rt::StreamSynchronize
#define cudaStreamWaitEvent ::copse_gpusim_rt::StreamWaitEvent

#endif /* COPSE_GPUSIM_VENDOR_H */
