// How cheap is a dependent step inside one thread-block cluster (#4, SmolLM2-135M's bar)?
// The monokernel syncs its 264 programs through L2 (release atomics, a thread-0 acquire poll,
// the activations re-read from L2): ~2.5 us per dependent op. A small model's step could run on
// one cluster (<= 16 SMs) whose CTAs exchange the activations through distributed shared memory.
// Per iteration, ns, for clusters of N CTAs (N = 2..16), C clusters at once (1, or as many as fit):
//   mode 0: barrier.cluster (cg::this_cluster().sync()) alone
//   mode 1: an exchange like one op's: each CTA writes its H / N slice of x to its shared
//           memory, cluster barrier, every CTA reads all H values from the cluster's shared
//           memories (DSMEM), cluster barrier (the slices may then be overwritten)
//   mode 2: the same exchange through global memory as the monokernel does it: slice stored,
//           CTA barrier, thread 0 __threadfence + atomicAdd on the cluster's counter and polls
//           it (ld.acquire.gpu) until all N arrived, CTA barrier, all H values read with ld.cg
// Each mode runs alone and again beside a "hog" kernel on another stream (four 256-thread CTAs
// per SM re-reading 2 GiB with ld.cg, 8 loads in flight a thread, until the probe is done):
// "loaded": 1, the exchange's cost while the memory system streams, as in the monokernel;
// "overlapped": 1 where the hog was still running when the probe ended.
// Build and run (H200, nvcc 13.0):
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o cluster_sync cluster_sync.cu
//   mode 3: the exchange pushed: each CTA stores its slice into every CTA's shared memory (x
//           double-buffered by iteration parity), one cluster barrier, then all H values read
//           from its own shared memory
//   mode 4: mode 2 with the H values read as float4 (one L2 round trip for the whole vector)
//   mode 5: mode 3 with float4 stores, one per thread (each thread one (rank, quad) of the N x
//           H / N / 4 the CTA pushes; H / N a multiple of 4)
//   mode 6: mode 1 with float4 DSMEM loads, every load issued before any is used
//   ./cluster_sync 576 20000        # H (SmolLM2's hidden), iterations; prints one JSON object
#include <cooperative_groups.h>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

namespace cg = cooperative_groups;

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
  fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)

