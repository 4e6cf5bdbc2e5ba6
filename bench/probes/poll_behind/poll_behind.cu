// Does a flag poll wait for the weight bytes its SM requested before it (#4)?
//
// The monokernel requests an op's first weight tiles (Triton's pipeliner: cp.async, i.e.
// LDGSTS through L1TEX) and then polls its producer's counter (thread 0, ld.acquire.gpu). On
// an H200 every tile requested before the poll delayed the poll's answer by about the time that
// tile took to arrive (session 25, BENCH.md: gate/up's wake 1.05 / 1.80 / 3.10 us with 1 / 2 / 4
// tiles ahead). Why, and would TMA copies (cp.async.bulk, what Triton emits for tensor-
// descriptor loads) or another poll instruction avoid it?
// Answer on an H200 (bench/results/monokernel-20261202-s26, README there): it is the acquire.
// ld.acquire.gpu (also atom.acquire, fence.acq_rel) completes only after the cp.async copies the
// polling warp has in flight; relaxed and volatile loads do not wait, nor does the acquire wait
// for TMA copies (up to ~64 KB per SM) or for the copies of other warps (mode 4).
//
// Per iteration, one CTA per SM (128 threads), all SMs at once or one SM alone: thread 0 reads
// clock64, the CTA requests B bytes of fresh (not cached) memory by one of these paths, then
// thread 0 polls a flag that is already set (ld.acquire.gpu, an L2 hit) and reads the clock
// when the value arrives ("poll"); then the CTA waits for all B bytes ("data"). Modes:
//   0: no request (B ignored): the poll alone
//   1: cp.async.cg.shared.global, 16 bytes a thread per instruction, one commit group (LDGSTS)
//   2: cp.async.bulk.shared::cluster.global (TMA, 1D bulk copies of up to 16 KB, issued by
//      thread 0, completion on an mbarrier)
//   3: ld.global.cg.v4 into registers (16 bytes a thread per instruction, all issued first)
//   4: mode 1 by warps 1-3 only (the polling thread's warp requests nothing)
//   5: mode 1 by warps 0-2 only (as many copying threads as 4, the polling one among them)
// and the poll's instruction (kind): 0 ld.acquire.gpu (the monokernel's), 1 atom.acquire.gpu.add
// 0, 2 atom.relaxed.gpu.add 0, 3 ld.relaxed.gpu, 4 ld.volatile (kinds > 0 on all SMs only).
// Prints one JSON object: for each (SMs, mode, KB) the median and p90 of poll and data, ns.
// Build and run (H200, nvcc 13.0):
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o poll_behind poll_behind.cu
//   ./poll_behind 200      # iterations per configuration
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include <cuda_runtime.h>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
  fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)

constexpr int NT = 128;           // threads per CTA
constexpr int MAXB = 128 * 1024;  // bytes requested at most per iteration (shared memory)
constexpr int MAXR = 32;          // mode 3: 16-byte registers a thread at most

