// Microbenchmark kernels of the device campaigns (gpu_models.micro).
//
// Every kernel that runs blocks records, for each block, where and when it ran: the SM id
// (%smid) and the start and end time (%globaltimer, nanoseconds, one clock for the whole
// device) into log[3*block + {0,1,2}] = {start_ns, end_ns, smid}. Thread 0 writes them; the
// block's start is read before any work and its end after a barrier that every thread
// passes once its work is done, so [start, end] covers the whole block.
//
// Written for NVRTC (CuPy RawModule) and nvcc alike: no #include, plain C types only.
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
extern "C" __global__ void stream_kernel(const float4* __restrict__ src, float4* __restrict__ dst,
                                         u64 n_per_block, u64* log) {
    const u64 start_ns = global_timer_ns();
    const u64 base = (u64)blockIdx.x * n_per_block;
    for (u64 i = threadIdx.x; i < n_per_block; i += blockDim.x) {
        dst[base + i] = src[base + i];
    }
    log_block(log, start_ns);
}

// Does nothing: the host cost of a launch and the device gap between back-to-back kernels.
extern "C" __global__ void empty_kernel() {}