__device__ __forceinline__ unsigned long long gtime() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__global__ void probe(int iters, int mode, int H, float* gx, unsigned* ctr, float* sink,
                      unsigned long long* ns) {
  extern __shared__ float sx[];
  cg::cluster_group cl = cg::this_cluster();
  const unsigned rank = cl.block_rank(), n = cl.num_blocks();
  const unsigned cid = blockIdx.x / n;
  const int per = (H + n - 1) / n;
  float* gxc = gx + (size_t)cid * H;
  unsigned* c = ctr + cid * 32;
  float acc = 0.f;
  cl.sync();
  const unsigned long long t0 = gtime();
  for (int it = 0; it < iters; ++it) {
    if (mode == 0) {
      cl.sync();
    } else if (mode == 1) {
      for (int i = threadIdx.x; i < per; i += blockDim.x) sx[i] = acc + (float)(i + it);
      cl.sync();
      for (int i = threadIdx.x; i < H; i += blockDim.x) {
        const float* rs = cl.map_shared_rank(sx, i / per);
        acc += rs[i % per];
      }
      cl.sync();
    } else if (mode == 3) {
      float* buf = sx + (it & 1) * H;
      for (unsigned r = 0; r < n; ++r) {
        float* dst = cl.map_shared_rank(buf, r);
        for (int i = threadIdx.x; i < per && rank * per + i < H; i += blockDim.x)
          dst[rank * per + i] = acc + (float)(i + it);
      }
      cl.sync();
      for (int i = threadIdx.x; i < H; i += blockDim.x) acc += buf[i];
    } else if (mode == 5) {
      float* buf = sx + (it & 1) * H;
      const int q = per / 4;  // quads in a slice
      for (int t = threadIdx.x; t < (int)n * q; t += blockDim.x) {
        const unsigned r = t / q;
        const int k = t % q;
        float4* dst = reinterpret_cast<float4*>(cl.map_shared_rank(buf, r) + rank * per) + k;
        *dst = make_float4(acc + k, acc + it, acc, acc);
      }
      cl.sync();
      for (int i = threadIdx.x; i < H; i += blockDim.x) acc += buf[i];
    } else if (mode == 6) {
      for (int i = threadIdx.x; i < per; i += blockDim.x) sx[i] = acc + (float)(i + it);
      cl.sync();
      const int q = per / 4;
      float4 v[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int t = threadIdx.x + k * blockDim.x;  // quad t of the H / 4
        v[k] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (t < H / 4)
          v[k] = *(reinterpret_cast<const float4*>(cl.map_shared_rank(sx, t / q)) + t % q);
      }
#pragma unroll
      for (int k = 0; k < 4; ++k) acc += v[k].x + v[k].y + v[k].z + v[k].w;
      cl.sync();
    } else {
      for (int i = threadIdx.x; i < per && rank * per + i < H; i += blockDim.x)
        gxc[rank * per + i] = acc + (float)(i + it);
      __syncthreads();
      if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(c, 1u);
        const unsigned target = (unsigned)(it + 1) * n;
        while (ld_acquire(c) < target) {
        }
      }
      __syncthreads();
      if (mode == 2) {
        for (int i = threadIdx.x; i < H; i += blockDim.x) acc += __ldcg(gxc + i);
      } else {  // float4, every load issued before any is used
        const float4* g4 = reinterpret_cast<const float4*>(gxc);
        float4 v[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int i = threadIdx.x + k * blockDim.x;
          v[k] = i < H / 4 ? __ldcg(g4 + i) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) acc += v[k].x + v[k].y + v[k].z + v[k].w;
      }
    }
  }
  const unsigned long long t1 = gtime();
  if (threadIdx.x == 0 && blockIdx.x == 0) ns[0] = t1 - t0;
  if (acc == -1.2345f) sink[blockIdx.x] = acc;  // keeps the reads
}

__global__ void __launch_bounds__(256) hog_read(const float4* buf, size_t n4,
                                                volatile int* stop, int max_rounds, float* sink,
                                                int* stopped) {
  float acc = 0.f;
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (int r = 0; r < max_rounds && ((r & 63) || !*stop); ++r) {
    float4 v[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = __ldcg(buf + (i + k * stride) % n4);
#pragma unroll
    for (int k = 0; k < 8; ++k) acc += v[k].x;
    i += 8 * stride;
  }
  if (acc == -1.2345f) sink[0] = acc;
  if (threadIdx.x == 0 && *stop) atomicOr(stopped, 1);  // ended by the probe's flag, not rounds
}

__global__ void set_flag(int* f) { *(volatile int*)f = 1; }

// `clusters` clusters of n CTAs (128 threads, 2 x H floats of shared memory each), stream 0;
// `a` (one attribute) must outlive the returned configuration
static cudaLaunchConfig_t launch_config(int n, int clusters, int H, cudaLaunchAttribute* a) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(n * clusters);
  cfg.blockDim = dim3(128);
  cfg.dynamicSmemBytes = (size_t)2 * H * sizeof(float);
  a[0].id = cudaLaunchAttributeClusterDimension;
  a[0].val.clusterDim.x = n;
  a[0].val.clusterDim.y = 1;
  a[0].val.clusterDim.z = 1;
  cfg.attrs = a;
  cfg.numAttrs = 1;
  cfg.stream = 0;
  return cfg;
}

struct Hog {
  float4* buf;
  size_t n4;
  int* stop;  // device memory: set by set_flag, queued behind the probe
  int* stopped;  // 1: some hog CTA was still running when the probe ended (they overlapped)
  cudaStream_t s;
};

