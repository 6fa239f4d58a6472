/*
 * graph.cu — forward steps replayed as CUDA graphs (also built for HIP).
 *
 * A decode step is a few hundred small kernels whose shapes repeat from one
 * step to the next; launched one by one, the gaps between them cost as much
 * as the kernels of a small model. The core brackets every forward pass
 * with the queue's step_begin / step_end (backend-impl.h). For a step of at
 * most GRAPH_MAX_TOKENS tokens the queue's stream is put in capture mode:
 * the ops enqueue their kernels and metadata copies exactly as usual, but
 * into a graph instead of onto the device. step_end closes the capture and
 * launches it: the first time by instantiating an executable graph, later
 * by updating the queue's executable graph in place with the new step's
 * parameters (cudaGraphExecUpdate: same topology, new kernel arguments and
 * copy addresses), which is much cheaper than instantiating; when the
 * topology changed (another matmul kernel for another batch size, say) the
 * executable is instantiated anew. Larger steps (prefill) run eagerly.
 *
 * Why replay is exact: a graph runs the same kernels with the same
 * arguments in the same order as the eager launches would; metadata copies
 * read the queue's pinned arena when the graph runs, after the host wrote
 * it (ops write it before step_end). Nothing of a step survives into the
 * next except the executable graph's storage, which every update rewrites.
 *
 * Calls that must not happen during a capture (waiting for the stream, a
 * full metadata arena, argmax's download) first call gpu_capture_break:
 * it closes the capture, launches what was captured so far, and the rest of
 * the step runs eagerly. A failed op aborts the capture (step_end with
 * ok = false) and discards it. After GRAPH_FAIL_LIMIT updates in a row that
 * needed a new instantiation the queue runs GRAPH_PAUSE steps eagerly
 * before trying again (a workload whose shapes never repeat gains nothing).
 *
 * COPSE_GPU_GRAPHS=0 turns graphs off, =1 on; the default is on for CUDA
 * and the simulator, off for HIP (hipGraph of ROCm 5.2 is not measured).
 * COPSE_GPU_GRAPH_STATS=1 prints a queue's counts when it is destroyed.
 */
#include <stdio.h>
#include <stdlib.h>

#include "gpu-common.cuh"

