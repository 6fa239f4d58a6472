/*
 * gpu-backend.cu — the CUDA backend's registration, devices, buffers and
 * queues (also built as the HIP backend, see gpu-common.cuh).
 *
 * Devices: found once, on first use, with cudaGetDeviceCount. Without a GPU
 * or a driver that call fails; the backend then has no devices (the count
 * starts at 0 and a failure means "none"). A device whose warp size differs
 * from COPSE_WARP is left out with a message.
 *
 * Buffers: device memory from a caching allocator. Sizes are rounded (512
 * bytes, 2 MiB above 1 MiB); freed blocks go to a per-device cache (up to
 * 1/8 of the device memory) and are reused for requests up to 1/8 smaller;
 * when cudaMalloc runs out of memory the cache is released and the call is
 * retried once. Freeing a buffer waits for the device (frees are rare: model
 * load and unload), so no queue can still be using a reused block.
 *
 * Upload and download go through a pinned staging buffer of the device
 * (STAGING_BYTES, allocated on first use), in chunks on the legacy default
 * stream, which orders them after and before the work of every queue (the
 * queues' streams are blocking streams); they return when the copy is done.
 *
 * Queues: one stream each (one queue per pipeline stage); the ops enqueue
 * kernels and return without waiting, except argmax (its result is a host
 * array). synchronize waits for the stream.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu-common.cuh"

namespace COPSE_GPU_NS {

#define STAGING_BYTES ((size_t)32 << 20)
#define META_INITIAL ((size_t)1 << 20)
#define MAX_DEVICES 16

/* ---------------------------------------------------------------- errors */

static bool is_sticky(cudaError_t e)
{
    return e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure || e == cudaErrorAssert;
}

copse_status gpu_check(gpu_device *gd, cudaError_t err, const char *op, const char *call)
{
    if (err == cudaSuccess)
        return COPSE_OK;
    (void)cudaGetLastError(); /* clear a non-sticky error so the next call starts clean */
    const bool sticky = is_sticky(err);
    if (sticky && gd)
        gd->broken = true;
    fprintf(stderr, "copse %s: %s: %s failed: %s%s\n", COPSE_GPU_NAME, op, call, cudaGetErrorString(err),
            sticky ? " (the device context is lost; restart the process to use this GPU again)" : "");
    if (err == cudaErrorMemoryAllocation)
        return COPSE_ENOMEM;
    if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver || err == cudaErrorInvalidDevice ||
        err == cudaErrorNoKernelImageForDevice)
        return COPSE_ENODEV;
    return COPSE_EIO;
}

copse_status gpu_launch_check(gpu_queue *q, const char *op)
{
    return gpu_check(q->gd, cudaGetLastError(), op, "kernel launch");
}

static copse_status enter_dev(gpu_device *gd, const char *op)
{
    if (gd->broken) {
        fprintf(stderr, "copse %s: %s: device %d had a fatal error earlier; its context is lost\n", COPSE_GPU_NAME,
                op, gd->id);
        return COPSE_EIO;
    }
    return gpu_check(gd, cudaSetDevice(gd->id), op, "cudaSetDevice");
}

copse_status gpu_enter(gpu_queue *q, const char *op)
{
    return enter_dev(q->gd, op);
}

/* ---------------------------------------------------------------- caching allocator */

static size_t round_size(size_t n)
{
    const size_t g = n >= ((size_t)1 << 20) ? ((size_t)2 << 20) : 512;
    if (n == 0)
        return g;
    return n > SIZE_MAX - g ? 0 : (n + g - 1) / g * g;
}

static void cache_release_all(gpu_device *gd)
{
    for (const cached_block &b : gd->cache)
        (void)cudaFree(b.ptr);
    gd->cache.clear();
    gd->cache_bytes = 0;
}

