/*
 * gpu-common.cuh — shared declarations of the CUDA backend (internal), also
 * compiled as the HIP backend.
 *
 * The same .cu sources build two backends: with nvcc as "cuda" (sm_80,
 * sm_90) and, with COPSE_GPU_HIP defined, with hipcc as "hip" through
 * backends/hip/hip-vendor.h, which maps the cuda* names. Everything lives in
 * namespace COPSE_GPU_NS (copse_cuda / copse_hip) so both can be linked into
 * one library; the one exported symbol is COPSE_GPU_REG_FN.
 *
 * Warp size: every warp reduction uses COPSE_WARP (32 on CUDA, 64 on the
 * wave64 AMD targets) through gpu_shfl_xor / gpu_shfl; no kernel hard-codes
 * a lane count or a 32-bit lane mask outside this header.
 *
 * Errors: every runtime call is checked. gpu_check() maps a cudaError_t to
 * a copse_status (out of memory -> COPSE_ENOMEM, no device / no driver /
 * no kernel image -> COPSE_ENODEV, anything else -> COPSE_EIO) and prints
 * one line naming the backend, the op and the call, e.g.
 *   copse cuda: matmul: kernel launch failed: too many resources requested
 * A sticky error (illegal address, failed kernel) leaves the CUDA context
 * unusable: the device is marked broken and every later call on it returns
 * COPSE_EIO with a message saying so, instead of running on corrupt state.
 *
 * Threading: as backend-impl.h says; the device's allocator cache and
 * staging buffer are guarded by a mutex, a queue is used by one thread at a
 * time.
 */
#ifndef COPSE_GPU_COMMON_CUH
#define COPSE_GPU_COMMON_CUH

#if defined(COPSE_GPU_HIP)
#include "../hip/hip-vendor.h"
#elif defined(COPSE_GPU_SIM)
#include "../gpusim/sim-vendor.h"
#else
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define COPSE_WARP 32
#define COPSE_GPU_NAME "cuda"
#define COPSE_GPU_NS copse_cuda
#define COPSE_GPU_REG_FN copse_backend_cuda_reg
#define gpu_shfl_xor(v, o) __shfl_xor_sync(0xffffffffu, (v), (o), COPSE_WARP)
#define gpu_shfl(v, src) __shfl_sync(0xffffffffu, (v), (src), COPSE_WARP)
#endif

/* Kernel launch: GPU_LAUNCH(grid, block, shared_bytes, stream, kernel)(args).
 * The one spelling of a launch in the backend, so that a vendor header can
 * give it another meaning (the kernel name comes last: a template's commas
 * stay inside __VA_ARGS__). */
/* Device code (kernels, __device__ helpers) is compiled by nvcc, hipcc, or
 * the host compiler with the CPU simulator's vendor header. */
#if defined(__CUDACC__) || defined(__HIPCC__) || defined(COPSE_GPU_SIM)
#define COPSE_GPU_DEVICE_CODE 1
#endif

#ifndef GPU_LAUNCH
#define GPU_LAUNCH(grid, block, shmem, stream, ...) __VA_ARGS__<<<(grid), (block), (shmem), (stream)>>>
#endif

/* GPU_MEM_USED(p, used, cap): of the device block p (cap bytes), only the
 * first used bytes are in use. The simulator poisons the rest for
 * AddressSanitizer; nothing on a GPU. */
#ifndef GPU_MEM_USED
#define GPU_MEM_USED(p, used, cap) ((void)0)
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <mutex>
#include <vector>

extern "C" {
#include "../backend-impl.h"
#include "quant.h"
}

extern "C" copse_backend_reg *COPSE_GPU_REG_FN(void);

namespace COPSE_GPU_NS {

/* ---------------------------------------------------------------- device, buffers */

struct cached_block {
    void *ptr;
    size_t size;
};

struct gpu_device {
    copse_backend_dev dev; /* dev.ctx points here */
    int id;
    char name[128];
    char arch[64]; /* "sm_90", "gfx90a:sramecc+:xnack-" */
    int cc_major, cc_minor, sm_count, warp_size;
    size_t total_mem;
    bool broken; /* a sticky error happened; the context is unusable */