__device__ __forceinline__ uint32_t s32(const void* p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
// the poll's instruction (kind): 0 ld.acquire.gpu (the monokernel's), 1 atom.acquire.gpu.add 0,
// 2 atom.relaxed.gpu.add 0, 3 ld.relaxed.gpu, 4 ld.volatile
__device__ __forceinline__ unsigned poll_once(const unsigned* p, int kind) {
  unsigned v;
  if (kind == 1)
    asm volatile("atom.acquire.gpu.global.add.u32 %0, [%1], 0;" : "=r"(v) : "l"(p) : "memory");
  else if (kind == 2)
    asm volatile("atom.relaxed.gpu.global.add.u32 %0, [%1], 0;" : "=r"(v) : "l"(p) : "memory");
  else if (kind == 3)
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  else if (kind == 4)
    asm volatile("ld.volatile.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  else
    v = ld_acquire(p);
  return v;
}
__device__ __forceinline__ void mbar_init(uint64_t* b, int n) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(s32(b)), "r"(n));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* b, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;"
               :: "r"(s32(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ bool mbar_try(uint64_t* b, uint32_t parity) {
  uint32_t ok;
  asm volatile("{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
               "selp.u32 %0, 1, 0, p;\n}" : "=r"(ok) : "r"(s32(b)), "r"(parity) : "memory");
  return ok;
}

// one configuration: `iters` iterations; per iteration and CTA the poll and data latencies
// (SM clock cycles) to out[(it * gridDim.x + block) * 2 + {0, 1}]
__global__ void __launch_bounds__(NT, 1) probe(int iters, int mode, int bytes, const char* src,
                                               size_t src_bytes, unsigned* flag,
                                               long long* out, unsigned* sink, int kind) {
  extern __shared__ __align__(128) unsigned char smem[];
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + MAXB);
  const int tid = threadIdx.x;
  if (tid == 0) {
    mbar_init(bar, 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  unsigned acc = 0;
  // each (iteration, block) reads its own fresh window of src
  const size_t window = (size_t)MAXB;
  const size_t nwin = src_bytes / window;
  for (int it = 0; it < iters; ++it) {
    const char* base = src + ((size_t)(it * gridDim.x + blockIdx.x) % nwin) * window;
    __syncthreads();
    long long t0 = clock64();
    if (mode == 1) {
      for (int o = tid * 16; o < bytes; o += NT * 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                     :: "r"(s32(smem + o)), "l"(base + o) : "memory");
      asm volatile("cp.async.commit_group;" ::: "memory");
    } else if (mode == 4 || mode == 5) {  // cp.async by three warps: 1-3 (4: the polling
      // warp requests nothing) or 0-2 (5: the same count of threads, the polling one among them)
      const int w0 = mode == 4 ? 32 : 0;
      if (tid >= w0 && tid < w0 + NT - 32)
        for (int o = (tid - w0) * 16; o < bytes; o += (NT - 32) * 16)
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                       :: "r"(s32(smem + o)), "l"(base + o) : "memory");
      asm volatile("cp.async.commit_group;" ::: "memory");
    } else if (mode == 2) {
      if (tid == 0) {
        mbar_expect_tx(bar, (uint32_t)bytes);
        for (int o = 0; o < bytes; o += 16384) {
          int n = min(16384, bytes - o);
          asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes"
                       " [%0], [%1], %2, [%3];"
                       :: "r"(s32(smem + o)), "l"(base + o), "r"(n), "r"(s32(bar)) : "memory");
        }
      }
    }
    uint4 r[MAXR];  // mode 3: up to 32 x 16 bytes a thread (64 KB a CTA)
    if (mode == 3) {
#pragma unroll
      for (int j = 0; j < MAXR; ++j) {
        int o = (j * NT + tid) * 16;
        if (o < bytes)
          asm volatile("ld.global.cg.v4.u32 {%0,%1,%2,%3}, [%4];"
                       : "=r"(r[j].x), "=r"(r[j].y), "=r"(r[j].z), "=r"(r[j].w)
                       : "l"(base + o));
      }
    }
    long long t1 = t0;
    if (tid == 0) {
      unsigned v = poll_once(flag, kind);
      acc += v;
      t1 = clock64();  // after the value is used: the poll's answer has arrived
      if (v == 0) acc += 7;  // (keeps the use)
    }
    if (mode == 1 || mode >= 4) asm volatile("cp.async.wait_all;" ::: "memory");
    if (mode == 2) {
      while (!mbar_try(bar, it & 1)) {}
    }
    if (mode == 3) {
#pragma unroll
      for (int j = 0; j < MAXR; ++j) {
        int o = (j * NT + tid) * 16;
        if (o < bytes) acc += r[j].x ^ r[j].y ^ r[j].z ^ r[j].w;
      }
    }
    __syncthreads();
    long long t2 = clock64();
    if (mode == 1 || mode == 2 || mode >= 4) acc += smem[(tid * 64 + it) % max(bytes, 1)];
    if (tid == 0) {
      out[((size_t)it * gridDim.x + blockIdx.x) * 2 + 0] = t1 - t0;
      out[((size_t)it * gridDim.x + blockIdx.x) * 2 + 1] = t2 - t0;
    }
  }
  if (acc == 0xdeadbeef) sink[blockIdx.x] = acc;
}

// SM clock in GHz: cycles over globaltimer nanoseconds of a ~20 ms spin
__global__ void clock_rate(double* ghz) {
  unsigned long long g0, g1;
  long long c0 = clock64();
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g0));
  do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g1)); } while (g1 - g0 < 20000000ull);
  long long c1 = clock64();
  *ghz = double(c1 - c0) / double(g1 - g0);
}