static copse_status dev_malloc(gpu_device *gd, size_t size, void **out, size_t *cap)
{
    const size_t want = round_size(size);
    if (want == 0) {
        fprintf(stderr, "copse %s: buffer_alloc: %zu bytes is too large\n", COPSE_GPU_NAME, size);
        return COPSE_ENOMEM;
    }
    std::lock_guard<std::mutex> lock(gd->mu);
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < gd->cache.size(); i++) {
        const size_t s = gd->cache[i].size;
        if (s >= want && s - want <= want / 8 && (best == SIZE_MAX || s < gd->cache[best].size))
            best = i;
    }
    if (best != SIZE_MAX) {
        *out = gd->cache[best].ptr;
        *cap = gd->cache[best].size;
        gd->cache_bytes -= gd->cache[best].size;
        gd->cache.erase(gd->cache.begin() + (ptrdiff_t)best);
        return COPSE_OK;
    }
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, want);
    if (e == cudaErrorMemoryAllocation && !gd->cache.empty()) {
        (void)cudaGetLastError();
        cache_release_all(gd);
        e = cudaMalloc(&p, want);
    }
    if (e != cudaSuccess) {
        char call[64];
        snprintf(call, sizeof call, "cudaMalloc of %zu bytes", want);
        return gpu_check(gd, e, "buffer_alloc", call);
    }
    *out = p;
    *cap = want;
    return COPSE_OK;
}

static void dev_free(gpu_device *gd, void *p, size_t cap)
{
    std::lock_guard<std::mutex> lock(gd->mu);
    if (!gd->broken && gd->cache_bytes + cap <= gd->cache_limit) {
        GPU_MEM_USED(p, 0, cap); /* a cached block is not to be touched until reused */
        gd->cache.push_back(cached_block{p, cap});
        gd->cache_bytes += cap;
        return;
    }
    (void)cudaFree(p);
}

/* ---------------------------------------------------------------- buffers */

static void buffer_free(copse_backend_buffer *buf)
{
    if (!buf)
        return;
    gpu_buffer *b = (gpu_buffer *)buf->ctx;
    gpu_device *gd = (gpu_device *)buf->dev->ctx;
    if (cudaSetDevice(gd->id) == cudaSuccess)
        (void)cudaDeviceSynchronize(); /* no queue may still use the block we hand back */
    (void)cudaGetLastError();
    dev_free(gd, b->dptr, b->cap);
    free(b);
}

/* Copy n bytes host <-> device through the pinned staging buffer, in
 * chunks; the legacy default stream orders the copy with every queue. */
static copse_status transfer(copse_backend_buffer *buf, size_t offset, void *host, size_t n, bool up)
{
    const char *op = up ? "upload" : "download";
    if (offset > buf->size || n > buf->size - offset)
        return COPSE_ERANGE;
    if (n == 0)
        return COPSE_OK;
    gpu_device *gd = (gpu_device *)buf->dev->ctx;
    copse_status st = enter_dev(gd, op);
    if (st != COPSE_OK)
        return st;
    unsigned char *dptr = (unsigned char *)((gpu_buffer *)buf->ctx)->dptr + offset;
    unsigned char *hptr = (unsigned char *)host;
    std::lock_guard<std::mutex> lock(gd->mu);
    if (!gd->staging) {
        void *p = NULL;
        cudaError_t e = cudaHostAlloc(&p, STAGING_BYTES, cudaHostAllocDefault);
        if (e != cudaSuccess) {
            /* no pinned memory: plain (pageable, synchronous) copies still work */
            (void)cudaGetLastError();
            e = up ? cudaMemcpy(dptr, hptr, n, cudaMemcpyHostToDevice)
                   : cudaMemcpy(hptr, dptr, n, cudaMemcpyDeviceToHost);
            return gpu_check(gd, e, op, "cudaMemcpy");
        }
        gd->staging = (unsigned char *)p;
        gd->staging_size = STAGING_BYTES;
    }
    /* two halves: the host copy into one overlaps the DMA of the other */
    const size_t half = gd->staging_size / 2;
    cudaError_t e = cudaSuccess;
    if (up) {
        for (size_t done = 0, i = 0; done < n && e == cudaSuccess; i++) {
            unsigned char *stage = gd->staging + (i % 2) * half;
            const size_t c = n - done < half ? n - done : half;
            if (i >= 2)
                e = cudaStreamSynchronize(0); /* this half's previous DMA has finished */
            if (e != cudaSuccess)
                break;
            memcpy(stage, hptr + done, c);
            e = cudaMemcpyAsync(dptr + done, stage, c, cudaMemcpyHostToDevice, 0);
            done += c;
        }
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(0);
    } else {
        for (size_t done = 0; done < n && e == cudaSuccess;) {
            const size_t c = n - done < gd->staging_size ? n - done : gd->staging_size;
            e = cudaMemcpyAsync(gd->staging, dptr + done, c, cudaMemcpyDeviceToHost, 0);
            if (e == cudaSuccess)
                e = cudaStreamSynchronize(0);
            if (e == cudaSuccess)
                memcpy(hptr + done, gd->staging, c);
            done += c;
        }
    }
    return gpu_check(gd, e, op, up ? "host-to-device copy" : "device-to-host copy");
}