    std::mutex mu;                     /* guards everything below */
    std::vector<cached_block> cache;   /* freed device blocks kept for reuse */
    size_t cache_bytes, cache_limit;
    unsigned char *staging;            /* pinned host memory for upload/download */
    size_t staging_size;
};

struct gpu_buffer {
    copse_backend_buffer base; /* base.ctx points here */
    void *dptr;
    size_t cap; /* bytes actually allocated (rounded) */
};

/* ---------------------------------------------------------------- queue */

struct gpu_queue {
    copse_backend_queue base; /* base.ctx points here */
    gpu_device *gd;
    cudaStream_t stream;
    /* Per-op metadata (ids, positions, block tables, masks): a bump arena of
     * pinned host memory mirrored in device memory. Pushed bytes are copied
     * asynchronously on the queue's stream, so the host side is reused only
     * after the stream has drained (meta_reset at synchronize, or when full). */
    unsigned char *meta_host, *meta_dev;
    size_t meta_cap, meta_off;
    /* last push, for reuse when an op sends the same array again (rope's
     * positions for every layer, the attention tables for every layer) */
    size_t last_off[4], last_n[4];
    /* argmax results: device and pinned host rows */
    int32_t *am_dev, *am_host;
    size_t am_cap;
    /* forward steps as graphs (graph.cu) */
    bool graphs;            /* enabled for this queue */
    bool capturing;         /* the stream is capturing the current step */
    cudaGraphExec_t gexec;  /* the executable graph steps update and launch */
    int fail_streak, pause; /* updates in a row that needed a new instantiation; eager steps left */
    struct {
        unsigned long long launched, updated, instantiated, broken, eager;
    } gstat;
    struct gpu_verify_scratch *verify; /* the verify op's memory (verify.cu), NULL until used */
    /* device scratch (matmul's quantized activations), from the device's
     * allocator; grown by gpu_scratch, freed at destroy */
    void *scratch;
    size_t scratch_cap;
};

/* What kind of metadata a push holds (slots of last_off / last_n). */
enum meta_kind { META_IDS = 0, META_POS, META_SLOTS, META_ATTN, META_ANY };

/* ---------------------------------------------------------------- helpers (gpu-backend.cu) */

/* A status for err, with one message line naming op and call (none for
 * cudaSuccess). Marks the device broken after a sticky error. */
copse_status gpu_check(gpu_device *gd, cudaError_t err, const char *op, const char *call);
/* After a kernel launch: the launch error, if any. */
copse_status gpu_launch_check(gpu_queue *q, const char *op);
/* Make the queue's device current; COPSE_EIO if it is broken. */
copse_status gpu_enter(gpu_queue *q, const char *op);
/* Copy n host bytes to the device through the queue's metadata arena; *dev
 * receives the device address (256-byte aligned). kind != META_ANY reuses
 * the previous push of that kind when the bytes are the same. */
copse_status gpu_meta_push(gpu_queue *q, meta_kind kind, const void *src, size_t n, const void **dev, const char *op);

/* Forward steps as graphs (graph.cu): the queue ops step_begin/step_end,
 * setup and teardown, and gpu_capture_break, which every call that waits
 * for the stream makes first (it launches what was captured so far and
 * lets the rest of the step run eagerly). */
copse_status gpu_step_begin(copse_backend_queue *q, int32_t n_tokens);
copse_status gpu_step_end(copse_backend_queue *q, bool ok);
copse_status gpu_capture_break(gpu_queue *q, const char *op);
void gpu_graph_init(gpu_queue *q);
void gpu_graph_destroy(gpu_queue *q);
/* At least n bytes of the queue's device scratch (256-byte aligned) in
 * *out. Growing it waits for the queue's stream first (work already queued
 * may still read the old block); its contents do not survive a growth.
 * COPSE_ENOMEM (with a message naming op) if the device has no room. */
copse_status gpu_scratch(gpu_queue *q, size_t n, void **out, const char *op);

/* A device array and its pinned host mirror (results that leave the
 * device) with room for at least n elements of elem bytes: when *cap is
 * smaller, waits for the queue's stream (it may still use the old pair),
 * frees it and allocates n. COPSE_ENOMEM / EIO with a message naming op. */
copse_status gpu_mirror_reserve(gpu_queue *q, size_t elem, size_t n, void **dev, void **host, size_t *cap,
                                const char *op);

/* Device address of a tensor's first row. */
static inline unsigned char *tdev(const copse_tensor *t)
{
    return (unsigned char *)((gpu_buffer *)t->buf->ctx)->dptr + t->offset;
}

/* ---------------------------------------------------------------- ops (one file each) */

copse_status op_embed(copse_backend_queue *q, const copse_tensor *table, const int32_t *ids, int32_t n,
                      const copse_tensor *out);
copse_status op_rms_norm(copse_backend_queue *q, const copse_tensor *x, const copse_tensor *w, float eps,
                         const copse_tensor *out);
copse_status op_rope(copse_backend_queue *q, const copse_tensor *x, const int32_t *pos, const copse_rope_params *p);
copse_status op_add(copse_backend_queue *q, const copse_tensor *a, const copse_tensor *b, const copse_tensor *out);
copse_status op_swiglu(copse_backend_queue *q, const copse_tensor *gate, const copse_tensor *up,
                       const copse_tensor *out);
copse_status op_matmul(copse_backend_queue *q, const copse_tensor *w, const copse_tensor *x, const copse_tensor *out);
copse_status op_kv_store(copse_backend_queue *q, const copse_tensor *k, const copse_tensor *v, const int32_t *slots,
                         int32_t n, const copse_tensor *k_pool, const copse_tensor *v_pool);
copse_status op_attention(copse_backend_queue *q, const copse_tensor *qry, const copse_tensor *k_pool,
                          const copse_tensor *v_pool, const copse_attn_batch *b, const copse_tensor *out);
copse_status op_kv_commit(copse_backend_queue *q, const copse_tensor *const *pools, int32_t n_pools,
                          const copse_slot_move *moves, int32_t n_moves);
copse_status op_argmax(copse_backend_queue *q, const copse_tensor *logits, int32_t *argmax);
copse_status op_softmax(copse_backend_queue *q, const copse_tensor *logits, float inv_temp, const copse_tensor *out);
copse_status op_verify(copse_backend_queue *q, const copse_tensor *logits, const copse_verify_batch *b,
                       copse_verify_path *out);
/* Free the verify op's memory of a queue (queue_destroy). */
void verify_scratch_free(gpu_queue *q);

/* Measured device-to-device copy bandwidth in bytes/s (2n / time for n
 * bytes copied), 0 if it could not be measured (bandwidth.cu). */
double gpu_copy_bandwidth(copse_backend_dev *dev);

/* A kernel whose attributes tell whether the binary holds code for the
 * device (ops.cu). */
void *probe_kernel(void);

/* ---------------------------------------------------------------- device code helpers */

#if COPSE_GPU_DEVICE_CODE
static __device__ __forceinline__ float warp_sum(float v)
{
    for (int o = COPSE_WARP / 2; o > 0; o /= 2)
        v += gpu_shfl_xor(v, o);
    return v;
}

static __device__ __forceinline__ double warp_sum_d(double v)
{
    for (int o = COPSE_WARP / 2; o > 0; o /= 2)
        v += gpu_shfl_xor(v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v)
{
    for (int o = COPSE_WARP / 2; o > 0; o /= 2)
        v = fmaxf(v, gpu_shfl_xor(v, o));
    return v;
}

/* Argmax over the warp of (value, index) pairs: the larger value wins,
 * then the lower index; index -1 (nothing seen) loses. */
template <typename I>
static __device__ __forceinline__ void warp_argmax(float &bv, I &bi)
{
    for (int o = COPSE_WARP / 2; o > 0; o /= 2) {
        const float ov = gpu_shfl_xor(bv, o);
        const I oi = gpu_shfl_xor(bi, o);
        if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
            bv = ov;
            bi = oi;
        }
    }
}

/* Block reductions: every thread's v combined by OP (the xor butterfly of
 * the warp helpers above, then the warps' results in warp order), the
 * result in every thread. blockDim.x a multiple of COPSE_WARP, at most
 * COPSE_WARP warps; sh holds one T per warp. */
struct red_add {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct red_max {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename T, typename OP>
static __device__ __forceinline__ T block_reduce(T v, T *sh, T identity, OP op)
{
    const int lane = threadIdx.x % COPSE_WARP, w = threadIdx.x / COPSE_WARP, nw = blockDim.x / COPSE_WARP;
    for (int o = COPSE_WARP / 2; o > 0; o /= 2)
        v = op(v, gpu_shfl_xor(v, o));
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : identity;
    for (int o = COPSE_WARP / 2; o > 0; o /= 2)
        v = op(v, gpu_shfl_xor(v, o));
    __syncthreads();
    return v;
}

static __device__ __forceinline__ float block_sum(float v, float *sh)
{
    return block_reduce(v, sh, 0.0f, red_add());
}

static __device__ __forceinline__ double block_sum_d(double v, double *sh)
{
    return block_reduce(v, sh, 0.0, red_add());
}

static __device__ __forceinline__ int block_sum_i(int v, int *sh)
{
    return block_reduce(v, sh, 0, red_add());
}

static __device__ __forceinline__ float block_max(float v, float *sh)
{
    return block_reduce(v, sh, -INFINITY, red_max());
}

/* Little-endian fields at any alignment. */
static __device__ __forceinline__ uint32_t ld_u16(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static __device__ __forceinline__ uint32_t ld_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static __device__ __forceinline__ float ld_fp16(const unsigned char *p)
{
    return __half2float(__ushort_as_half((unsigned short)ld_u16(p)));
}

static __device__ __forceinline__ float bf16_to_f32(uint32_t h)
{
    return __uint_as_float(h << 16);
}
#endif

} // namespace COPSE_GPU_NS

#endif /* COPSE_GPU_COMMON_CUH */
