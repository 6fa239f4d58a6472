/*
 * hip-vendor.h — compiles the CUDA backend's sources for HIP (internal).
 *
 * backends/cuda/gpu-common.cuh includes this instead of the CUDA headers
 * when COPSE_GPU_HIP is defined (the HIP build, backends/hip/meson.build).
 * It maps the CUDA runtime names the backend uses to their HIP equivalents
 * and fixes the wavefront size, so the kernels exist once, in backends/cuda.
 *
 * Warp size: every reduction in the kernels is written against COPSE_WARP.
 * The HIP build targets wave64 GPUs (gfx90a, CDNA); a device pass for a
 * wave32 target (gfx10xx, gfx11xx) stops with an error instead of silently
 * running 64-lane reductions on 32 lanes. The host checks the device's
 * warpSize against COPSE_WARP when it lists devices.
 */
#ifndef COPSE_HIP_VENDOR_H
#define COPSE_HIP_VENDOR_H

#include <hip/hip_fp16.h>
#include <hip/hip_runtime.h>

#define COPSE_WARP 64
#define COPSE_GPU_NAME "hip"
#define COPSE_GPU_NS copse_hip
#define COPSE_GPU_REG_FN copse_backend_hip_reg

#if defined(__HIP_DEVICE_COMPILE__) && defined(__AMDGCN_WAVEFRONT_SIZE) && __AMDGCN_WAVEFRONT_SIZE != COPSE_WARP
#error "copse's HIP build supports wave64 targets only (gfx90a and other CDNA/GCN parts)"
#endif

/* Lane exchange over the whole wavefront (HIP has no lane masks). */
#define gpu_shfl_xor(v, o) __shfl_xor((v), (o), COPSE_WARP)
#define gpu_shfl(v, src) __shfl((v), (src), COPSE_WARP)

/* ---------------------------------------------------------------- runtime names */
#define cudaDeviceProp hipDeviceProp_t
#define cudaError_t hipError_t
#define cudaEvent_t hipEvent_t
#define cudaFuncAttributes hipFuncAttributes
#define cudaStream_t hipStream_t
#define cudaGraph_t hipGraph_t
#define cudaGraphExec_t hipGraphExec_t

#define cudaSuccess hipSuccess
#define cudaErrorMemoryAllocation hipErrorOutOfMemory
#define cudaErrorNoDevice hipErrorNoDevice
#define cudaErrorInsufficientDriver hipErrorInsufficientDriver
#define cudaErrorInvalidDevice hipErrorInvalidDevice
#define cudaErrorNoKernelImageForDevice hipErrorNoBinaryForGpu
#define cudaErrorIllegalAddress hipErrorIllegalAddress
#define cudaErrorLaunchFailure hipErrorLaunchFailure
#define cudaErrorAssert hipErrorAssert

#define cudaMemcpyHostToDevice hipMemcpyHostToDevice
#define cudaMemcpyDeviceToDevice hipMemcpyDeviceToDevice
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define cudaHostAllocDefault hipHostMallocDefault

#define cudaDeviceSynchronize hipDeviceSynchronize
#define cudaEventCreate hipEventCreate
#define cudaEventDestroy hipEventDestroy
#define cudaEventElapsedTime hipEventElapsedTime
#define cudaEventRecord hipEventRecord
#define cudaEventSynchronize hipEventSynchronize
#define cudaMemsetAsync hipMemsetAsync
#define cudaFree hipFree
#define cudaFreeHost hipHostFree
#define cudaFuncGetAttributes(attr, fn) hipFuncGetAttributes((attr), (const void *)(fn))
#define cudaGetDevice hipGetDevice
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaGetDeviceProperties hipGetDeviceProperties
#define cudaGetErrorName hipGetErrorName
#define cudaGetErrorString hipGetErrorString
#define cudaGetLastError hipGetLastError
#define cudaHostAlloc hipHostMalloc
#define cudaMalloc hipMalloc
#define cudaMemGetInfo hipMemGetInfo
#define cudaMemcpy hipMemcpy
#define cudaMemcpyAsync hipMemcpyAsync
#define cudaPeekAtLastError hipPeekAtLastError
#define cudaSetDevice hipSetDevice
#define cudaStreamCreate hipStreamCreate
#define cudaStreamDestroy hipStreamDestroy
#define cudaStreamSynchronize hipStreamSynchronize
#define cudaStreamBeginCapture hipStreamBeginCapture
#define cudaStreamCaptureModeRelaxed hipStreamCaptureModeRelaxed
#define cudaStreamEndCapture hipStreamEndCapture
#define cudaGraphDestroy hipGraphDestroy
#define cudaGraphExecDestroy hipGraphExecDestroy
#define cudaGraphLaunch hipGraphLaunch

#endif /* COPSE_HIP_VENDOR_H */