static copse_status buffer_upload(copse_backend_buffer *buf, size_t offset, const void *src, size_t n)
{
    return transfer(buf, offset, (void *)src, n, true);
}

static copse_status buffer_download(copse_backend_buffer *buf, size_t offset, void *dst, size_t n)
{
    return transfer(buf, offset, dst, n, false);
}

static const copse_backend_buffer_i gpu_buffer_i = {
    /* .free = */ buffer_free,
    /* .host_ptr = */ NULL,
    /* .upload = */ buffer_upload,
    /* .download = */ buffer_download,
};

static copse_status dev_buffer_alloc(copse_backend_dev *dev, size_t size, copse_backend_buffer **out)
{
    *out = NULL;
    gpu_device *gd = (gpu_device *)dev->ctx;
    copse_status st = enter_dev(gd, "buffer_alloc");
    if (st != COPSE_OK)
        return st;
    gpu_buffer *b = (gpu_buffer *)calloc(1, sizeof *b);
    if (!b)
        return COPSE_ENOMEM;
    if ((st = dev_malloc(gd, size, &b->dptr, &b->cap)) != COPSE_OK) {
        free(b);
        return st;
    }
    GPU_MEM_USED(b->dptr, size, b->cap);
    b->base.iface = gpu_buffer_i;
    b->base.dev = dev;
    b->base.size = size;
    b->base.ctx = b;
    *out = &b->base;
    return COPSE_OK;
}

/* ---------------------------------------------------------------- queues */

static void queue_destroy(copse_backend_queue *bq)
{
    if (!bq)
        return;
    gpu_queue *q = (gpu_queue *)bq->ctx;
    if (cudaSetDevice(q->gd->id) == cudaSuccess && q->stream) {
        gpu_graph_destroy(q);
        (void)cudaStreamSynchronize(q->stream);
    }
    if (q->stream)
        (void)cudaStreamDestroy(q->stream);
    if (q->meta_dev)
        (void)cudaFree(q->meta_dev);
    if (q->meta_host)
        (void)cudaFreeHost(q->meta_host);
    if (q->am_dev)
        (void)cudaFree(q->am_dev);
    if (q->am_host)
        (void)cudaFreeHost(q->am_host);
    verify_scratch_free(q);
    if (q->scratch)
        dev_free(q->gd, q->scratch, q->scratch_cap);
    (void)cudaGetLastError();
    free(q);
}

static void meta_reset(gpu_queue *q)
{
    q->meta_off = 0;
    for (int i = 0; i < META_ANY; i++)
        q->last_n[i] = 0;
}

static copse_status queue_synchronize(copse_backend_queue *bq)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    copse_status st = gpu_enter(q, "synchronize");
    if (st == COPSE_OK)
        st = gpu_capture_break(q, "synchronize");
    if (st == COPSE_OK)
        st = gpu_check(q->gd, cudaStreamSynchronize(q->stream), "synchronize", "cudaStreamSynchronize");
    if (st == COPSE_OK)
        meta_reset(q);
    return st;
}