namespace COPSE_GPU_NS {

#define GRAPH_MAX_TOKENS 64
#define GRAPH_FAIL_LIMIT 4
#define GRAPH_PAUSE 64

#if defined(COPSE_GPU_HIP)
#define GRAPHS_DEFAULT false
#else
#define GRAPHS_DEFAULT true
#endif

/* ---------------------------------------------------------------- vendor differences */

static cudaError_t graph_instantiate(cudaGraphExec_t *exec, cudaGraph_t g)
{
#if defined(COPSE_GPU_HIP)
    return hipGraphInstantiate(exec, g, NULL, NULL, 0);
#else
    return cudaGraphInstantiate(exec, g, 0);
#endif
}

/* true when exec now runs g's parameters */
static bool graph_update(cudaGraphExec_t exec, cudaGraph_t g)
{
#if defined(COPSE_GPU_HIP)
    hipGraphNode_t bad = NULL;
    hipGraphExecUpdateResult res;
    const bool ok = hipGraphExecUpdate(exec, g, &bad, &res) == hipSuccess;
#else
    cudaGraphExecUpdateResultInfo info;
    const bool ok = cudaGraphExecUpdate(exec, g, &info) == cudaSuccess;
#endif
    (void)cudaGetLastError(); /* an update failure is not sticky */
    return ok;
}

/* ---------------------------------------------------------------- queue state */

static bool graphs_enabled(void)
{
    const char *e = getenv("COPSE_GPU_GRAPHS");
    if (e && *e)
        return e[0] != '0';
    return GRAPHS_DEFAULT;
}

void gpu_graph_init(gpu_queue *q)
{
    q->graphs = graphs_enabled();
    q->gexec = NULL;
    q->capturing = false;
}

void gpu_graph_destroy(gpu_queue *q)
{
    if (q->capturing) {
        cudaGraph_t g = NULL;
        if (cudaStreamEndCapture(q->stream, &g) == cudaSuccess && g)
            (void)cudaGraphDestroy(g);
        q->capturing = false;
    }
    if (q->gexec)
        (void)cudaGraphExecDestroy(q->gexec);
    q->gexec = NULL;
    (void)cudaGetLastError();
    const char *e = getenv("COPSE_GPU_GRAPH_STATS");
    if (e && e[0] == '1')
        fprintf(stderr,
                "copse %s: graphs: %llu steps replayed (%llu updated in place, %llu instantiated), %llu captures "
                "broken, %llu steps eager\n",
                COPSE_GPU_NAME, (unsigned long long)q->gstat.launched, (unsigned long long)q->gstat.updated,
                (unsigned long long)q->gstat.instantiated, (unsigned long long)q->gstat.broken,
                (unsigned long long)q->gstat.eager);
}

/* Close the capture and return its graph (NULL with a status on failure). */
static copse_status end_capture(gpu_queue *q, cudaGraph_t *g, const char *op)
{
    *g = NULL;
    q->capturing = false;
    return gpu_check(q->gd, cudaStreamEndCapture(q->stream, g), op, "cudaStreamEndCapture");
}

/* Launch g through the queue's executable graph (updated or new). */
static copse_status launch_graph(gpu_queue *q, cudaGraph_t g, const char *op)
{
    if (q->gexec && graph_update(q->gexec, g)) {
        q->gstat.updated++;
        q->fail_streak = 0;
    } else {
        if (q->gexec) {
            (void)cudaGraphExecDestroy(q->gexec);
            q->gexec = NULL;
            if (++q->fail_streak >= GRAPH_FAIL_LIMIT) {
                q->pause = GRAPH_PAUSE;
                q->fail_streak = 0;
            }
        }
        copse_status st = gpu_check(q->gd, graph_instantiate(&q->gexec, g), op, "cudaGraphInstantiate");
        if (st != COPSE_OK) {
            q->gexec = NULL;
            return st;
        }
        q->gstat.instantiated++;
    }
    q->gstat.launched++;
    return gpu_check(q->gd, cudaGraphLaunch(q->gexec, q->stream), op, "cudaGraphLaunch");
}

copse_status gpu_step_begin(copse_backend_queue *bq, int32_t n_tokens)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    if (!q->graphs || q->capturing || n_tokens > GRAPH_MAX_TOKENS || n_tokens <= 0) {
        q->gstat.eager++;
        return COPSE_OK;
    }
    if (q->pause > 0) {
        q->pause--;
        q->gstat.eager++;
        return COPSE_OK;
    }
    copse_status st = gpu_enter(q, "step_begin");
    if (st != COPSE_OK)
        return st;
    st = gpu_check(q->gd, cudaStreamBeginCapture(q->stream, cudaStreamCaptureModeRelaxed), "step_begin",
                   "cudaStreamBeginCapture");
    if (st == COPSE_OK)
        q->capturing = true;
    return st;
}

copse_status gpu_step_end(copse_backend_queue *bq, bool ok)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    if (!q->capturing)
        return COPSE_OK;
    cudaGraph_t g = NULL;
    copse_status st = end_capture(q, &g, "step_end");
    if (st == COPSE_OK && ok)
        st = launch_graph(q, g, "step_end");
    if (g)
        (void)cudaGraphDestroy(g);
    return st;
}

copse_status gpu_capture_break(gpu_queue *q, const char *op)
{
    if (!q->capturing)
        return COPSE_OK;
    q->gstat.broken++;
    cudaGraph_t g = NULL;
    copse_status st = end_capture(q, &g, op);
    if (st == COPSE_OK)
        st = launch_graph(q, g, op);
    if (g)
        (void)cudaGraphDestroy(g);
    return st;
}

} // namespace COPSE_GPU_NS
