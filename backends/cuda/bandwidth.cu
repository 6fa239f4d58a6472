/*
 * bandwidth.cu — the device's measured copy bandwidth (also built for HIP),
 * answered through get_proc("copy_bandwidth") for `copse bench decode`.
 *
 * The decode floor of a model is (bytes one step must read) / (bandwidth);
 * on a GPU the bandwidth is measured here, by device-to-device copies of a
 * buffer much larger than the L2 cache, timed with events on a private
 * stream (best of 5 after one warm-up). A copy of n bytes reads n and
 * writes n, so the figure is 2n / time: the rate at which device memory
 * moves bytes, the number that vendors' bandwidth tests report.
 */
#include <stdio.h>

#include "gpu-common.cuh"

namespace COPSE_GPU_NS {

#define BW_MAX_BYTES ((size_t)1 << 30)
#define BW_MIN_BYTES ((size_t)64 << 20)

double gpu_copy_bandwidth(copse_backend_dev *dev)
{
    gpu_device *gd = (gpu_device *)dev->ctx;
    if (gd->broken || gpu_check(gd, cudaSetDevice(gd->id), "copy_bandwidth", "cudaSetDevice") != COPSE_OK)
        return 0;
    size_t free_b = 0, total_b = 0;
    if (gpu_check(gd, cudaMemGetInfo(&free_b, &total_b), "copy_bandwidth", "cudaMemGetInfo") != COPSE_OK)
        return 0;
    size_t n = free_b / 4 < BW_MAX_BYTES ? free_b / 4 : BW_MAX_BYTES;
    n &= ~(size_t)0xfffff;
    if (n < BW_MIN_BYTES) {
        fprintf(stderr, "copse %s: copy_bandwidth: only %zu MiB free, not measuring\n", COPSE_GPU_NAME,
                free_b >> 20);
        return 0;
    }
    void *src = NULL, *dst = NULL;
    cudaStream_t s = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    double best = 0;
    if (gpu_check(gd, cudaMalloc(&src, n), "copy_bandwidth", "cudaMalloc") == COPSE_OK &&
        gpu_check(gd, cudaMalloc(&dst, n), "copy_bandwidth", "cudaMalloc") == COPSE_OK &&
        gpu_check(gd, cudaStreamCreate(&s), "copy_bandwidth", "cudaStreamCreate") == COPSE_OK &&
        gpu_check(gd, cudaEventCreate(&e0), "copy_bandwidth", "cudaEventCreate") == COPSE_OK &&
        gpu_check(gd, cudaEventCreate(&e1), "copy_bandwidth", "cudaEventCreate") == COPSE_OK &&
        gpu_check(gd, cudaMemsetAsync(src, 1, n, s), "copy_bandwidth", "cudaMemsetAsync") == COPSE_OK) {
        for (int rep = 0; rep < 6; rep++) {
            float ms = 0;
            if (gpu_check(gd, cudaEventRecord(e0, s), "copy_bandwidth", "cudaEventRecord") != COPSE_OK ||
                gpu_check(gd, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s), "copy_bandwidth",
                          "cudaMemcpyAsync") != COPSE_OK ||
                gpu_check(gd, cudaEventRecord(e1, s), "copy_bandwidth", "cudaEventRecord") != COPSE_OK ||
                gpu_check(gd, cudaEventSynchronize(e1), "copy_bandwidth", "cudaEventSynchronize") != COPSE_OK ||
                gpu_check(gd, cudaEventElapsedTime(&ms, e0, e1), "copy_bandwidth", "cudaEventElapsedTime") !=
                    COPSE_OK) {
                best = 0;
                break;
            }
            const double bw = 2.0 * (double)n / (ms * 1e-3);
            if (rep > 0 && ms > 0 && bw > best) /* rep 0 warms up */
                best = bw;
        }
    }
    if (e1)
        (void)cudaEventDestroy(e1);
    if (e0)
        (void)cudaEventDestroy(e0);
    if (s)
        (void)cudaStreamDestroy(s);
    if (dst)
        (void)cudaFree(dst);
    if (src)
        (void)cudaFree(src);
    (void)cudaGetLastError();
    return best;
}

} // namespace COPSE_GPU_NS