static copse_status meta_alloc(gpu_queue *q, size_t cap, const char *op)
{
    void *h = NULL, *d = NULL;
    copse_status st = gpu_check(q->gd, cudaHostAlloc(&h, cap, cudaHostAllocDefault), op, "cudaHostAlloc (metadata)");
    if (st == COPSE_OK)
        st = gpu_check(q->gd, cudaMalloc(&d, cap), op, "cudaMalloc (metadata)");
    if (st != COPSE_OK) {
        if (h)
            (void)cudaFreeHost(h);
        return st;
    }
    if (q->meta_host)
        (void)cudaFreeHost(q->meta_host);
    if (q->meta_dev)
        (void)cudaFree(q->meta_dev);
    q->meta_host = (unsigned char *)h;
    q->meta_dev = (unsigned char *)d;
    q->meta_cap = cap;
    meta_reset(q);
    return COPSE_OK;
}

copse_status gpu_mirror_reserve(gpu_queue *q, size_t elem, size_t n, void **dev, void **host, size_t *cap,
                                const char *op)
{
    if (n <= *cap && *dev)
        return COPSE_OK;
    copse_status st = gpu_capture_break(q, op);
    if (st == COPSE_OK)
        st = gpu_check(q->gd, cudaStreamSynchronize(q->stream), op, "cudaStreamSynchronize");
    if (st != COPSE_OK)
        return st;
    void *d = NULL, *h = NULL;
    if ((st = gpu_check(q->gd, cudaMalloc(&d, n * elem), op, "cudaMalloc")) != COPSE_OK)
        return st;
    if ((st = gpu_check(q->gd, cudaHostAlloc(&h, n * elem, cudaHostAllocDefault), op, "cudaHostAlloc")) != COPSE_OK) {
        (void)cudaFree(d);
        return st;
    }
    if (*dev)
        (void)cudaFree(*dev);
    if (*host)
        (void)cudaFreeHost(*host);
    *dev = d;
    *host = h;
    *cap = n;
    return COPSE_OK;
}

copse_status gpu_scratch(gpu_queue *q, size_t n, void **out, const char *op)
{
    if (n <= q->scratch_cap && q->scratch) {
        *out = q->scratch;
        return COPSE_OK;
    }
    const size_t want = n > SIZE_MAX / 2 || n > 2 * q->scratch_cap ? n : 2 * q->scratch_cap;
    copse_status st = COPSE_OK;
    if (q->scratch) {
        st = gpu_capture_break(q, op);
        if (st == COPSE_OK)
            st = gpu_check(q->gd, cudaStreamSynchronize(q->stream), op, "cudaStreamSynchronize (scratch)");
        if (st != COPSE_OK)
            return st;
        dev_free(q->gd, q->scratch, q->scratch_cap);
        q->scratch = NULL;
        q->scratch_cap = 0;
    }
    void *p = NULL;
    size_t cap = 0;
    if ((st = dev_malloc(q->gd, want, &p, &cap)) != COPSE_OK) {
        fprintf(stderr, "copse %s: %s: cannot allocate %zu bytes of device scratch: %s\n", COPSE_GPU_NAME, op, want,
                copse_err_name(st));
        return st; /* COPSE_ENOMEM when the device is out of memory */
    }
    GPU_MEM_USED(p, cap, cap); /* all of it: later calls use up to scratch_cap */
    q->scratch = p;
    q->scratch_cap = cap;
    *out = p;
    return COPSE_OK;
}

