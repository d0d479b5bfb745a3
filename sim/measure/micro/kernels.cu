// Microbenchmark kernels of the device campaign (sim.measure.micro).
//
// Every kernel that runs blocks records, for each block, where and when it ran: the SM id
// (%smid) and the start and end time (%globaltimer, nanoseconds, one clock for the whole
// device) into log[3*block + {0,1,2}] = {start_ns, end_ns, smid}. Thread 0 writes them; the
// block's start is read before any work and its end after a barrier that every thread
// passes once its work is done, so [start, end] covers the whole block.
//
// Four kinds of block, so that two kernels sharing an SM show how its throughput is shared:
//   spin_kernel   latency-bound by construction: polls %globaltimer for a fixed wall time;
//   sleep_kernel  the same with nanosleep between polls: it issues almost no instructions;
//   fma_ilpN      compute-bound: a fixed number of FP32 FMAs per thread in N independent
//                 dependent chains (N = 1, 2, 4, 8), so the ILP (with the warps per block)
//                 sets how much of the FP32 pipe one block can use alone;
//   stream_kernel memory-bound: copies a fixed number of bytes per block.
//
// Written for NVRTC (CuPy RawModule) and nvcc alike: no #include, plain C types only;
// nanosleep needs sm_70 or newer.
// Compile-time knobs (pass -DNAME=VALUE):
//   PAD_REGS  length of a register array the spin loop keeps live, to raise the kernel's
//             register count (with -maxrregcount as the cap); 0 = no padding.

#ifndef PAD_REGS
#define PAD_REGS 0
#endif

typedef unsigned long long u64;

__device__ __forceinline__ u64 global_timer_ns() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ unsigned int sm_id() {
    unsigned int s;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(s));
    return s;
}

__device__ __forceinline__ void log_block(u64* log, u64 start_ns) {
    __syncthreads();  // every thread of the block is done
    if (threadIdx.x == 0) {
        const u64 end_ns = global_timer_ns();
        u64* row = log + 3ull * blockIdx.x;
        row[0] = start_ns;
        row[1] = end_ns;
        row[2] = (u64)sm_id();
    }
}

// Spin for spin_ns nanoseconds of wall time per block, whatever else runs on the SM: the
// loop watches %globaltimer, not a cycle count, so co-resident blocks cannot stretch it
// (they only slow how often the timer is read). With PAD_REGS > 0 the loop also updates a
// register array whose sum is stored only when `sink_flag` is non-zero (never, at run
// time), so the compiler must keep the registers but the memory never sees the writes.
extern "C" __global__ void spin_kernel(u64 spin_ns, u64* log, int sink_flag, float* sink) {
    extern __shared__ char dynamic_smem[];  // sized by the launch; held, not used
    const u64 start_ns = global_timer_ns();
#if PAD_REGS > 0
    float pad[PAD_REGS];
#pragma unroll
    for (int i = 0; i < PAD_REGS; ++i) pad[i] = (float)(threadIdx.x + i);
#endif
    const u64 stop_ns = start_ns + spin_ns;
    while (global_timer_ns() < stop_ns) {
#if PAD_REGS > 0
#pragma unroll
        for (int i = 0; i < PAD_REGS; ++i) pad[i] = pad[i] * pad[(i + 1) % PAD_REGS] + 1.0f;
#endif
    }
    if (sink_flag) {
        float acc = (float)dynamic_smem[0];
#if PAD_REGS > 0
#pragma unroll
        for (int i = 0; i < PAD_REGS; ++i) acc += pad[i];
#endif
        sink[blockIdx.x * blockDim.x + threadIdx.x] = acc;
    }
    log_block(log, start_ns);
}

// Copy n_per_block float4 (16 B) elements per block from src to dst: every block moves
// exactly 32 * n_per_block bytes through DRAM (16 read + 16 written per element), in a
// coalesced block-stride loop. Buffers are sized by the host to exceed L2 several times.
// Dynamic shared memory given at launch is held, not used: a spoiler that sets how many
// blocks fit on an SM, and so how many warps keep loads in flight.
extern "C" __global__ void stream_kernel(const float4* __restrict__ src, float4* __restrict__ dst,
                                         u64 n_per_block, u64* log) {
    const u64 start_ns = global_timer_ns();
    const u64 base = (u64)blockIdx.x * n_per_block;
    for (u64 i = threadIdx.x; i < n_per_block; i += blockDim.x) {
        dst[base + i] = src[base + i];
    }
    log_block(log, start_ns);
}

// Sleep for sleep_ns nanoseconds of wall time per block, issuing (almost) no instructions:
// nanosleep suspends the warp for at most the time asked (the hardware may wake it up to
// twice as late), so the polls are capped at SLEEP_CHUNK_NS and the overshoot stays within
// about a microsecond. A latency-bound block that leaves the SM's issue slots to others.
#define SLEEP_CHUNK_NS 1000u
extern "C" __global__ void sleep_kernel(u64 sleep_ns, u64* log) {
    const u64 start_ns = global_timer_ns();
    const u64 stop_ns = start_ns + sleep_ns;
    for (u64 now = start_ns; now < stop_ns; now = global_timer_ns()) {
        const u64 left = stop_ns - now;
        const unsigned int chunk = left < SLEEP_CHUNK_NS ? (unsigned int)left : SLEEP_CHUNK_NS;
        asm volatile("nanosleep.u32 %0;" ::"r"(chunk));
    }
    log_block(log, start_ns);
}

// FP32 FMAs: every thread runs `iters` rounds (a multiple of FMA_UNROLL) of ILP independent
// chains acc[i] = acc[i] * mul + add, i.e. 2 * ILP * iters FLOP per thread, each chain one
// dependent FMA after another. A chain waits one FMA latency (about 4 cycles) per step, so a
// block's rate is set by how many FMAs its warps keep in flight (warps x ILP) against what
// the SM's FP32 pipes issue per cycle: the demand the engine's sm_throughput stands for.
// The results are stored only when sink_flag is non-zero (never, at run time), so the
// compiler must compute them but the memory never sees the writes; mul and add are kernel
// arguments, so nothing folds at compile time.
#define FMA_UNROLL 16
template <int ILP>
__device__ __forceinline__ void fma_body(unsigned int iters, float mul, float add, u64* log,
                                         int sink_flag, float* sink) {
    const u64 start_ns = global_timer_ns();
    float acc[ILP];
#pragma unroll
    for (int i = 0; i < ILP; ++i) acc[i] = (float)(threadIdx.x + i);
    for (unsigned int it = 0; it < iters; it += FMA_UNROLL) {
#pragma unroll
        for (int u = 0; u < FMA_UNROLL; ++u) {
#pragma unroll
            for (int i = 0; i < ILP; ++i) acc[i] = fmaf(acc[i], mul, add);
        }
    }
    if (sink_flag) {
        float total = 0.0f;
#pragma unroll
        for (int i = 0; i < ILP; ++i) total += acc[i];
        sink[blockIdx.x * blockDim.x + threadIdx.x] = total;
    }
    log_block(log, start_ns);
}

#define FMA_KERNEL(N)                                                                        \
    extern "C" __global__ void fma_ilp##N(unsigned int iters, float mul, float add, u64* log, \
                                          int sink_flag, float* sink) {                      \
        fma_body<N>(iters, mul, add, log, sink_flag, sink);                                  \
    }
FMA_KERNEL(1)
FMA_KERNEL(2)
FMA_KERNEL(4)
FMA_KERNEL(8)

// Does nothing: the host cost of a launch and the device gap between back-to-back kernels.
extern "C" __global__ void empty_kernel() {}