static double run(int n, int clusters, int mode, int H, int iters, float* gx, unsigned* ctr,
                  float* sink, unsigned long long* ns, Hog* hog = nullptr) {
  CK(cudaMemset(ctr, 0, 4096 * sizeof(unsigned)));
  if (hog) {
    CK(cudaMemset(hog->stop, 0, sizeof(int)));
    CK(cudaMemset(hog->stopped, 0, sizeof(int)));
    CK(cudaDeviceSynchronize());
    // ~0.1 s of rounds at most: a probe that cannot start beside it waits that long, not forever
    hog_read<<<132 * 4, 256, 0, hog->s>>>(hog->buf, hog->n4, hog->stop, 50000, sink + 512,
                                          hog->stopped);
    CK(cudaGetLastError());
  }
  cudaLaunchAttribute a[1];
  cudaLaunchConfig_t cfg = launch_config(n, clusters, H, a);
  CK(cudaLaunchKernelEx(&cfg, probe, iters, mode, H, gx, ctr, sink, ns));
  if (hog) set_flag<<<1, 1, 0, 0>>>(hog->stop);
  CK(cudaDeviceSynchronize());
  unsigned long long t = 0;
  CK(cudaMemcpy(&t, ns, sizeof(t), cudaMemcpyDeviceToHost));
  return (double)t / iters;
}

int main(int argc, char** argv) {
  const int H = argc > 1 ? atoi(argv[1]) : 576;  // modes 4-6: H <= 2048, H / 16 a multiple of 4
  const int iters = argc > 2 ? atoi(argv[2]) : 20000;
  CK(cudaFuncSetAttribute(probe, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  float *gx, *sink;
  unsigned* ctr;
  unsigned long long* ns;
  CK(cudaMalloc(&gx, (size_t)132 * H * sizeof(float)));
  CK(cudaMalloc(&sink, 1024 * sizeof(float)));
  CK(cudaMalloc(&ctr, 4096 * sizeof(unsigned)));
  CK(cudaMalloc(&ns, sizeof(unsigned long long)));
  Hog hg;
  hg.n4 = ((size_t)2 << 30) / sizeof(float4);
  CK(cudaMalloc(&hg.buf, hg.n4 * sizeof(float4)));
  CK(cudaMemset(hg.buf, 0, hg.n4 * sizeof(float4)));
  CK(cudaMalloc(&hg.stop, sizeof(int)));
  CK(cudaMalloc(&hg.stopped, sizeof(int)));
  setvbuf(stdout, nullptr, _IONBF, 0);
  CK(cudaStreamCreateWithFlags(&hg.s, cudaStreamNonBlocking));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("{\"gpu\": \"%s\", \"H\": %d, \"iters\": %d, \"rows\": [", prop.name, H, iters);
  bool first = true;
  for (int n = 2; n <= 16; n *= 2) {
    int maxc = 0;
    cudaLaunchAttribute a[1];
    const cudaLaunchConfig_t one = launch_config(n, 1, H, a);
    CK(cudaOccupancyMaxActiveClusters(&maxc, probe, &one));
    // one cluster per GPC at most keeps the clusters on distinct SMs (one CTA per SM)
    const int many = maxc < 1 ? 1 : (maxc * n > 132 ? 132 / n : maxc);
    for (int clusters : {1, many}) {
      for (int mode = 0; mode < 7; ++mode) {
        for (int loaded = 0; loaded < 2; ++loaded) {
          Hog* h = loaded ? &hg : nullptr;
          run(n, clusters, mode, H, 100, gx, ctr, sink, ns, h);  // warm-up
          const double t = run(n, clusters, mode, H, iters, gx, ctr, sink, ns, h);
          int overlap = 0;
          if (h) CK(cudaMemcpy(&overlap, hg.stopped, sizeof(int), cudaMemcpyDeviceToHost));
          printf("%s{\"cta\": %d, \"clusters\": %d, \"max_clusters\": %d, \"mode\": %d, "
                 "\"loaded\": %d, \"overlapped\": %d, \"ns_per_iter\": %.1f}",
                 first ? "" : ", ", n, clusters, maxc, mode, loaded, overlap, t);
          first = false;
        }
      }
    }
  }
  printf("]}\n");
  return 0;
}