copse_status gpu_meta_push(gpu_queue *q, meta_kind kind, const void *src, size_t n, const void **dev, const char *op)
{
    if (kind != META_ANY && q->last_n[kind] == n && n > 0 &&
        memcmp(q->meta_host + q->last_off[kind], src, n) == 0) {
        *dev = q->meta_dev + q->last_off[kind];
        return COPSE_OK;
    }
    size_t off = (q->meta_off + 255) & ~(size_t)255;
    if (off + n > q->meta_cap) {
        /* the arena is full: wait until the stream has read it, start over */
        copse_status st = gpu_capture_break(q, op);
        if (st != COPSE_OK)
            return st;
        st = gpu_check(q->gd, cudaStreamSynchronize(q->stream), op, "cudaStreamSynchronize");
        if (st != COPSE_OK)
            return st;
        meta_reset(q);
        off = 0;
        if (n > q->meta_cap) {
            size_t cap = q->meta_cap * 2 > n ? q->meta_cap * 2 : (n + 255) & ~(size_t)255;
            if ((st = meta_alloc(q, cap, op)) != COPSE_OK)
                return st;
        }
    }
    if (n > 0) {
        memcpy(q->meta_host + off, src, n);
        copse_status st = gpu_check(q->gd,
                                    cudaMemcpyAsync(q->meta_dev + off, q->meta_host + off, n, cudaMemcpyHostToDevice,
                                                    q->stream),
                                    op, "cudaMemcpyAsync (metadata)");
        if (st != COPSE_OK)
            return st;
    }
    if (kind != META_ANY) {
        q->last_off[kind] = off;
        q->last_n[kind] = n;
    }
    q->meta_off = off + n;
    *dev = q->meta_dev + off;
    return COPSE_OK;
}

static const copse_backend_queue_i gpu_queue_i = {
    /* .destroy = */ queue_destroy,
    /* .synchronize = */ queue_synchronize,
    /* .embed = */ op_embed,
    /* .rms_norm = */ op_rms_norm,
    /* .rope = */ op_rope,
    /* .add = */ op_add,
    /* .swiglu = */ op_swiglu,
    /* .matmul = */ op_matmul,
    /* .kv_store = */ op_kv_store,
    /* .attention = */ op_attention,
    /* .kv_commit = */ op_kv_commit,
    /* .argmax = */ op_argmax,
    /* .softmax = */ op_softmax,
    /* .verify = */ op_verify,
    /* .step_begin = */ gpu_step_begin,
    /* .step_end = */ gpu_step_end,
    /* .attention_scratch_base = */ true,
};

static copse_status dev_queue_create(copse_backend_dev *dev, int n_threads, copse_backend_queue **out)
{
    (void)n_threads;
    *out = NULL;
    gpu_device *gd = (gpu_device *)dev->ctx;
    copse_status st = enter_dev(gd, "queue_create");
    if (st != COPSE_OK)
        return st;
    /* does this binary hold code for the device? */
    cudaFuncAttributes fa;
    cudaError_t e = cudaFuncGetAttributes(&fa, probe_kernel());
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        fprintf(stderr, "copse %s: queue_create: no kernel image for %s (compute capability %d.%d): %s\n",
                COPSE_GPU_NAME, gd->name, gd->cc_major, gd->cc_minor, cudaGetErrorString(e));
        return COPSE_ENODEV;
    }
    gpu_queue *q = (gpu_queue *)calloc(1, sizeof *q);
    if (!q)
        return COPSE_ENOMEM;
    q->base.iface = gpu_queue_i;
    q->base.dev = dev;
    q->base.ctx = q;
    q->gd = gd;
    gpu_graph_init(q);
    if ((st = gpu_check(gd, cudaStreamCreate(&q->stream), "queue_create", "cudaStreamCreate")) != COPSE_OK ||
        (st = meta_alloc(q, META_INITIAL, "queue_create")) != COPSE_OK) {
        queue_destroy(&q->base);
        return st;
    }
    *out = &q->base;
    return COPSE_OK;
}

/* ---------------------------------------------------------------- devices */