static double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, (size_t)(p * (v.size() - 1) + 0.5))];
}

int main(int argc, char** argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 200;
  int dev = 0, sms = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const size_t src_bytes = (size_t)4 << 30;  // 4 GiB: every window read once per pass
  char* src;
  CK(cudaMalloc(&src, src_bytes));
  CK(cudaMemset(src, 1, src_bytes));
  unsigned *flag, *sink;  // (the atomic polls add 0: the flag stays 1)
  CK(cudaMalloc(&flag, 4));
  CK(cudaMalloc(&sink, 4 * 1024));
  unsigned one = 1;
  CK(cudaMemcpy(flag, &one, 4, cudaMemcpyHostToDevice));
  long long* out;
  CK(cudaMalloc(&out, sizeof(long long) * 2 * iters * sms));
  double* dghz;
  CK(cudaMalloc(&dghz, sizeof(double)));
  clock_rate<<<1, 1>>>(dghz);
  double ghz;
  CK(cudaMemcpy(&ghz, dghz, sizeof(double), cudaMemcpyDeviceToHost));
  const int smem = MAXB + 64;
  CK(cudaFuncSetAttribute(probe, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  printf("{\"sm_ghz\": %.4f, \"sms\": %d, \"iters\": %d, \"rows\": [\n", ghz, sms, iters);
  fflush(stdout);
  const int grids[2] = {1, sms};
  const int kbs[5] = {0, 16, 32, 64, 128};
  bool first = true;
  for (int kind = 0; kind < 5; ++kind)
  for (int g : grids)
    for (int mode = 0; mode < 6; ++mode)
      for (int kb : kbs) {
        if ((mode == 0) != (kb == 0)) continue;
        int bytes = kb * 1024;
        if (mode == 3 && bytes > NT * 16 * MAXR) continue;
        // the other poll instructions: all SMs, nothing / cp.async 32 and 64 KB / TMA 64 KB
        if (kind > 0 && (g == 1 || mode == 3 || kb == 16 || kb == 128 || (mode == 2 && kb != 64)))
          continue;
        if (mode >= 4 && (kb == 16 || kb == 128 || (kind != 0 && kind != 3))) continue;
        probe<<<g, NT, smem>>>(5, mode, bytes, src, src_bytes, flag, out, sink, kind);  // warm-up
        probe<<<g, NT, smem>>>(iters, mode, bytes, src, src_bytes, flag, out, sink, kind);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
        std::vector<long long> h((size_t)2 * iters * g);
        CK(cudaMemcpy(h.data(), out, h.size() * sizeof(long long), cudaMemcpyDeviceToHost));
        std::vector<double> poll, data;
        for (int it = 5; it < iters; ++it)
          for (int b = 0; b < g; ++b) {
            poll.push_back(h[((size_t)it * g + b) * 2] / ghz);
            data.push_back(h[((size_t)it * g + b) * 2 + 1] / ghz);
          }
        printf("%s{\"poll\": %d, \"ctas\": %d, \"mode\": %d, \"kb\": %d, \"poll_ns_p50\": %.0f, "
               "\"poll_ns_p90\": %.0f, \"data_ns_p50\": %.0f, \"data_ns_p90\": %.0f}",
               first ? "" : ",\n", kind, g, mode, kb, pct(poll, 0.5), pct(poll, 0.9),
               pct(data, 0.5), pct(data, 0.9));
        fflush(stdout);
        first = false;
      }
  printf("\n]}\n");
  return 0;
}