static void dev_get_props(const copse_backend_dev *dev, copse_dev_props *p)
{
    gpu_device *gd = (gpu_device *)dev->ctx;
    memset(p, 0, sizeof *p);
    p->kind = COPSE_DEV_GPU;
    snprintf(p->name, sizeof p->name, "%s:%d %.100s", COPSE_GPU_NAME, gd->id, gd->name);
    snprintf(p->features, sizeof p->features, "%s warp%d", gd->arch, gd->warp_size);
    p->memory_total = gd->total_mem;
    size_t fr = 0, tot = 0;
    if (!gd->broken && cudaSetDevice(gd->id) == cudaSuccess && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
        p->memory_free = fr;
    (void)cudaGetLastError();
    p->compute_units = gd->sm_count;
}

static gpu_device *devices[MAX_DEVICES];
static size_t n_devices; /* 0 when the runtime finds no device or no driver */
static std::once_flag discover_once;

static const copse_backend_dev_i gpu_dev_i = {
    /* .get_props = */ dev_get_props,
    /* .buffer_alloc = */ dev_buffer_alloc,
    /* .buffer_from_host = */ NULL,
    /* .queue_create = */ dev_queue_create,
};

static size_t reg_dev_count(copse_backend_reg *reg);
static copse_backend_dev *reg_dev_get(copse_backend_reg *reg, size_t i);

static void *reg_get_proc(copse_backend_reg *reg, const char *name)
{
    (void)reg;
    if (strcmp(name, "copy_bandwidth") == 0)
        return (void *)(uintptr_t)gpu_copy_bandwidth;
    return NULL;
}

static copse_backend_reg gpu_reg = {
    /* .api_version = */ COPSE_BACKEND_API_VERSION,
    /* .name = */ COPSE_GPU_NAME,
    /* .iface = */ {reg_dev_count, reg_dev_get, reg_get_proc},
    /* .ctx = */ NULL,
};

static void discover(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        n = 0; /* no driver or no device: the backend is present but empty */
    }
    for (int i = 0; i < n && n_devices < MAX_DEVICES; i++) {
        cudaDeviceProp pr;
        if (cudaGetDeviceProperties(&pr, i) != cudaSuccess) {
            (void)cudaGetLastError();
            continue;
        }
        if (pr.warpSize != COPSE_WARP) {
            fprintf(stderr, "copse %s: device %d (%s) has warp size %d; this build needs %d, skipping it\n",
                    COPSE_GPU_NAME, i, pr.name, pr.warpSize, COPSE_WARP);
            continue;
        }
        gpu_device *gd = new (std::nothrow) gpu_device();
        if (!gd)
            break;
        gd->dev.iface = gpu_dev_i;
        gd->dev.reg = &gpu_reg;
        gd->dev.ctx = gd;
        gd->id = i;
        snprintf(gd->name, sizeof gd->name, "%.127s", pr.name);
        gd->cc_major = pr.major;
        gd->cc_minor = pr.minor;
#if defined(COPSE_GPU_HIP)
        snprintf(gd->arch, sizeof gd->arch, "%.63s", pr.gcnArchName);
#elif defined(COPSE_GPU_SIM)
        snprintf(gd->arch, sizeof gd->arch, "sim");
#else
        snprintf(gd->arch, sizeof gd->arch, "sm_%d%d", pr.major, pr.minor);
#endif
        gd->sm_count = pr.multiProcessorCount;
        gd->warp_size = pr.warpSize;
        gd->total_mem = pr.totalGlobalMem;
        gd->cache_limit = pr.totalGlobalMem / 8;
        devices[n_devices++] = gd;
    }
}

static size_t reg_dev_count(copse_backend_reg *reg)
{
    (void)reg;
    std::call_once(discover_once, discover);
    return n_devices;
}

static copse_backend_dev *reg_dev_get(copse_backend_reg *reg, size_t i)
{
    (void)reg;
    std::call_once(discover_once, discover);
    return i < n_devices ? &devices[i]->dev : NULL;
}

} // namespace COPSE_GPU_NS

extern "C" copse_backend_reg *COPSE_GPU_REG_FN(void)
{
    return &COPSE_GPU_NS::gpu_reg;
}
