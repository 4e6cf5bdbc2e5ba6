// Design probe for #4's Hopper path (not the product): can a persistent kernel whose weights
// stream through a shared-memory ring that runs ahead ACROSS ops (one producer warp issuing
// TMA bulk copies, cp.async.bulk + mbarrier, limited only by free ring slots) hide the
// dependency chain that bounds the Triton monokernel (QKV -> ATTN -> O -> gate/up -> down per
// layer, each a grid-wide dataflow wait on flags)?
//
// Same op chain and flag protocol as the monokernel at T = 1: per layer QKV (RMSNorm'd input),
// ATTN, O-proj (+ residual), gate/up (RMSNorm'd input), down (silu(g) * u input, + residual),
// then the LM head with a greedy argmax whose per-block bests every block reads to embed the
// next token (tied embedding). Every block owns a contiguous row range of every op, and an op
// waits until all blocks have released the op before it. ATTN is a STAND-IN by default: it
// copies q to the attention output and optionally spins `attn_ns` (no KV cache is read), so the
// figures bound what the matvec chain and the syncs cost, not attention. With ctx > 0 it is a
// real T = 1 attention (session 30; Model's ctx fields say how). With fuse = 1 gate/up and down
// are one op, MLP (session 30): a block's gate/up groups, act in shared memory, then those
// groups' columns of Wdown (a re-laid copy) into an [H] partial sum added to the residual by
// atomics or, with cluster > 1, summed through the cluster's shared memory first.
//
// This variant (stream_mma.cu) computes the matvecs on the tensor cores: weights laid out in
// tiles of 16 rows x 1024 columns (contiguous: one bulk copy per ring slot; the 16-byte units of
// each row XOR-swizzled by the row index so that ldmatrix reads them without bank conflicts),
// mma.m16n8k16 with the weight rows as the n operand and x in the m operand as bf16 hi (rows
// 0-7) + lo (rows 8-15) parts (x to ~16 bits; m is wasted at T = 1 anyway), the k range of a
// tile split over 4 warps, the partial sums reduced once per op. stream_chain.cu is the same
// kernel with FMA matvecs (x in registers, one warp per row).
//
// Checked against naive per-op kernels (one warp per row, fp32) on the same random bf16
// weights: the greedy tokens of every step and the residual after the first step.
//
// Build on the H200: nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a
//                    -o stream_mma stream_mma.cu
// Run: ./stream_mma <qwen3-1.7b|llama-3.2-1b|smollm2-135m|qwen3-8b> [steps] [attn_ns] [stages]
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <string>
#include <cmath>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
  fprintf(stderr, "CUDA error %s at %s:%d: %s\n", #x, __FILE__, __LINE__, cudaGetErrorString(e)); \
  exit(1); } } while (0)

typedef __nv_bfloat16 bf16;
constexpr int NCONS = 8;             // consumer warps
#ifndef ROPE  // session 32: 1 = attention takes q and the new key through RoPE (and, on the Qwen3 shapes,
#define ROPE 0  // the per-head q/k RMSNorm with its weights first), as the models and the Triton kernel do, the
#endif          // reference too (compiled, NOT yet run on a GPU: run30.sh); 0 = q and k as QKV wrote them
#ifndef WG_REGS  // session 32: 1 = a producer warpgroup (4 warps, 3 exit at once) so the registers can be
#define WG_REGS 0  // split by warpgroup (setmaxnreg: producer 40, consumers 232); 0 = one producer warp (9 warps:
#endif             // 168 registers, one SM sub-partition holding 3 warps)
#ifndef WG_PROD
#define WG_PROD 40
#endif
#ifndef WG_CONS
#define WG_CONS 232
#endif
constexpr int NTHREADS = (NCONS + (WG_REGS ? 4 : 1)) * 32;
constexpr int TRW = 32;  // trace words per block
constexpr int XCH = 6;               // float4 chunks of the input per consumer thread and round
#ifndef LL  // session 32 (default 1): QKV -> attention, merge -> O-proj and O-proj -> MLP hand their values
#define LL 1  // over as (value, epoch) 8-byte words (NCCL's LL protocol): the readers spin on the words, not on
#endif        // a flag, so those ops release without a fence (needs ctx, fuse, omerge 0); 0 the flags of session
              // 31. (2, the splits' partials too, was slower on SmolLM2, run 21; removed after session 32, as were
              // omerge 2 and -DPF: `git show 76e4555:bench/probes/hopper_stream/stream_mma.cu` has them)
#ifndef AIMPL  // attention compute: 2 (default since session 31) on the tensor cores (attn_mma); 0 as session
#define AIMPL 2  // 30 measured it; 1 reworked (attn_scores_v2 / attn_sum_v2; session 31 run 8: no faster)
#endif

struct Model {
  int H, Q, KV, I, L, V, nb, steps, attn_ns, first_token, stages, maxk, maxpart, stage, nodeps, hint, mode;
  int fuse, cl;  // fuse: gate/up + down as one op (MLP); cl: cluster size of its fan-in (1: none)
  const bf16 *wqkv, *wo, *wgu, *wd, *wlm, *emb;
  const bf16* wdf;  // fuse: Wdown per layer as [I / 16 groups][H rows][16 columns] (a group contiguous)
  float *h, *qkv, *attn, *gu, *best_val;
  unsigned long long *qkvl, *attnl, *hml;  // LL: q/k/v, the merged attention, hm as (float bits, epoch) words
  float* hm;  // fuse: the MLP's input copy of the residual (O-proj writes h and hm; the MLP adds into h)
  // real attention (ctx > 0; else the stand-in): T = 1 over a bf16 KV cache [L][nKV][maxlen][D]
  // holding ctx positions at step 0 (random), the step's key and value appended at pos = ctx +
  // step (no RoPE, no q/k norm); item (g, s) of nKV x S (S = nb / nKV) takes kv head g's
  // split s of the cached keys, in sub-chunks of ck keys per ring slot (K at 0, V at 16 KB),
  // online softmax; split S - 1 also the new key; the last split of a head to finish (a ticket)
  // merges the head's splits into attn
  int ctx, D, nKV, G, S_split, ck, maxlen;
  int qkn;                      // ROPE: the Qwen3 shapes' per-head q/k RMSNorm (weights qnw, knw [L][D])
  const float *rope, *qnw, *knw;  // ROPE: [maxlen][D] cos (D / 2) then sin (D / 2) per position
  int amode;  // timing variants, wrong by construction: 1 no ticket and no merge (attn not written),
              // 2 also no scores / softmax / weighted sum (the K/V slots still waited for and freed)
  bf16 *kc, *vc;
  float *apart, *aml;
  int* hcnt;
  // omerge (session 31; needs fuse and ctx): O-proj merges attention per kv head, as the Triton
  // kernel's Plan.oproj_merge. Its tiles are (kv head g, 16 rows) of Wo's columns of g (wof, a
  // re-laid copy [L][nKV * H rows][G * D], tiled); a block waits only for its kv heads' splits
  // (hcnt, a release add per split, no ticket), merges their partials into its input and adds its
  // rows' sums into h by atomics. The MLP then adds into hd (not h), which the next O-proj's row
  // owners fold into h; QKV and the LM head read h + hd.
  int omerge;  // 0 or 1 (2, a cluster of 16 per kv head merging through DSMEM, cannot run on the H200: 7
              // clusters of 16 resident, session 32 run 17; removed, see LL above)
  int pkv;  // the producer's wait for the previous step's K/V: 0 ld.acquire polls; 1 relaxed polls then
            // fence.acq_rel (does an acquire wait for the producer's own bulk copies in flight?); 2 no wait (timing)
  const bf16* wof;
  float* hd;
  int *best_idx, *flags, *tokens;
  unsigned long long* trace;   // [nb][16] globaltimer ns at one layer's events (step steps / 2, layer L / 2): 0 attention
                               // starts, 1 split released (ticket taken), 2 merge done, 3 O-proj's wait done, 4 its input
                               // ready, 5 its tiles done, 6 its release, 7 the MLP's wait done, 8 its release
  unsigned long long* phases;  // [6 kinds][4 phases] ns summed by block 0's thread 0; [24] clocks, [25] ns;
                               // [26..30] real attention's parts (q staging, slot wait, scores, softmax, sum)
};

enum { QKV = 0, ATTN = 1, OPROJ = 2, GATEUP = 3, DOWN = 4, LMHEAD = 5, MLP = 6 };

struct Op { int kind, layer, R, K; const bf16* W; };

__host__ __device__ __forceinline__ int per_layer(const Model& m) { return m.fuse ? 4 : 5; }

__device__ __forceinline__ Op op_of(const Model& m, int o) {
  const int per = per_layer(m);
  Op op; op.layer = o / per; op.kind = (o == per * m.L) ? LMHEAD : o % per;
  if (m.fuse && op.kind == 3) op.kind = MLP;
  long l = op.layer;
  switch (op.kind) {
    case QKV: op.R = m.Q + 2 * m.KV; op.K = m.H; op.W = m.wqkv + l * op.R * op.K; break;
    case ATTN: op.R = 0; op.K = 0; op.W = nullptr; break;
    case OPROJ: op.R = m.H; op.K = m.Q; op.W = m.wo + l * op.R * op.K; break;
    case GATEUP: op.R = 2 * m.I; op.K = m.H; op.W = m.wgu + l * op.R * op.K; break;
    case DOWN: op.R = m.H; op.K = m.I; op.W = m.wd + l * op.R * op.K; break;
    case MLP: op.R = 2 * m.I; op.K = m.H; op.W = m.wgu + l * op.R * op.K; break;
    default: op.R = m.V; op.K = m.H; op.W = m.wlm; break;
  }
  return op;
}

// rows per ring slot: whole rows; >= 8 -> a multiple of 8 (one warp per row), else 1, 2 or 4
// rows split in 8 / rows parts along K
__host__ __device__ __forceinline__ int tile_rows(int K, int stage) {
  int rt = stage / (K * 2);
  if (rt >= 8) return (rt / 8) * 8;
  return rt >= 4 ? 4 : rt >= 2 ? 2 : 1;
}

constexpr int GR = 16;    // rows per tile
constexpr int CW = 1024;  // columns per tile (the last chunk of a row may be narrower)
// element offset of W[row][k] in the tiled layout of an R x K matrix
__host__ __device__ __forceinline__ long tiled(int row, int k, int K) {
  int g = row / GR, r = row % GR, c = k / CW, cw = min(CW, K - c * CW), kk = k - c * CW;
  int u = kk / 8, e = kk % 8;
  return (long)g * GR * K + (long)c * GR * CW + (long)r * cw + ((u ^ (r & 7)) * 8 + e);
}
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
// Element d of cache position pos's key / value row: AIMPL 2 stores a row's 16-byte units XOR-swizzled by
// pos & 7 (ldmatrix reads 8 consecutive positions without bank conflicts); the reference reads it the same way
__host__ __device__ __forceinline__ int kv_col(int pos, int d) {
#if AIMPL == 2
  return (((d >> 3) ^ (pos & 7)) << 3) | (d & 7);
#else
  (void)pos;
  return d;
#endif
}
__device__ __forceinline__ void ldsm_x2(uint32_t addr, uint32_t& r0, uint32_t& r1) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r0), "=r"(r1) : "r"(addr));
}
__device__ __forceinline__ void mma16816(float& c0, float& c1, float& c2, float& c3, uint4 a,
                                         uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
               "{%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c0), "+f"(c1), "+f"(c2), "+f"(c3)
               : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack2(float lo_k, float hi_k) {  // {k, k+1} as bf16x2
  __nv_bfloat162 v = __floats2bfloat162_rn(lo_k, hi_k);
  return *reinterpret_cast<uint32_t*>(&v);
}
// x[4c .. 4c+3] * sc as the mma's m operand: per (k16 block, q) the words
// {hi(2q), lo(2q), hi(2q+8), lo(2q+8)} (bf16 pairs {k, k+1}; lo = x - hi)
__device__ __forceinline__ void store_frag(uint32_t* xf, float4 v, int c, float sc) {
  int k = 4 * c, kb = k >> 4, o = k & 15, half = o >> 3, q0 = (o & 7) >> 1;
  float a0 = v.x * sc, a1 = v.y * sc, a2 = v.z * sc, a3 = v.w * sc;
  __nv_bfloat162 h01 = __floats2bfloat162_rn(a0, a1), h23 = __floats2bfloat162_rn(a2, a3);
  float2 f01 = __bfloat1622float2(h01), f23 = __bfloat1622float2(h23);
  __nv_bfloat162 l01 = __floats2bfloat162_rn(a0 - f01.x, a1 - f01.y);
  __nv_bfloat162 l23 = __floats2bfloat162_rn(a2 - f23.x, a3 - f23.y);
  uint32_t* w0 = xf + (kb * 4 + q0) * 4 + half * 2;
  uint32_t* w1 = xf + (kb * 4 + q0 + 1) * 4 + half * 2;
  w0[0] = *reinterpret_cast<uint32_t*>(&h01); w0[1] = *reinterpret_cast<uint32_t*>(&l01);
  w1[0] = *reinterpret_cast<uint32_t*>(&h23); w1[1] = *reinterpret_cast<uint32_t*>(&l23);
}
__device__ __forceinline__ uint32_t s32(const void* p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void mbar_init(uint64_t* b, int n) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(s32(b)), "r"(n));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* b, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;"
               :: "r"(s32(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* b) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(s32(b)) : "memory");
}
__device__ __forceinline__ bool mbar_try(uint64_t* b, uint32_t parity) {
  uint32_t ok;
#ifdef TEST_WAIT  // never suspends
  asm volatile("{\n\t.reg .pred p;\n\tmbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
               "selp.u32 %0, 1, 0, p;\n}" : "=r"(ok) : "r"(s32(b)), "r"(parity) : "memory");
#else
  asm volatile("{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
               "selp.u32 %0, 1, 0, p;\n}" : "=r"(ok) : "r"(s32(b)), "r"(parity) : "memory");
#endif
  return ok;
}
__device__ __forceinline__ void mbar_wait(uint64_t* b, uint32_t parity) {
  while (!mbar_try(b, parity)) {}
}
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar,
                                          uint64_t policy) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
               " [%0], [%1], %2, [%3], %4;"
               :: "r"(s32(dst)), "l"(src), "r"(bytes), "r"(s32(bar)), "l"(policy) : "memory");
}
__device__ __forceinline__ void bulk_load_plain(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               :: "r"(s32(dst)), "l"(src), "r"(bytes), "r"(s32(bar)) : "memory");
}
__device__ __forceinline__ unsigned long long gtime() {
  unsigned long long t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t;
}
__device__ __forceinline__ int ld_acquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ int ld_relaxed(const int* p) {
  int v;
  asm volatile("ld.relaxed.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
// LL words: low 32 bits the float, high 32 the epoch (step * L + layer + 1; the buffers start zeroed)
__device__ __forceinline__ void ll_put(unsigned long long* p, float v, uint32_t e) {
  const unsigned long long w = ((unsigned long long)e << 32) | __float_as_uint(v);
  asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" :: "l"(p), "l"(w) : "memory");
}
__device__ __forceinline__ unsigned long long ll_ld(const unsigned long long* p) {
  unsigned long long w;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(w) : "l"(p) : "memory");
  return w;
}
__device__ __forceinline__ float ll_get(const unsigned long long* p, uint32_t e) {
  unsigned long long w = ll_ld(p);
  while ((uint32_t)(w >> 32) != e) w = ll_ld(p);
  return __uint_as_float((uint32_t)w);
}
__device__ __forceinline__ void ll_ld2(const unsigned long long* p, unsigned long long& a, unsigned long long& b) {
  asm volatile("ld.relaxed.gpu.global.v2.u64 {%0, %1}, [%2];" : "=l"(a), "=l"(b) : "l"(p) : "memory");
}
// four words (32-byte aligned) into f; whether all four carried epoch e
__device__ __forceinline__ bool ll_get4(const unsigned long long* p, uint32_t e, float4& f) {
  unsigned long long a, b, c, d;
  ll_ld2(p, a, b); ll_ld2(p + 2, c, d);
  f = make_float4(__uint_as_float((uint32_t)a), __uint_as_float((uint32_t)b), __uint_as_float((uint32_t)c),
                  __uint_as_float((uint32_t)d));
  return ((uint32_t)(a >> 32) == e) & ((uint32_t)(b >> 32) == e) & ((uint32_t)(c >> 32) == e) & ((uint32_t)(d >> 32) == e);
}
__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r; asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r)); return r;
}
__device__ __forceinline__ uint32_t mapa(uint32_t a, uint32_t rank) {  // own smem address -> rank's
  uint32_t r; asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(rank)); return r;
}
__device__ __forceinline__ void st_cluster(uint32_t a, float v) {
  asm volatile("st.shared::cluster.f32 [%0], %1;" :: "r"(a), "f"(v) : "memory");
}
__device__ __forceinline__ void mbar_arrive_remote(uint32_t a) {
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" :: "r"(a) : "memory");
}
__device__ __forceinline__ bool mbar_try_cluster(uint64_t* b, uint32_t parity) {
  uint32_t ok;
  asm volatile("{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n\t"
               "selp.u32 %0, 1, 0, p;\n}" : "=r"(ok) : "r"(s32(b)), "r"(parity) : "memory");
  return ok;
}
__device__ __forceinline__ void red_add_v4(float* p, float4 v) {
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};"
               :: "l"(p), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w) : "memory");
}
__device__ __forceinline__ void cons_sync() {
  asm volatile("bar.sync 1, %0;" :: "r"(NCONS * 32) : "memory");
}
__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float dot8(uint4 w, const float* x) {
  const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&w);
  float4 a = *reinterpret_cast<const float4*>(x), b = *reinterpret_cast<const float4*>(x + 4);
  float2 f0 = __bfloat1622float2(p[0]), f1 = __bfloat1622float2(p[1]);
  float2 f2 = __bfloat1622float2(p[2]), f3 = __bfloat1622float2(p[3]);
  return f0.x * a.x + f0.y * a.y + f1.x * a.z + f1.y * a.w + f2.x * b.x + f2.y * b.y +
         f3.x * b.z + f3.y * b.w;
}

// Attention item b's kv head g, split sp and cached keys [k0, k1) at `step` (producer and
// consumers both walk it: their ring slots must agree)
struct Split { int g, sp, k0, k1; };
__device__ __forceinline__ Split split_of(const Model& m, int b, int step) {
  const int pos = m.ctx + step, c = (pos + m.S_split - 1) / m.S_split, sp = b % m.S_split;
  return {b / m.S_split, sp, sp * c, min(sp * c + c, pos)};
}

// omerge: O-proj tiles in the ring slot that starts at tile t (block's tiles end at t1): up to a
// slot's worth, all of one kv head (producer and consumers both walk it)
__device__ __forceinline__ int oproj_chunk(const Model& m, int t, int t1) {
  const int RG = m.H / GR, tps = m.stage / (GR * m.G * m.D * 2);
  return min(min(tps, t1 - t), (t / RG + 1) * RG - t);
}

// omerge: block b's O-proj tiles [x, y): the nb / nKV blocks of kv head g = b * nKV / nb share
// its H / 16 tiles (no block waits for, or merges, two heads)
__device__ __forceinline__ int2 oproj_range(const Model& m, int b) {
  const int RG = m.H / GR, g = (int)((long)b * m.nKV / m.nb);
  const int fb0 = (int)(((long)g * m.nb + m.nKV - 1) / m.nKV);
  const int fb1 = (int)(((long)(g + 1) * m.nb + m.nKV - 1) / m.nKV);
  const int nbg = fb1 - fb0, lb = b - fb0;
  return make_int2(g * RG + (int)((long)lb * RG / nbg), g * RG + (int)((long)(lb + 1) * RG / nbg));
}

// One ring slot's tile (16 rows x cw columns, chunk c of the row) into warp (rs, ks)'s
// accumulators: rows rs*8.. +8 over the k quarter ks (see the tiles' comment in the kernel)
__device__ __forceinline__ void tile_mma(uint32_t tile, int cw, int c, int rs, int ks, int lane,
                                         const uint4* xf4, float& c0, float& c1, float& c2, float& c3) {
  const int kw = cw >> 2, nkb = kw >> 4, q = lane & 3;
  const int n = lane & 7, mi = lane >> 3;
  const uint32_t rowaddr = tile + (rs * 8 + n) * cw * 2;
  const int u0 = (ks * kw) >> 3;
  const uint4* af = xf4 + ((c * CW + ks * kw) >> 4) * 4 + q;
  int kb = 0;
  for (; kb + 2 <= nkb; kb += 2) {
    uint32_t b0, b1, b2, b3;
    ldsm_x4(rowaddr + (((u0 + kb * 2 + mi) ^ n) << 4), b0, b1, b2, b3);
    uint4 a0 = af[kb * 4], a1 = af[(kb + 1) * 4];
    mma16816(c0, c1, c2, c3, a0, b0, b1);
    mma16816(c0, c1, c2, c3, a1, b2, b3);
  }
  if (kb < nkb) {
    uint32_t b0, b1;
    ldsm_x2(rowaddr + (((u0 + kb * 2 + (mi & 1)) ^ n) << 4), b0, b1);
    mma16816(c0, c1, c2, c3, af[kb * 4], b0, b1);
  }
}

#ifndef TMMA  // the matvec tile: 1 (default since session 31) the tile's 16 weight rows as mma's m operand (one
#define TMMA 1  // ldmatrix.x4), x hi / lo as n columns 0 / 1, k blocks over the 8 warps; 0 x as the m operand (16
#endif          // rows, 2 used: x hi / lo), the weights' 8 rows as n, 4 k quarters x 2 row halves: twice the mmas
constexpr int KP = TMMA ? NCONS : 4;  // partial sums per row (part[row * KP + ..]) reduced at the op's end
__device__ __forceinline__ void tile_mma2(uint32_t tile, int cw, int c, int warp, int lane, const uint4* xf4,
                                          float& c0, float& c1, float& c2, float& c3) {
  const int nkb = cw >> 4, mi = lane >> 3, g = lane >> 2, t = lane & 3;
  const uint32_t rowaddr = tile + ((lane & 7) + (mi & 1) * 8) * cw * 2;
  const uint4* af = xf4 + ((c * CW) >> 4) * 4 + t;
  for (int kb = warp; kb < nkb; kb += NCONS) {
    uint32_t a0, a1, a2, a3;
    ldsm_x4(rowaddr + (((kb * 2 + (mi >> 1)) ^ (lane & 7)) << 4), a0, a1, a2, a3);
    uint32_t b0 = 0, b1 = 0;
    if (g < 2) { const uint4 x = af[kb * 4]; b0 = g ? x.y : x.x; b1 = g ? x.w : x.z; }
    mma16816(c0, c1, c2, c3, make_uint4(a0, a1, a2, a3), b0, b1);
  }
}
// a tile's accumulators into part: rows rb .. rb + 15
__device__ __forceinline__ void tile_mv(uint32_t tile, int cw, int c, int warp, int lane, const uint4* xf4,
                                        float& c0, float& c1, float& c2, float& c3) {
#if TMMA == 1
  tile_mma2(tile, cw, c, warp, lane, xf4, c0, c1, c2, c3);
#else
  tile_mma(tile, cw, c, warp >> 2, warp & 3, lane, xf4, c0, c1, c2, c3);
#endif
}
__device__ __forceinline__ void put_part(float* part, int rb, int warp, int lane, float c0, float c1, float c2, float c3) {
#if TMMA == 1
  if ((lane & 3) == 0) {  // rows g, g + 8: columns 0 (x hi) + 1 (x lo)
    part[(rb + (lane >> 2)) * KP + warp] = c0 + c1; part[(rb + (lane >> 2) + 8) * KP + warp] = c2 + c3;
  }
#else
  if (lane < 4) {  // rows 2q, 2q+1 of the warp's 8: x_hi part (c0, c1) + x_lo part (c2, c3)
    const int rl = rb + (warp >> 2) * 8 + 2 * lane;
    part[rl * KP + (warp & 3)] = c0 + c2; part[(rl + 1) * KP + (warp & 3)] = c1 + c3;
  }
#endif
}
__device__ __forceinline__ float psum(const float* pp) {
  float a = 0.f;
#pragma unroll
  for (int k = 0; k < KP; ++k) a += pp[k];
  return a;
}

// Attention compute, version 2 (aimpl = 1; written after session 30's run 7, not yet timed).
// Scores: one thread per (head, key) pair; D known at compile time, the key's 16-byte chunks
// rotated by a mask (no bank conflicts between adjacent keys) and all of them loaded before use.
template <int D>
__device__ __forceinline__ void attn_scores_v2(const bf16* kt, const float* qs, const float* kn, float* sc,
                                               int SCW, int G, int nj, int njc, int tid) {
  constexpr int NCH = D / 8;
  const int npair = G * nj;
  for (int pidx = tid; pidx < npair; pidx += NCONS * 32) {  // (no shuffles: any subset may loop)
    const int gq = pidx / nj, j = pidx - gq * nj;
    const float* qv = qs + gq * D;
    float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
    if (j < njc) {
      const uint4* kr = reinterpret_cast<const uint4*>(kt + j * D);
      constexpr int PB = NCH < 8 ? NCH : 8;  // chunks loaded together (registers: 4 a chunk)
#pragma unroll
      for (int h = 0; h < NCH; h += PB) {
      uint4 w[PB];
#pragma unroll
      for (int c = 0; c < PB; ++c) w[c] = kr[(h + c + j) & (NCH - 1)];
#pragma unroll
      for (int c = 0; c < PB; ++c) {
        const int cc = (h + c + j) & (NCH - 1);
        const float4 qa = *reinterpret_cast<const float4*>(qv + cc * 8);
        const float4 qb = *reinterpret_cast<const float4*>(qv + cc * 8 + 4);
        const __nv_bfloat162* pw = reinterpret_cast<const __nv_bfloat162*>(&w[c]);
        const float2 f0 = __bfloat1622float2(pw[0]), f1 = __bfloat1622float2(pw[1]);
        const float2 f2 = __bfloat1622float2(pw[2]), f3 = __bfloat1622float2(pw[3]);
        a0 += f0.x * qa.x + f0.y * qa.y;
        a1 += f1.x * qa.z + f1.y * qa.w;
        a2 += f2.x * qb.x + f2.y * qb.y;
        a3 += f3.x * qb.z + f3.y * qb.w;
      }
      }
    } else {  // the new key (fp32 in shared memory)
#pragma unroll
      for (int d = 0; d < D; d += 4) {
        a0 += kn[d] * qv[d]; a1 += kn[d + 1] * qv[d + 1];
        a2 += kn[d + 2] * qv[d + 2]; a3 += kn[d + 3] * qv[d + 3];
      }
    }
    sc[gq * SCW + j] = (a0 + a1) + (a2 + a3);
  }
}
// Weighted sum of V: thread (key group kg, column pair dp) reads each of its keys' two values once
// for all G (<= 4) heads; the KG groups' sums are added through shared memory (red, KG x G x D)
// by the caller after a barrier.
template <int D>
__device__ __forceinline__ void attn_sum_v2(const bf16* vt, const float* vn, const float* sc, float* red,
                                            int SCW, int G, int njc, bool withnew, int tid) {
  constexpr int DP = D / 2, KG = NCONS * 32 / DP;
  const int dp = tid % DP, kg = tid / DP;
  float a[4][2] = {{0.f, 0.f}, {0.f, 0.f}, {0.f, 0.f}, {0.f, 0.f}};
  for (int j = kg; j < njc; j += KG) {
    const __nv_bfloat162 v2 = *reinterpret_cast<const __nv_bfloat162*>(vt + j * D + 2 * dp);
    const float2 v = __bfloat1622float2(v2);
#pragma unroll
    for (int gq = 0; gq < 4; ++gq)
      if (gq < G) { const float p = sc[gq * SCW + j]; a[gq][0] += p * v.x; a[gq][1] += p * v.y; }
  }
  if (withnew && kg == 0) {
#pragma unroll
    for (int gq = 0; gq < 4; ++gq)
      if (gq < G) {
        const float p = sc[gq * SCW + njc];
        a[gq][0] += p * vn[2 * dp]; a[gq][1] += p * vn[2 * dp + 1];
      }
  }
#pragma unroll
  for (int gq = 0; gq < 4; ++gq)
    if (gq < G) *reinterpret_cast<float2*>(red + (kg * G + gq) * D + 2 * dp) = make_float2(a[gq][0], a[gq][1]);
}

// Attention compute on the tensor cores (aimpl = 2), one split: every consumer warp keeps its own
// online softmax over the 16-key tiles it takes (tile i of a ring slot: warp i % NCONS; the last
// split's new key is one more tile, from knb / vnb, masked to one row), so no block barrier per
// slot; the warps' (max, sum, output) go to wml / wst for the caller to combine. Scores: mma with
// q as the m operand (rows 0-7 bf16 hi of head row, 8-15 lo, as the matvecs' x), K rows as n (ldmatrix
// of the swizzled cache rows, kv_col); P @ V: p (hi / lo rows) as m, V through ldmatrix.trans.
// DH: the output columns a warp keeps (registers): with DH < D, D / DH warps take each tile, all
// computing its scores and each P @ V for its DH columns
template <int D, int DH>
__device__ __forceinline__ void attn_mma(const Model& m, unsigned char* ring, uint64_t* full, uint64_t* empty,
                                         uint32_t& it, int S, const float* qs, const bf16* knb, const bf16* vnb,
                                         float* wml, float* wst, uint4* qf, int G, int k0, int nk, bool last, int warp,
                                         int lane) {
  constexpr int KB = D / 16;
  const int gr = lane >> 2, t = lane & 3, mi = lane >> 3, r8 = lane & 7;
  // q's fragments, qf[kb][lane] in shared memory (registers are short at D = 128); made by warp kb % NCONS
  for (int kb = warp; kb < KB; kb += NCONS) {
    const float* qv = qs + gr * D + kb * 16 + 2 * t;
    const float x0 = gr < G ? qv[0] : 0.f, x1 = gr < G ? qv[1] : 0.f;
    const float x8 = gr < G ? qv[8] : 0.f, x9 = gr < G ? qv[9] : 0.f;
    const uint32_t h01 = pack2(x0, x1), h89 = pack2(x8, x9);
    const float2 f01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&h01));
    const float2 f89 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&h89));
    qf[kb * 32 + lane] = make_uint4(h01, pack2(x0 - f01.x, x1 - f01.y), h89, pack2(x8 - f89.x, x9 - f89.y));
  }
  cons_sync();
  constexpr int NS = D / DH, NW = NCONS / NS;
  const int half = warp % NS;
  float mr = -1e30f, lr = 0.f;
  float o[DH / 8][4];
#pragma unroll
  for (int n = 0; n < DH / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  const int ck = m.ck, nsub = max((nk + ck - 1) / ck, last ? 1 : 0);
  for (int sub = 0; sub < nsub; ++sub) {
    const int njc = max(min(ck, nk - sub * ck), 0);
    const bool withnew = last && sub == nsub - 1;
    const int ntc = (njc + 15) / 16, nt = ntc + (withnew ? 1 : 0);
    const int slot = it % S;
    if (njc) mbar_wait(&full[slot], (it / S) & 1);
    const uint32_t kbase = s32(ring + (size_t)slot * m.stage), vbase = kbase + 16384;
    for (int tt = warp / NS; tt < nt; tt += NW) {
      const bool isnew = tt == ntc;
      const int nvalid = isnew ? 1 : min(16, njc - tt * 16);
      const int kr = min(r8 + (mi >> 1) * 8, nvalid - 1), vr = min(r8 + (mi & 1) * 8, nvalid - 1);
      uint32_t ka, va; int ksw, vsw;
      if (isnew) { ka = s32(knb); va = s32(vnb); ksw = 0; vsw = 0; }
      else {
        const int jk = tt * 16 + kr, jv = tt * 16 + vr;
        ka = kbase + jk * D * 2; ksw = (k0 + sub * ck + jk) & 7;
        va = vbase + jv * D * 2; vsw = (k0 + sub * ck + jv) & 7;
      }
      float s0[4] = {0.f, 0.f, 0.f, 0.f}, s1[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int kb = 0; kb < KB; ++kb) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4(ka + (((kb * 2 + (mi & 1)) ^ ksw) << 4), b0, b1, b2, b3);
        const uint4 qa = qf[kb * 32 + lane];
        mma16816(s0[0], s0[1], s0[2], s0[3], qa, b0, b1);
        mma16816(s1[0], s1[1], s1[2], s1[3], qa, b2, b3);
      }
      float sc[4] = {s0[0] + s0[2], s0[1] + s0[3], s1[0] + s1[2], s1[1] + s1[3]};  // keys 2t, 2t+1, 2t+8, 2t+9
      if (2 * t >= nvalid) sc[0] = -1e30f;
      if (2 * t + 1 >= nvalid) sc[1] = -1e30f;
      if (2 * t + 8 >= nvalid) sc[2] = -1e30f;
      if (2 * t + 9 >= nvalid) sc[3] = -1e30f;
      float mx = fmaxf(fmaxf(sc[0], sc[1]), fmaxf(sc[2], sc[3]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
      const float mn = fmaxf(mr, mx), al = __expf(mr - mn);
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) p[e] = __expf(sc[e] - mn);
      lr = lr * al + ((p[0] + p[1]) + (p[2] + p[3]));
      mr = mn;
#pragma unroll
      for (int n = 0; n < DH / 8; ++n) { o[n][0] *= al; o[n][1] *= al; o[n][2] *= al; o[n][3] *= al; }
      const uint32_t h01 = pack2(p[0], p[1]), h89 = pack2(p[2], p[3]);
      const float2 f01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&h01));
      const float2 f89 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&h89));
      const uint4 pa = make_uint4(h01, pack2(p[0] - f01.x, p[1] - f01.y), h89, pack2(p[2] - f89.x, p[3] - f89.y));
#pragma unroll
      for (int dp = 0; dp < DH / 16; ++dp) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4_t(va + (((half * DH / 8 + dp * 2 + (mi >> 1)) ^ vsw) << 4), b0, b1, b2, b3);
        mma16816(o[2 * dp][0], o[2 * dp][1], o[2 * dp][2], o[2 * dp][3], pa, b0, b1);
        mma16816(o[2 * dp + 1][0], o[2 * dp + 1][1], o[2 * dp + 1][2], o[2 * dp + 1][3], pa, b2, b3);
      }
    }
    if (njc) { __syncwarp(); if (lane == 0) mbar_arrive(&empty[slot]); ++it; }
  }
  lr += __shfl_xor_sync(0xffffffff, lr, 1);
  lr += __shfl_xor_sync(0xffffffff, lr, 2);
  if (gr < G) {
    if (t == 0) { wml[(warp * G + gr) * 2] = mr; wml[(warp * G + gr) * 2 + 1] = lr; }
    float* w = wst + (warp * G + gr) * D + half * DH + 2 * t;
#pragma unroll
    for (int n = 0; n < DH / 8; ++n)
      *reinterpret_cast<float2*>(w + n * 8) = make_float2(o[n][0] + o[n][2], o[n][1] + o[n][3]);
  }
}

__global__ void __launch_bounds__(NTHREADS, 1) stream_chain(Model m) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int S = m.stages;
  unsigned char* ring = smem;
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + (size_t)S * m.stage);
  uint64_t* empty = full + S;
  float* xs = reinterpret_cast<float*>(empty + S);       // [maxk]
  float* part = xs + m.maxk;                              // [maxpart]
  float* red = part + m.maxpart;                          // [64]
  int* ired = reinterpret_cast<int*>(red + 64);           // [64]
  float* rbuf = reinterpret_cast<float*>(ired + 64);      // [NCONS * 32] residual rows
  float* recv = rbuf + NCONS * 32;                        // [H] fuse, cl > 1: the cluster's partials
  uint64_t* cbar = reinterpret_cast<uint64_t*>(recv + ((m.H + 3) & ~3));  // their arrival
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, b = blockIdx.x, nb = m.nb;
  const int nops = per_layer(m) * m.L + 1;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) { mbar_init(&full[s], 1); mbar_init(&empty[s], NCONS); }
    mbar_init(cbar, m.cl > 1 ? m.cl : 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (m.cl > 1) {  // every CTA's barrier initialized before any peer arrives on it
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
  }

  if (warp >= NCONS) {  // producer: every tile of every op, in order, as slots free up
#if WG_REGS
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" :: "n"(WG_PROD) : "memory");
#endif
    if (warp != NCONS || lane != 0) return;
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    uint32_t it = 0;
    auto next_slot = [&]() {  // the next ring slot, once its consumers have freed it
      int slot = it % S;
      mbar_wait(&empty[slot], ((it / S) & 1) ^ 1);
      ++it;
      return slot;
    };
    auto issue = [&](const bf16* src, uint32_t bytes) {
      int slot = next_slot();
      if (m.mode >= 2) { mbar_arrive(&full[slot]); return; }  // timing: no loads (3: nor compute)
      mbar_expect_tx(&full[slot], bytes);
      if (m.hint) bulk_load(ring + (size_t)slot * m.stage, src, bytes, &full[slot], policy);
      else bulk_load_plain(ring + (size_t)slot * m.stage, src, bytes, &full[slot]);
    };
    for (int step = 0; step < m.steps; ++step)
      for (int o = 0; o < nops; ++o) {
        Op op = op_of(m, o);
        if (op.kind == ATTN) {
          if (!m.ctx || b >= m.nKV * m.S_split) continue;
          const Split sl = split_of(m, b, step);
          const int g = sl.g, k0 = sl.k0, k1 = sl.k1;
          if (k1 <= k0) continue;
          const bool ptr = m.trace && step == m.steps / 2 && op.layer == m.L / 2;
          if (ptr) m.trace[b * TRW + 9] = gtime();
          if (LL && step > 0) {  // LL: ATTN's flag is relaxed, no wait. The key of step s - 1 (layer l)
            // was written before its writer's fenced MLP release of (s - 1, l) (or, at the last layer, the
            // LM head's); this block's consumers acquired that before QKV (s - 1, l + 1), and this producer
            // runs at most `stages` slots ahead of them (the ring's mbarriers). The proxy fence orders
            // those generic writes before the bulk copies.
            asm volatile("fence.proxy.async.global;" ::: "memory");
          } else if (step > 0 && m.pkv == 0) {  // the previous step's new key and value are in the cache
            while (ld_acquire(&m.flags[o]) < step * nb) {}
            asm volatile("fence.proxy.async.global;" ::: "memory");
          } else if (step > 0 && m.pkv == 1) {
            while (ld_relaxed(&m.flags[o]) < step * nb) {}
            asm volatile("fence.acq_rel.gpu;\n\tfence.proxy.async.global;" ::: "memory");
          }
          if (ptr) m.trace[b * TRW + 10] = gtime();
          const long base = ((long)op.layer * m.nKV + g) * m.maxlen;
          for (int j0 = k0; j0 < k1; j0 += m.ck) {
            const uint32_t nbytes = (uint32_t)min(m.ck, k1 - j0) * m.D * 2;
            int slot = next_slot();
            mbar_expect_tx(&full[slot], 2 * nbytes);
            bulk_load_plain(ring + (size_t)slot * m.stage, m.kc + (base + j0) * m.D, nbytes, &full[slot]);
            bulk_load_plain(ring + (size_t)slot * m.stage + 16384, m.vc + (base + j0) * m.D, nbytes, &full[slot]);
          }
          continue;
        }
        if (m.trace && step == m.steps / 2 && op.layer == m.L / 2 && (op.kind == OPROJ || op.kind == MLP))
          m.trace[b * TRW + (op.kind == OPROJ ? 11 : 12)] = gtime();  // (before its first slot is free)
        if (op.kind == OPROJ && m.omerge) {  // (kv head, 16 rows) tiles, a slot's run at a time
          const int2 tr = oproj_range(m, b);
          const int t0 = tr.x, t1 = tr.y;
          const long GD = (long)m.G * m.D;
          for (int t = t0; t < t1;) {
            const int n = oproj_chunk(m, t, t1);
            issue(m.wof + (long)op.layer * m.H * m.Q + (long)t * GR * GD, (uint32_t)(n * GR * GD * 2));
            t += n;
          }
          if (m.trace && step == m.steps / 2 && op.layer == m.L / 2) m.trace[b * TRW + 13] = gtime();
          continue;
        }
        int nc = (op.K + CW - 1) / CW;
        if (op.kind == MLP) {  // gate and up tiles of the block's 16-row groups, then their down columns
          int GI = m.I / GR, j0 = (int)((long)b * GI / nb), j1 = (int)((long)(b + 1) * GI / nb);
          for (int j = j0; j < j1; ++j)
            for (int half = 0; half < 2; ++half)
              for (int c = 0; c < nc; ++c)
                issue(op.W + (long)(j + half * GI) * GR * op.K + (long)c * GR * CW,
                      (uint32_t)GR * min(CW, op.K - c * CW) * 2);
          const bf16* wd = m.wdf + (long)op.layer * m.I * m.H;
          for (int j = j0; j < j1; ++j)
            for (int s0 = 0; s0 < m.H; s0 += 1024)
              issue(wd + (long)j * GR * m.H + (long)s0 * GR, (uint32_t)min(1024, m.H - s0) * GR * 2);
          continue;
        }
        int G = op.R / GR, g0 = (int)((long)b * G / nb), g1 = (int)((long)(b + 1) * G / nb);
        for (int g = g0; g < g1; ++g)
          for (int c = 0; c < nc; ++c)
            issue(op.W + (long)g * GR * op.K + (long)c * GR * CW, (uint32_t)GR * min(CW, op.K - c * CW) * 2);
        if (op.kind == OPROJ && m.trace && step == m.steps / 2 && op.layer == m.L / 2) m.trace[b * TRW + 13] = gtime();
      }
    return;
  }

  // consumers
#if WG_REGS
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" :: "n"(WG_CONS) : "memory");
#endif
  const int tid = threadIdx.x;  // 0 .. NCONS*32-1
  const long long clk0 = clock64(); const unsigned long long ns0 = gtime();
  uint32_t it = 0, mlp_phase = 0;
  int tok = m.first_token;
  const int hr0 = (int)((long)b * m.H / nb), hr1 = (int)((long)(b + 1) * m.H / nb);
  for (int step = 0; step < m.steps; ++step) {
    // LL: the residual of step s is h[s & 1], built by adds only (O-proj's owner adds emb + its rows at
    // layer 0, its rows after; the MLP's fan-in), so no add has to be ordered after a store; the rows
    // of h[(s + 1) & 1] are zeroed at s's start, ordered before step s + 1's adds by the LM head's release
    float* const hs = m.h + (LL ? (step & 1) * m.H : 0);
    for (int o = 0; o < nops; ++o) {
      Op op = op_of(m, o);
      unsigned long long ts0 = gtime();
      // ---- wait for the op before (all blocks) ----
      if (tid == 0 && !m.nodeps && !(m.omerge && op.kind == OPROJ)  // (omerge: per kv head below)
          && !(LL && (op.kind == ATTN || op.kind == OPROJ || op.kind == MLP))) {  // (LL: spins on the words)
        const int* f = (o == 0) ? &m.flags[nops - 1] : &m.flags[o - 1];
        int target = (o == 0) ? step * nb : (step + 1) * nb;
        while (ld_acquire(f) < target) {}
      }
      cons_sync();
      unsigned long long ts1 = gtime(), ts2 = ts1, ts3 = ts1;
#ifdef NO_TRACE  // (is the trace's code what costs the default path time? session 31 run 13)
      const bool tmk = false;
#else
      const bool tmk = m.trace && step == m.steps / 2 && op.layer == m.L / 2 && tid == 0;
#endif
      auto tmark = [&](int e) { if (tmk) m.trace[b * TRW + e] = gtime(); };
      if (op.kind == ATTN) tmark(0);
      if (op.kind == OPROJ && !m.omerge) tmark(3);
      if (op.kind == MLP) tmark(7);
      if (o == 0 && step > 0) {  // the previous step's token from every block's best
        if (warp == 0) {
          float bv = -INFINITY; int bi = 0x7fffffff;
          float pv[8]; int pi[8];
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            int i = lane + 32 * j;
            pv[j] = i < nb ? __ldcg(&m.best_val[i]) : -INFINITY; pi[j] = i < nb ? __ldcg(&m.best_idx[i]) : 0x7fffffff;
          }
#pragma unroll
          for (int j = 0; j < 8; ++j)
            if (pv[j] > bv || (pv[j] == bv && pi[j] < bi)) { bv = pv[j]; bi = pi[j]; }
          for (int d = 16; d; d >>= 1) {
            float v = __shfl_xor_sync(0xffffffff, bv, d); int ix = __shfl_xor_sync(0xffffffff, bi, d);
            if (v > bv || (v == bv && ix < bi)) { bv = v; bi = ix; }
          }
          if (lane == 0) ired[0] = bi;
        }
        cons_sync();
        tok = ired[0];
        if (b == 0 && tid == 0) m.tokens[step - 1] = tok;
      }
      const bf16* emb = m.emb + (long)tok * m.H;
      if (o == 0)  // the residual starts as the token's embedding (this block's rows)
#if LL
        for (int r = hr0 + tid; r < hr1; r += NCONS * 32) m.h[((step + 1) & 1) * m.H + r] = 0.f;
#else
        for (int r = hr0 + tid; r < hr1; r += NCONS * 32) { m.h[r] = bf2f(emb[r]); if (m.omerge) m.hd[r] = 0.f; }
#endif
      if (op.kind == ATTN && m.ctx) {
        const long long tq = clock64();
        if (b < m.nKV * m.S_split) {
          const int D = m.D, G = m.G, GD = G * D, pos = m.ctx + step;
          const Split sl = split_of(m, b, step);
          const int g = sl.g, sp = sl.sp, k0 = sl.k0, k1 = sl.k1;
          const int nk = max(k1 - k0, 0);
          const bool last = sp == m.S_split - 1;
          float* qs = part;                 // [G * D] q * 1/sqrt(D)
          float* kn = qs + GD;              // [D] the new key (bf16-rounded)
          float* vn = kn + D;               // [D]
          float* mrun = vn + D;             // [G] running max, [G] sum, [G] rescale
          float* lrun = mrun + G;
          float* alpha = lrun + G;
          float* sc = alpha + G;            // [G][ck + 1] scores, then weights
          const int SCW = m.ck + 1;
          bf16* knb = reinterpret_cast<bf16*>(part + ((GD + 2 * D + 3 * G + 3) & ~3));  // aimpl 2: [2][D] (16-byte aligned)
          const float qscale = rsqrtf((float)D);
#if ROPE  // (host check: G * D <= NCONS * 32, so thread tid holds q element tid and new-key element tid)
          {
            const long cbase = ((long)op.layer * m.nKV + g) * m.maxlen;
            float* rsq = part + ((GD + 2 * D + 3 * G + G * (m.ck + 1) + 3) & ~3) + 2 * NCONS * G;  // (wst: free here)
            // [NCONS] the warps' sums of squares of q, then [NCONS] of k
            // RoPE's cos / sin and the q/k norm weights of this thread's element into registers before
            // the q/k/v wait (they do not depend on it; in shared memory they were on the chain)
            const int h = D / 2, d = tid % D, pd = d < h ? d + h : d - h, j = d % h;
            const float cj = __ldcg(&m.rope[(long)pos * D + j]), sj = __ldcg(&m.rope[(long)pos * D + h + j]);
            float wqd = 1.f, wqp = 1.f, wkd = 1.f, wkp = 1.f;
            if (m.qkn) {
              wqd = __ldg(m.qnw + op.layer * D + d); wqp = __ldg(m.qnw + op.layer * D + pd);
              wkd = __ldg(m.knw + op.layer * D + d); wkp = __ldg(m.knw + op.layer * D + pd);
            }
            float qv = 0.f, kv = 0.f, vv = 0.f;
            const bool hk = last && tid < D;
#if LL
            const uint32_t ep = (uint32_t)(step * m.L + op.layer + 1);
            if (tid < GD) qv = ll_get(&m.qkvl[g * GD + tid], ep);
            if (hk) { kv = ll_get(&m.qkvl[m.Q + g * D + tid], ep); vv = ll_get(&m.qkvl[m.Q + m.KV + g * D + tid], ep); }
#else
            if (tid < GD) qv = __ldcg(&m.qkv[g * GD + tid]);
            if (hk) { kv = __ldcg(&m.qkv[m.Q + g * D + tid]); vv = __ldcg(&m.qkv[m.Q + m.KV + g * D + tid]); }
#endif
            if (tid < GD) qs[tid] = qv;
            if (hk) kn[tid] = kv;
            if (m.qkn) {
              float a = qv * qv, c = kv * kv;
              for (int dd = 16; dd; dd >>= 1) { a += __shfl_xor_sync(0xffffffff, a, dd); c += __shfl_xor_sync(0xffffffff, c, dd); }
              if (lane == 0) { rsq[warp] = a; rsq[NCONS + warp] = c; }
            }
            cons_sync();
            // element d of the head at v + base, normalized (r, weights wd / wp: Qwen3's q/k norm) and rotated
            auto rot = [&](const float* v, int base, float r, float wd, float wp) {
              const float x = v[base + d] * r * wd, y = v[base + pd] * r * wp;
              return d < h ? x * cj - y * sj : x * cj + y * sj;
            };
            auto rstd = [&](int w0) {  // the head's 1 / rms from the sums of its D / 32 warps at rsq[w0..]
              float ss = 0.f;
              for (int w = w0; w < w0 + D / 32; ++w) ss += rsq[w];
              return rsqrtf(ss / D + 1e-6f);
            };
            float qo = 0.f, ko = 0.f;
            if (tid < GD) {
              const int gq = tid / D;
              qo = rot(qs, gq * D, m.qkn ? rstd(gq * D / 32) : 1.f, wqd, wqp);
            }
            if (hk) ko = rot(kn, 0, m.qkn ? rstd(NCONS) : 1.f, wkd, wkp);
            cons_sync();
            if (tid < GD) qs[tid] = qo * qscale;
            if (hk) {
              const bf16 kb = __float2bfloat16(ko), vb = __float2bfloat16(vv);
              m.kc[(cbase + pos) * D + kv_col(pos, tid)] = kb; m.vc[(cbase + pos) * D + kv_col(pos, tid)] = vb;
              kn[tid] = bf2f(kb); vn[tid] = bf2f(vb);
#if AIMPL == 2
              knb[tid] = kb; knb[D + tid] = vb;
#endif
            }
          }
#elif LL
          const uint32_t ep = (uint32_t)(step * m.L + op.layer + 1);
          for (int i = tid; i < GD; i += NCONS * 32) qs[i] = ll_get(&m.qkvl[g * GD + i], ep) * qscale;
#else
          for (int i = tid; i < GD; i += NCONS * 32) qs[i] = __ldcg(&m.qkv[g * GD + i]) * qscale;
#endif
#if !ROPE
          const long cbase = ((long)op.layer * m.nKV + g) * m.maxlen;
          if (last)
            for (int d = tid; d < D; d += NCONS * 32) {
#if LL
              bf16 kb = __float2bfloat16(ll_get(&m.qkvl[m.Q + g * D + d], ep));
              bf16 vb = __float2bfloat16(ll_get(&m.qkvl[m.Q + m.KV + g * D + d], ep));
#else
              bf16 kb = __float2bfloat16(__ldcg(&m.qkv[m.Q + g * D + d]));
              bf16 vb = __float2bfloat16(__ldcg(&m.qkv[m.Q + m.KV + g * D + d]));
#endif
              m.kc[(cbase + pos) * D + kv_col(pos, d)] = kb; m.vc[(cbase + pos) * D + kv_col(pos, d)] = vb;
              kn[d] = bf2f(kb); vn[d] = bf2f(vb);
#if AIMPL == 2
              knb[d] = kb; knb[D + d] = vb;  // the new key and value rows for attn_mma (plain)
#endif
            }
#endif  // !ROPE
          if (tid < G) { mrun[tid] = -1e30f; lrun[tid] = 0.f; }
          float oacc[2] = {0.f, 0.f};  // thread's (gq, d) = tid, tid + 256 (G * D <= 512)
          cons_sync();
          tmark(15);
          const bool tr = m.phases && b == 0 && tid == 0;  // block 0's attention parts
          unsigned long long ta = tr ? clock64() : 0;
          if (tr) atomicAdd(&m.phases[26], ta - tq);
#if AIMPL == 2
          const int item = g * m.S_split + sp;
          {
            float* wml = part + ((GD + 2 * D + 3 * G + G * SCW + 3) & ~3);  // [NCONS][G][2], then [NCONS][G][D]
            float* wst = wml + 2 * NCONS * G;
            uint4* qf = reinterpret_cast<uint4*>(wst + NCONS * G * D);  // [D / 16][32]
            if (D == 64) attn_mma<64, 64>(m, ring, full, empty, it, S, qs, knb, knb + D, wml, wst, qf, G, k0, nk, last, warp, lane);
            else attn_mma<128, 64>(m, ring, full, empty, it, S, qs, knb, knb + D, wml, wst, qf, G, k0, nk, last, warp, lane);
            cons_sync();
            if (tr) { unsigned long long t = clock64(); atomicAdd(&m.phases[28], t - ta); ta = t; }
            for (int i = tid; i < GD; i += NCONS * 32) {  // the warps' softmax states combined
              const int gq = i / D, ns = D / 64, w0 = (i % D) / 64;  // (attn_mma's DH = 64: warps w0, w0 + ns, ..)
              float M = -1e30f;
              for (int w = w0; w < NCONS; w += ns) M = fmaxf(M, wml[(w * G + gq) * 2]);
              float acc = 0.f, L = 0.f;
              for (int w = w0; w < NCONS; w += ns) {
                const float e = __expf(wml[(w * G + gq) * 2] - M);
                acc += e * wst[(w * G + gq) * D + i % D];
                L += e * wml[(w * G + gq) * 2 + 1];
              }
              m.apart[(long)item * GD + i] = acc;
              if (i % D == 0) { m.aml[item * G * 2 + gq * 2] = M; m.aml[item * G * 2 + gq * 2 + 1] = L; }
            }
          }
          (void)oacc; (void)alpha;
#else
          // sub-chunks of <= ck cached keys (one ring slot each); the last split's new key rides
          // along with its last sub-chunk (or alone where the split has no cached keys)
          const int nsub = max((nk + m.ck - 1) / m.ck, last ? 1 : 0);
          for (int sub = 0; sub < nsub; ++sub) {
            const int njc = min(m.ck, nk - sub * m.ck) > 0 ? min(m.ck, nk - sub * m.ck) : 0;
            const bool withnew = last && sub == nsub - 1;
            const int nj = njc + (withnew ? 1 : 0);
            int slot = it % S;
            const bf16* kt = reinterpret_cast<const bf16*>(ring + (size_t)slot * m.stage);
            const bf16* vt = reinterpret_cast<const bf16*>(ring + (size_t)slot * m.stage + 16384);
            if (njc) mbar_wait(&full[slot], (it / S) & 1);
            if (tr) { unsigned long long t = clock64(); atomicAdd(&m.phases[27], t - ta); ta = t; }
            if (m.amode == 2) {
              if (njc) { __syncwarp(); if (lane == 0) mbar_arrive(&empty[slot]); ++it; }
              continue;
            }
            // scores: TPP threads per (head, key) pair, each over D / TPP of the row, 16-byte
            // chunks started at a per-key rotation (no bank conflicts between adjacent keys)
#if AIMPL == 1
            {
              if (D == 64) attn_scores_v2<64>(kt, qs, kn, sc, SCW, G, nj, njc, tid);
              else attn_scores_v2<128>(kt, qs, kn, sc, SCW, G, nj, njc, tid);
            }
#else
            {
            const int nch = D / 8;  // 16-byte chunks of a key row
            const int npair = G * nj;
            int tpp = 1;
            while (tpp < 8 && npair * tpp * 2 <= NCONS * 32) tpp *= 2;
            for (int base = 0; base < npair; base += NCONS * 32 / tpp) {  // (whole warps: shuffles)
              const int pidx = base + tid / tpp;
              const bool act = pidx < npair;
              const int gq = act ? pidx / nj : 0, j = act ? pidx % nj : 0, sub_t = tid % tpp;
              const float* qv = qs + gq * D;
              float s0 = 0.f, s1 = 0.f;
              if (!act) {
              } else if (j < njc) {
                const uint4* kr = reinterpret_cast<const uint4*>(kt + j * D);
                for (int c = sub_t; c < nch; c += tpp) {
                  const int cc = (c + j) % nch;
                  uint4 w = kr[cc];
                  const __nv_bfloat162* pw = reinterpret_cast<const __nv_bfloat162*>(&w);
                  float4 qa = *reinterpret_cast<const float4*>(qv + cc * 8);
                  float4 qb = *reinterpret_cast<const float4*>(qv + cc * 8 + 4);
                  float2 f0 = __bfloat1622float2(pw[0]), f1 = __bfloat1622float2(pw[1]);
                  float2 f2 = __bfloat1622float2(pw[2]), f3 = __bfloat1622float2(pw[3]);
                  s0 += f0.x * qa.x + f0.y * qa.y + f1.x * qa.z + f1.y * qa.w;
                  s1 += f2.x * qb.x + f2.y * qb.y + f3.x * qb.z + f3.y * qb.w;
                }
              } else {
                for (int d = sub_t; d < D; d += tpp) s0 += kn[d] * qv[d];
              }
              float sv = s0 + s1;
              for (int dd = 1; dd < tpp; dd <<= 1) sv += __shfl_xor_sync(0xffffffff, sv, dd);
              if (act && sub_t == 0) sc[gq * SCW + j] = sv;
            }
            }
#endif
            cons_sync();
            if (tr) { unsigned long long t = clock64(); atomicAdd(&m.phases[28], t - ta); ta = t; }
            if (warp < G) {  // head warp: the online softmax step
              float mx = -1e30f;
              for (int j = lane; j < nj; j += 32) mx = fmaxf(mx, sc[warp * SCW + j]);
              for (int dd = 16; dd; dd >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, dd));
              const float mnew = fmaxf(mrun[warp], mx);
              float ps = 0.f;
              for (int j = lane; j < nj; j += 32) {
                float pj = __expf(sc[warp * SCW + j] - mnew);
                sc[warp * SCW + j] = pj; ps += pj;
              }
              for (int dd = 16; dd; dd >>= 1) ps += __shfl_xor_sync(0xffffffff, ps, dd);
              __syncwarp();
              if (lane == 0) {
                const float a = __expf(mrun[warp] - mnew);
                alpha[warp] = a; lrun[warp] = lrun[warp] * a + ps; mrun[warp] = mnew;
              }
            }
            cons_sync();
            if (tr) { unsigned long long t = clock64(); atomicAdd(&m.phases[29], t - ta); ta = t; }
#if AIMPL == 1
            {
              float* red2 = part + ((GD + 2 * D + 3 * G + G * SCW + 3) & ~3);  // [KG][G][D], after sc
              if (D == 64) attn_sum_v2<64>(vt, vn, sc, red2, SCW, G, njc, withnew, tid);
              else attn_sum_v2<128>(vt, vn, sc, red2, SCW, G, njc, withnew, tid);
              cons_sync();
              const int KG = NCONS * 32 / (D / 2);
#pragma unroll
              for (int r = 0; r < 2; ++r) {
                const int i = tid + r * NCONS * 32;
                if (i < GD) {
                  const int gq = i / D, d = i % D;
                  float o = 0.f;
                  for (int k2 = 0; k2 < KG; ++k2) o += red2[(k2 * G + gq) * D + d];
                  oacc[r] = oacc[r] * alpha[gq] + o;
                }
              }
            }
#else
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              const int i = tid + r * NCONS * 32;
              if (i < GD) {
                const int gq = i / D, d = i % D;
                const float* pr = sc + gq * SCW;
                float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
                int j = 0;
                for (; j + 4 <= njc; j += 4) {
                  a0 += pr[j] * bf2f(vt[j * D + d]);
                  a1 += pr[j + 1] * bf2f(vt[(j + 1) * D + d]);
                  a2 += pr[j + 2] * bf2f(vt[(j + 2) * D + d]);
                  a3 += pr[j + 3] * bf2f(vt[(j + 3) * D + d]);
                }
                for (; j < njc; ++j) a0 += pr[j] * bf2f(vt[j * D + d]);
                if (withnew) a1 += pr[njc] * vn[d];
                oacc[r] = oacc[r] * alpha[gq] + ((a0 + a1) + (a2 + a3));
              }
            }
#endif
            if (njc) {
              __syncwarp();
              if (lane == 0) mbar_arrive(&empty[slot]);
              ++it;
            }
            cons_sync();
            if (tr) { unsigned long long t = clock64(); atomicAdd(&m.phases[30], t - ta); ta = t; }
          }
          const int item = g * m.S_split + sp;
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int i = tid + r * NCONS * 32;
            if (i < GD) m.apart[(long)item * GD + i] = oacc[r];
          }
          if (tid < G) { m.aml[item * G * 2 + tid * 2] = mrun[tid]; m.aml[item * G * 2 + tid * 2 + 1] = lrun[tid]; }
#endif
          cons_sync();
          if (m.omerge) {  // O-proj merges: the split's partials released to its kv head's counter
            if (tid == 0) {
              __threadfence();
              asm volatile("red.release.gpu.global.add.s32 [%0], 1;" :: "l"(&m.hcnt[op.layer * m.nKV + g]) : "memory");
              ired[0] = 0;
            }
          } else if (m.amode >= 1) {
            if (tid == 0) ired[0] = 0;
          } else if (tid == 0) {
#ifndef OLD_TICKET  // the ticket as one acq_rel atomic (release of the partials, acquire of the others'; before
                    // session 32: __threadfence, relaxed atomicAdd, __threadfence: run 18, 8 us a step more)
            int old;
#ifdef RELAXED_REL
            asm volatile("atom.relaxed.gpu.global.add.s32 %0, [%1], 1;" : "=r"(old) : "l"(&m.hcnt[op.layer * m.nKV + g]) : "memory");
#else
            asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;" : "=r"(old) : "l"(&m.hcnt[op.layer * m.nKV + g]) : "memory");
#endif
#else
            __threadfence();
            int old = atomicAdd(&m.hcnt[op.layer * m.nKV + g], 1);
#endif
            ired[0] = (old + 1 == (step + 1) * m.S_split);
          }
          cons_sync();
          tmark(1);
          if (ired[0]) {  // the head's last split: merge its S splits
#ifdef OLD_TICKET
            __threadfence();
#endif
            float* wsp = sc;  // [S][G] split weights exp(m_s - M) / L, all loads issued at once
            const int SG = m.S_split * G;
            for (int i = tid; i < SG; i += NCONS * 32) {
              const int q2 = i / G, gq = i % G;
              wsp[i] = __ldcg(&m.aml[(g * m.S_split + q2) * G * 2 + gq * 2]);
              wsp[SG + i] = __ldcg(&m.aml[(g * m.S_split + q2) * G * 2 + gq * 2 + 1]);
            }
            cons_sync();
            if (warp < G) {
              float M = -1e30f;
              for (int q2 = lane; q2 < m.S_split; q2 += 32) M = fmaxf(M, wsp[q2 * G + warp]);
              for (int dd = 16; dd; dd >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffff, M, dd));
              float L = 0.f;
              for (int q2 = lane; q2 < m.S_split; q2 += 32) L += __expf(wsp[q2 * G + warp] - M) * wsp[SG + q2 * G + warp];
              for (int dd = 16; dd; dd >>= 1) L += __shfl_xor_sync(0xffffffff, L, dd);
              __syncwarp();
              for (int q2 = lane; q2 < m.S_split; q2 += 32) wsp[2 * SG + q2 * G + warp] = __expf(wsp[q2 * G + warp] - M) / L;
            }
            cons_sync();
            for (int i = tid; i < GD; i += NCONS * 32) {
              const int gq = i / D;
              float o0 = 0.f, o1 = 0.f;
              int q2 = 0;
              for (; q2 + 8 <= m.S_split; q2 += 8) {
                float v[8];
#pragma unroll
                for (int e = 0; e < 8; ++e) v[e] = __ldcg(&m.apart[(long)(g * m.S_split + q2 + e) * GD + i]);
#pragma unroll
                for (int e = 0; e < 8; e += 2) {
                  o0 += wsp[2 * SG + (q2 + e) * G + gq] * v[e];
                  o1 += wsp[2 * SG + (q2 + e + 1) * G + gq] * v[e + 1];
                }
              }
              for (; q2 < m.S_split; ++q2) o0 += wsp[2 * SG + q2 * G + gq] * __ldcg(&m.apart[(long)(g * m.S_split + q2) * GD + i]);
#if LL
              ll_put(&m.attnl[g * GD + i], o0 + o1, (uint32_t)(step * m.L + op.layer + 1));
#else
              m.attn[g * GD + i] = o0 + o1;
#endif
            }
            tmark(2);
          }
        }
      } else if (op.kind == ATTN) {  // stand-in: attention output = q (this block's slice)
        int a0 = (int)((long)b * m.Q / nb), a1 = (int)((long)(b + 1) * m.Q / nb);
        for (int i = a0 + tid; i < a1; i += NCONS * 32) m.attn[i] = __ldcg(&m.qkv[i]);
        if (m.attn_ns && tid == 0) {
          uint64_t t0, t1;
          asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
          do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t1)); } while (t1 - t0 < (uint64_t)m.attn_ns);
        }
      } else if (op.kind == OPROJ && m.omerge) {
        // wait for kv head g's splits, merge their partials into the input fragments in one
        // round of loads (thread (sg, c): chunk c = elements 4c .. 4c+3 of the G x D, splits
        // sg, sg + NSG, ..; the NSG groups combined through shared memory), the tiles, then the
        // rows' sums into h by atomics; the block's rows of hd (loaded before the wait) too
        const int D = m.D, G = m.G, GD = G * D, S2 = m.S_split, RG = m.H / GR, NCH = GD / 4;
        const int NSG = NCONS * 32 / NCH, sg = tid / NCH, cc = tid % NCH;
        const int2 tr = oproj_range(m, b);
        const int ts = tr.x, te = tr.y, g = ts / RG;  // (no tiles: g unused)
        const uint4* xf4 = reinterpret_cast<const uint4*>(xs);
        uint32_t* xfw = reinterpret_cast<uint32_t*>(xs);
        float hdv[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int r = hr0 + tid + k * NCONS * 32;
          hdv[k] = r < hr1 ? __ldcg(&m.hd[r]) : 0.f;
        }
        ts2 = gtime();
        if (ts < te) {
          if (tid == 0) while (ld_acquire(&m.hcnt[op.layer * m.nKV + g]) < (step + 1) * S2) {}
          tmark(3);
          cons_sync();
          float* mrg = part;  // [NSG][6][NCH]: group max, sum, acc x4
          if (sg < NSG) {
            constexpr int MI = 8;
            float M = -1e30f, L = 0.f;
            float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
            for (int s0 = sg; s0 < S2; s0 += MI * NSG) {
              float2 mlv[MI]; float4 av[MI];
#pragma unroll
              for (int i = 0; i < MI; ++i) {
                const int s2 = s0 + i * NSG;
                const int item = g * S2 + (s2 < S2 ? s2 : 0);
                const int gq = 4 * cc / D;
                mlv[i] = __ldcg(reinterpret_cast<const float2*>(m.aml + (long)item * G * 2 + gq * 2));
                av[i] = __ldcg(reinterpret_cast<const float4*>(m.apart + (long)item * GD) + cc);
                if (s2 >= S2) mlv[i].x = -1e30f;
              }
              float Mn = M;
#pragma unroll
              for (int i = 0; i < MI; ++i) Mn = fmaxf(Mn, mlv[i].x);
              const float r = __expf(M - Mn);
              L *= r; acc.x *= r; acc.y *= r; acc.z *= r; acc.w *= r;
#pragma unroll
              for (int i = 0; i < MI; ++i) {
                const float w = (s0 + i * NSG < S2) ? __expf(mlv[i].x - Mn) : 0.f;
                L += w * mlv[i].y;
                acc.x += w * av[i].x; acc.y += w * av[i].y; acc.z += w * av[i].z; acc.w += w * av[i].w;
              }
              M = Mn;
            }
            float* mr = mrg + sg * 6 * NCH + cc;
            mr[0] = M; mr[NCH] = L; mr[2 * NCH] = acc.x; mr[3 * NCH] = acc.y; mr[4 * NCH] = acc.z; mr[5 * NCH] = acc.w;
          }
          cons_sync();
          if (tid < NCH) {
            float M = -1e30f;
            for (int k = 0; k < NSG; ++k) M = fmaxf(M, mrg[k * 6 * NCH + tid]);
            float L = 0.f;
            float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
            for (int k = 0; k < NSG; ++k) {
              const float* mr = mrg + k * 6 * NCH + tid;
              const float w = __expf(mr[0] - M);
              L += w * mr[NCH];
              acc.x += w * mr[2 * NCH]; acc.y += w * mr[3 * NCH]; acc.z += w * mr[4 * NCH]; acc.w += w * mr[5 * NCH];
            }
            store_frag(xfw, acc, tid, 1.f / L);
          }
          cons_sync();
          tmark(4);
          for (int t = ts; t < te;) {
            const int n = oproj_chunk(m, t, te);
            const int slot = it % S;
            mbar_wait(&full[slot], (it / S) & 1);
            if (t == ts) tmark(14);
            if (t + n == te) tmark(16);
            for (int i = 0; i < n; ++i) {
              float c0 = 0.f, c1 = 0.f, c2 = 0.f, c3 = 0.f;
              tile_mv(s32(ring + (size_t)slot * m.stage + (size_t)i * GR * GD * 2), GD, 0, warp, lane, xf4, c0, c1, c2, c3);
              put_part(part, (t + i - ts) * GR, warp, lane, c0, c1, c2, c3);
            }
            __syncwarp();
            if (lane == 0) mbar_arrive(&empty[slot]);
            ++it;
            t += n;
          }
          cons_sync();
          for (int i = tid; i < (te - ts) * GR; i += NCONS * 32) {
            atomicAdd(&m.h[((ts + i / GR) % RG) * GR + i % GR], psum(part + i * KP));
          }
        }
        tmark(5);
#pragma unroll
        for (int k = 0; k < 4; ++k) {  // the last MLP's sums into h (the block's rows)
          const int r = hr0 + tid + k * NCONS * 32;
          if (r < hr1) { atomicAdd(&m.h[r], hdv[k]); m.hd[r] = 0.f; }
        }
      } else {
        // ---- the op's input, in shared memory as fp32: every load issued before any is used
        const int K = op.K, nch = K / 4;
        const int G = op.R / GR, g0 = (int)((long)b * G / nb), g1 = (int)((long)(b + 1) * G / nb);
        const int r0 = g0 * GR, r1 = g1 * GR;
        uint32_t* xfw = reinterpret_cast<uint32_t*>(xs);
        const bool norm = op.kind == QKV || op.kind == GATEUP || op.kind == LMHEAD || op.kind == MLP;
        const bool resid = op.kind == OPROJ || op.kind == DOWN;
        float rv = 0.f;
        if (resid && tid < r1 - r0) rv = LL && op.layer == 0 ? bf2f(emb[r0 + tid]) : __ldcg(&hs[r0 + tid]);
        float ss = 0.f;
        float4 v[XCH];
        for (int c0 = 0; c0 < nch; c0 += XCH * NCONS * 32) {  // rounds of XCH float4 per thread
          // (normed inputs, K = H, take one round: their parts are stored after the norm)
          if (op.kind == QKV && op.layer == 0) {
            const uint2* e = reinterpret_cast<const uint2*>(emb);
#pragma unroll
            for (int j = 0; j < XCH; ++j) {
              int c = c0 + tid + j * NCONS * 32;
              if (c < nch) {
                uint2 q = e[c];
                float2 a = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&q.x));
                float2 bb = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&q.y));
                v[j] = make_float4(a.x, a.y, bb.x, bb.y);
              }
            }
          } else if (op.kind == DOWN) {
            const float4* g4 = reinterpret_cast<const float4*>(m.gu);
            const float4* u4 = reinterpret_cast<const float4*>(m.gu + m.I);
            float4 u[XCH];
#pragma unroll
            for (int j = 0; j < XCH; ++j) {
              int c = c0 + tid + j * NCONS * 32;
              if (c < nch) { v[j] = __ldcg(g4 + c); u[j] = __ldcg(u4 + c); }
            }
#pragma unroll
            for (int j = 0; j < XCH; ++j) {
              v[j].x = v[j].x / (1.f + __expf(-v[j].x)) * u[j].x;
              v[j].y = v[j].y / (1.f + __expf(-v[j].y)) * u[j].y;
              v[j].z = v[j].z / (1.f + __expf(-v[j].z)) * u[j].z;
              v[j].w = v[j].w / (1.f + __expf(-v[j].w)) * u[j].w;
            }
#if LL
          } else if (op.kind == OPROJ || op.kind == MLP) {  // the words, all loads issued, then each spun on
            const unsigned long long* ls = op.kind == OPROJ ? m.attnl : m.hml;
            const uint32_t ep = (uint32_t)(step * m.L + op.layer + 1);
            uint32_t ok = 0;  // bit j: chunk j's four words carried the epoch
#pragma unroll
            for (int j = 0; j < XCH; ++j) {
              int c = c0 + tid + j * NCONS * 32;
              if (c < nch) ok |= (uint32_t)ll_get4(ls + 4 * c, ep, v[j]) << j;
            }
#pragma unroll
            for (int j = 0; j < XCH; ++j) {
              int c = c0 + tid + j * NCONS * 32;
              if (c < nch && !((ok >> j) & 1)) while (!ll_get4(ls + 4 * c, ep, v[j])) {}
            }
#endif
          } else {
            const float4* src = reinterpret_cast<const float4*>(
                op.kind == OPROJ ? m.attn : (op.kind == MLP && !m.omerge) ? m.hm : hs);
#pragma unroll
            for (int j = 0; j < XCH; ++j) {
              int c = c0 + tid + j * NCONS * 32;
              if (c < nch) v[j] = __ldcg(src + c);
            }
            if (m.omerge && (op.kind == QKV || op.kind == LMHEAD)) {  // the residual is h + hd
              const float4* hd4 = reinterpret_cast<const float4*>(m.hd);
#pragma unroll
              for (int j = 0; j < XCH; ++j) {
                int c = c0 + tid + j * NCONS * 32;
                if (c < nch) {
                  const float4 e = __ldcg(hd4 + c);
                  v[j].x += e.x; v[j].y += e.y; v[j].z += e.z; v[j].w += e.w;
                }
              }
            }
          }
#pragma unroll
          for (int j = 0; j < XCH; ++j) {
            int c = c0 + tid + j * NCONS * 32;
            if (c < nch) {
              ss += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
              if (!norm) store_frag(xfw, v[j], c, 1.f);
            }
          }
        }
        float scale = 1.f;
        if (norm) {  // RMSNorm (weight 1)
          for (int d = 16; d; d >>= 1) ss += __shfl_xor_sync(0xffffffff, ss, d);
          if (lane == 0) red[warp] = ss;
          cons_sync();
          float tot = 0.f;
          for (int w = 0; w < NCONS; ++w) tot += red[w];
          scale = rsqrtf(tot / K + 1e-6f);
#pragma unroll
          for (int j = 0; j < XCH; ++j) {
            int c = tid + j * NCONS * 32;
            if (c < nch) store_frag(xfw, v[j], c, scale);
          }
        }
        if (resid && tid < r1 - r0) rbuf[tid] = rv;
        cons_sync();
        if (op.kind == MLP) {
          // gate/up tiles of the block's 16-row groups j0..j1 (as GATEUP's: warp (rs, ks) takes
          // rows rs*8.. of each group over k quarter ks), act = silu(g) * u, then the down
          // columns of those groups: thread t adds act . Wd[n][group] for n = t + 256 rr
          const uint4* xf4 = reinterpret_cast<const uint4*>(xs);
          const int nc = (K + CW - 1) / CW;
          const int GI = m.I / GR, j0 = (int)((long)b * GI / nb), j1 = (int)((long)(b + 1) * GI / nb);
          ts2 = gtime();
          for (int j = j0; j < j1; ++j)
            for (int half = 0; half < 2; ++half) {
              float c0 = 0.f, c1 = 0.f, c2 = 0.f, c3 = 0.f;
              for (int c = 0; c < nc; ++c, ++it) {
                int slot = it % S, cw = min(CW, K - c * CW);
                mbar_wait(&full[slot], (it / S) & 1);
                tile_mv(s32(ring + (size_t)slot * m.stage), cw, c, warp, lane, xf4, c0, c1, c2, c3);
                __syncwarp();
                if (lane == 0) mbar_arrive(&empty[slot]);
              }
              put_part(part, ((j - j0) * 2 + half) * GR, warp, lane, c0, c1, c2, c3);
            }
          cons_sync();
          float* act = xs;  // (the input fragments are no longer read)
          for (int i = tid; i < (j1 - j0) * GR; i += NCONS * 32) {
            const float* pg = part + ((i / GR) * 2 * GR + i % GR) * KP;
            float g = psum(pg), u = psum(pg + GR * KP);
            act[i] = g / (1.f + __expf(-g)) * u;
          }
          cons_sync();
          constexpr int RN = 16;  // H <= 4096
          float dacc[RN];
#pragma unroll
          for (int rr = 0; rr < RN; ++rr) dacc[rr] = 0.f;
          for (int j = j0; j < j1; ++j) {
            float a[16];
#pragma unroll
            for (int e = 0; e < 16; ++e) a[e] = act[(j - j0) * GR + e];
            for (int s0 = 0; s0 < m.H; s0 += 1024, ++it) {
              int slot = it % S, cnt = min(1024, m.H - s0);
              mbar_wait(&full[slot], (it / S) & 1);
              const uint4* wt = reinterpret_cast<const uint4*>(ring + (size_t)slot * m.stage);
#pragma unroll
              for (int rr = 0; rr < RN; ++rr) {
                int nl = rr * 256 + tid - s0;
                if (nl >= 0 && nl < cnt) {
                  uint4 w0 = wt[nl * 2], w1 = wt[nl * 2 + 1];
                  const __nv_bfloat162* p0 = reinterpret_cast<const __nv_bfloat162*>(&w0);
                  const __nv_bfloat162* p1 = reinterpret_cast<const __nv_bfloat162*>(&w1);
                  float sum = 0.f;
#pragma unroll
                  for (int e = 0; e < 4; ++e) {
                    float2 f = __bfloat1622float2(p0[e]), g = __bfloat1622float2(p1[e]);
                    sum += f.x * a[2 * e] + f.y * a[2 * e + 1] + g.x * a[8 + 2 * e] + g.y * a[9 + 2 * e];
                  }
                  dacc[rr] += sum;
                }
              }
              __syncwarp();
              if (lane == 0) mbar_arrive(&empty[slot]);
            }
          }
          // ---- fan-in of the down partial sums into the residual h (omerge: hd) ----
          float* mlp_out = m.omerge ? m.hd : hs;
          if (m.cl <= 1) {
#pragma unroll
            for (int rr = 0; rr < RN; ++rr) {
              int n = rr * 256 + tid;
              if (n < m.H) atomicAdd(&mlp_out[n], dacc[rr]);
            }
          } else {  // through the cluster: rank q sums slice q of every CTA's partial, then adds it
            const int C = m.cl, slice = m.H / C;
            const uint32_t rank = cluster_rank(), rbase = s32(recv);
#pragma unroll
            for (int rr = 0; rr < RN; ++rr) {
              int n = rr * 256 + tid;
              if (n < m.H) {
                int owner = n / slice;
                st_cluster(mapa(rbase + 4u * (rank * slice + (n - owner * slice)), owner), dacc[rr]);
              }
            }
            cons_sync();
            if (tid < C) mbar_arrive_remote(mapa(s32(cbar), tid));
            while (!mbar_try_cluster(cbar, mlp_phase & 1)) {}
            for (int i = tid * 4; i < slice; i += NCONS * 32 * 4) {
              float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
              for (int qq = 0; qq < C; ++qq) {
                float4 w = *reinterpret_cast<const float4*>(recv + qq * slice + i);
                v.x += w.x; v.y += w.y; v.z += w.z; v.w += w.w;
              }
              red_add_v4(mlp_out + rank * slice + i, v);
            }
          }
          ++mlp_phase;
        } else {
        // ---- the tiles: warp (rs, ks) computes rows rs*8.. +8 of each 16-row group over the
        // k quarter ks of each chunk; partial sums per (row, quarter) reduced at the op's end
        const uint4* xf4 = reinterpret_cast<const uint4*>(xs);
        const int nc = (K + CW - 1) / CW;
        float bv = -INFINITY; int bi = 0x7fffffff;
        ts2 = gtime();
        if (op.kind == OPROJ) tmark(4);
        for (int g = g0; g < g1; ++g) {
          float c0 = 0.f, c1 = 0.f, c2 = 0.f, c3 = 0.f;
          for (int c = 0; c < nc; ++c, ++it) {
            int slot = it % S, cw = min(CW, K - c * CW);
            if (op.kind == OPROJ && g == g1 - 1 && c == nc - 1 && (g > g0 || c > 0)) tmark(17);
            mbar_wait(&full[slot], (it / S) & 1);
            if (op.kind == OPROJ && g == g0 && c == 0) tmark(14);
            if (op.kind == OPROJ && g == g1 - 1 && c == nc - 1) tmark(16);
            if (m.mode != 1 && m.mode != 3) {
              tile_mv(s32(ring + (size_t)slot * m.stage), cw, c, warp, lane, xf4, c0, c1, c2, c3);
            }
            __syncwarp();
            if (lane == 0) mbar_arrive(&empty[slot]);
          }
          put_part(part, (g - g0) * GR, warp, lane, c0, c1, c2, c3);
        }
        cons_sync();
        for (int gr = r0 + tid; gr < r1; gr += NCONS * 32) {
          float acc = psum(part + (gr - r0) * KP);
#if LL
          if (op.kind == QKV) ll_put(&m.qkvl[gr], acc, (uint32_t)(step * m.L + op.layer + 1));
#else
          if (op.kind == QKV) m.qkv[gr] = acc;
#endif
          else if (op.kind == GATEUP) m.gu[gr] = acc;
          else if (op.kind == LMHEAD) { if (acc > bv || (acc == bv && gr < bi)) { bv = acc; bi = gr; } }
          else {
#if LL  // h: an add (the MLP's adds into h may reach it first: no flag orders them after this)
            atomicAdd(&hs[gr], op.layer == 0 ? rbuf[gr - r0] + acc : acc);
            ll_put(&m.hml[gr], rbuf[gr - r0] + acc, (uint32_t)(step * m.L + op.layer + 1));
#else
            m.h[gr] = rbuf[gr - r0] + acc;
            if (m.fuse) m.hm[gr] = rbuf[gr - r0] + acc;
#endif
          }
        }
        if (op.kind == LMHEAD) {
          for (int d = 16; d; d >>= 1) {
            float v = __shfl_xor_sync(0xffffffff, bv, d); int ix = __shfl_xor_sync(0xffffffff, bi, d);
            if (v > bv || (v == bv && ix < bi)) { bv = v; bi = ix; }
          }
          cons_sync();
          if (lane == 0) { red[warp] = bv; ired[warp + 8] = bi; }
          cons_sync();
          if (tid == 0) {
            bv = red[0]; bi = ired[8];
            for (int w = 1; w < NCONS; ++w)
              if (red[w] > bv || (red[w] == bv && ired[w + 8] < bi)) { bv = red[w]; bi = ired[w + 8]; }
            m.best_val[b] = bv; m.best_idx[b] = bi;
          }
        }
        }  // (not MLP)
      }
      // ---- release ----
      ts3 = gtime();
      if (op.kind == OPROJ && !m.omerge) tmark(5);
      cons_sync();
      if (op.kind == OPROJ) tmark(18);
      if (tid == 0) {
#ifdef OLD_FENCE  // (to session 31; the release add is cumulative over the block's writes seen through bar.sync,
        __threadfence();  // and the fence before it cost 1.4 us more per release: session 32 run 18)
#endif
        if (op.kind == OPROJ) tmark(19);
#ifdef RELAXED_REL  // timing only: no ordering of the op's stores before the flag (an upper bound for a flag-in-data protocol)
        asm volatile("red.relaxed.gpu.global.add.s32 [%0], 1;" :: "l"(&m.flags[o]) : "memory");
#else
        if (LL && (op.kind == QKV || op.kind == ATTN || op.kind == OPROJ))  // (their readers spin on LL words)
          asm volatile("red.relaxed.gpu.global.add.s32 [%0], 1;" :: "l"(&m.flags[o]) : "memory");
        else
        asm volatile("red.release.gpu.global.add.s32 [%0], 1;" :: "l"(&m.flags[o]) : "memory");
#endif
        if (op.kind == OPROJ) tmark(6);
        if (op.kind == MLP) tmark(8);
        if (b == 0 && m.phases) {
          unsigned long long ts4 = gtime();
          int kd = op.kind == MLP ? GATEUP : op.kind;
          atomicAdd(&m.phases[kd * 4 + 0], ts1 - ts0); atomicAdd(&m.phases[kd * 4 + 1], ts2 - ts1);
          atomicAdd(&m.phases[kd * 4 + 2], ts3 - ts2); atomicAdd(&m.phases[kd * 4 + 3], ts4 - ts3);
        }
      }
    }
  }
  if (tid == 0 && b == 0 && m.phases) {  // this SM's clock rate over the run
    m.phases[24] = clock64() - clk0; m.phases[25] = gtime() - ns0;
  }
  // the last step's token
  if (tid == 0 && b == 0) {
    while (!m.nodeps && ld_acquire(&m.flags[nops - 1]) < m.steps * nb) {}
    float bv = -INFINITY; int bi = 0x7fffffff;
    for (int i = 0; i < nb; ++i) {
      float v = __ldcg(&m.best_val[i]); int ix = __ldcg(&m.best_idx[i]);
      if (v > bv || (v == bv && ix < bi)) { bv = v; bi = ix; }
    }
    m.tokens[m.steps - 1] = bi;
  }
}

// ---------------- reference: one naive kernel per op ----------------
__global__ void ref_matvec(const bf16* W, const float* x, float* out, int R, int K, int residual) {
  int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= R) return;
  float acc = 0.f;
  for (int k = lane; k < K; k += 32) acc += bf2f(W[tiled(row, k, K)]) * x[k];
  for (int d = 16; d; d >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, d);
  if (lane == 0) out[row] = residual ? out[row] + acc : acc;
}
__global__ void ref_norm(const float* v, float* x, int K) {  // one block of 256
  __shared__ float red[8];
  float ss = 0.f;
  for (int i = threadIdx.x; i < K; i += 256) ss += v[i] * v[i];
  for (int d = 16; d; d >>= 1) ss += __shfl_xor_sync(0xffffffff, ss, d);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = ss;
  __syncthreads();
  float tot = 0.f;
  for (int w = 0; w < 8; ++w) tot += red[w];
  float rstd = rsqrtf(tot / K + 1e-6f);
  for (int i = threadIdx.x; i < K; i += 256) x[i] = v[i] * rstd;
}
__global__ void ref_embed(const bf16* emb, const int* tok, float* h, int H) {
  for (int i = threadIdx.x; i < H; i += blockDim.x) h[i] = bf2f(emb[(long)(*tok) * H + i]);  // plain layout
}
__global__ void ref_act(const float* gu, float* x, int I) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < I; i += gridDim.x * blockDim.x) {
    float g = gu[i]; x[i] = g / (1.f + __expf(-g)) * gu[I + i];
  }
}
__global__ void ref_copy(const float* a, float* b, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) b[i] = a[i];
}
__global__ void ref_argmax(const float* logits, int V, int* tok, float* gap) {  // one block of 1024
  __shared__ float bvs[32]; __shared__ int bis[32];
  float bv = -INFINITY; int bi = 0x7fffffff;
  for (int i = threadIdx.x; i < V; i += 1024) if (logits[i] > bv) { bv = logits[i]; bi = i; }
  for (int d = 16; d; d >>= 1) {
    float v = __shfl_xor_sync(0xffffffff, bv, d); int ix = __shfl_xor_sync(0xffffffff, bi, d);
    if (v > bv || (v == bv && ix < bi)) { bv = v; bi = ix; }
  }
  if (threadIdx.x % 32 == 0) { bvs[threadIdx.x / 32] = bv; bis[threadIdx.x / 32] = bi; }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 0; w < 32; ++w) if (bvs[w] > bv || (bvs[w] == bv && bis[w] < bi)) { bv = bvs[w]; bi = bis[w]; }
    float second = -INFINITY;
    for (int i = 0; i < V; ++i) if (i != bi && logits[i] > second) second = logits[i];
    *tok = bi; *gap = bv - second;
  }
}
__global__ void ref_append(const float* qkv, bf16* kc, bf16* vc, int Q, int KV, int D, int nKV, int maxlen,
                           int l, int pos) {
  for (int i = threadIdx.x; i < KV; i += blockDim.x) {
    long off = (((long)l * nKV + i / D) * maxlen + pos) * D + kv_col(pos, i % D);
    kc[off] = __float2bfloat16(qkv[Q + i]); vc[off] = __float2bfloat16(qkv[Q + KV + i]);
  }
}
// ROPE: q heads then k heads in place, one block each: per-head RMSNorm with weights (qkn), then RoPE
// (HF rotate_half: out[d] = x[d] cos_j -/+ x[d +/- D/2] sin_j, j = d % (D / 2))
__global__ void ref_rope(float* qkv, const float* rope, const float* qnw, const float* knw, int Q, int D, int pos,
                         int qkn, int l) {
  __shared__ float xs[256];
  __shared__ float r;
  const int hh = blockIdx.x;
  const bool isq = hh < Q / D;
  float* x = qkv + (long)hh * D;  // (the k heads follow the q heads: Q + (hh - Q / D) * D)
  const float* w = (isq ? qnw : knw) + (long)l * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) xs[d] = x[d];
  __syncthreads();
  if (threadIdx.x == 0) {
    float ss = 0.f;
    for (int d = 0; d < D; ++d) ss += xs[d] * xs[d];
    r = qkn ? rsqrtf(ss / D + 1e-6f) : 1.f;
  }
  __syncthreads();
  const int h = D / 2;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const int pd = d < h ? d + h : d - h, j = d % h;
    const float c = rope[(long)pos * D + j], sn = rope[(long)pos * D + h + j];
    const float xn = xs[d] * r * (qkn ? w[d] : 1.f), yn = xs[pd] * r * (qkn ? w[pd] : 1.f);
    x[d] = d < h ? xn * c - yn * sn : xn * c + yn * sn;
  }
}
__global__ void ref_attn(const float* qkv, const bf16* kc, const bf16* vc, float* out, int D, int G, int nKV,
                         int maxlen, int l, int pos) {  // one block per q head, keys 0..pos
  extern __shared__ float rsc[];
  __shared__ float rmx, rsum;
  const int hq = blockIdx.x, g = hq / G;
  const float* q = qkv + (long)hq * D;
  const long base = ((long)l * nKV + g) * maxlen;
  const float scale = rsqrtf((float)D);
  for (int j = threadIdx.x; j <= pos; j += blockDim.x) {
    float a = 0.f;
    for (int d = 0; d < D; ++d) a += q[d] * scale * bf2f(kc[(base + j) * D + kv_col(j, d)]);
    rsc[j] = a;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float M = -1e30f, S = 0.f;
    for (int j = 0; j <= pos; ++j) M = fmaxf(M, rsc[j]);
    for (int j = 0; j <= pos; ++j) S += __expf(rsc[j] - M);
    rmx = M; rsum = S;
  }
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.f;
    for (int j = 0; j <= pos; ++j) o += __expf(rsc[j] - rmx) * bf2f(vc[(base + j) * D + kv_col(j, d)]);
    out[(long)hq * D + d] = o / rsum;
  }
}
// Wdown (tiled, H x I) -> [L][I / 16][H][16]: the 16 columns of a group contiguous per row
__global__ void make_wdf(const bf16* wd, bf16* wdf, int H, int I, int L) {
  long total = (long)L * H * I, per = (long)H * I;
  for (long x = blockIdx.x * (long)blockDim.x + threadIdx.x; x < total; x += (long)gridDim.x * blockDim.x) {
    long l = x / per, r = x % per;
    int j = (int)(r / (16L * H)), n = (int)((r / 16) % H), e = (int)(r % 16);
    wdf[x] = wd[l * per + tiled(n, j * 16 + e, I)];
  }
}
// omerge: Wo (tiled, H x Q) -> [L][nKV * H][GD] tiled: row g * H + n holds Wo[n][g * GD .. + GD]
__global__ void make_wof(const bf16* wo, bf16* wof, int H, int Q, int GD, int L) {
  long total = (long)L * H * Q, per = (long)H * Q;
  for (long x = blockIdx.x * (long)blockDim.x + threadIdx.x; x < total; x += (long)gridDim.x * blockDim.x) {
    long l = x / per, r = x % per;
    int row = (int)(r / GD), k = (int)(r % GD), g = row / H, n = row % H;
    wof[l * per + tiled(row, k, GD)] = wo[l * per + tiled(n, g * GD + k, Q)];
  }
}
__global__ void fill_random(bf16* w, long n, uint32_t seed, float scale) {
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
    uint32_t x = (uint32_t)((unsigned long long)i * 2654435761ull) ^ seed; x ^= x >> 13; x *= 0x5bd1e995; x ^= x >> 15;
    uint32_t y = x * 1103515245u + 12345u; y ^= y >> 16;
    float u1 = ((x >> 8) + 1) * (1.f / 16777217.f), u2 = (y >> 8) * (1.f / 16777216.f);
    w[i] = __float2bfloat16(scale * sqrtf(-2.f * logf(u1)) * cosf(6.2831853f * u2));
  }
}

int main(int argc, char** argv) {
  std::string name = argc > 1 ? argv[1] : "qwen3-1.7b";
  int steps = argc > 2 ? atoi(argv[2]) : 100, attn_ns = argc > 3 ? atoi(argv[3]) : 0;
  int stages = argc > 4 ? atoi(argv[4]) : 6;
  int stage_kb = argc > 5 ? atoi(argv[5]) : 32, nodeps = argc > 6 ? atoi(argv[6]) : 0, hint = argc > 7 ? atoi(argv[7]) : 1, mode = argc > 8 ? atoi(argv[8]) : 0;
  const int fuse = argc > 9 ? atoi(argv[9]) : 0, cl = argc > 10 ? atoi(argv[10]) : 1;
  const int ctx = argc > 11 ? atoi(argv[11]) : 0;
  const int asplit = argc > 12 ? atoi(argv[12]) : 0, amode = argc > 13 ? atoi(argv[13]) : 0;
  const int aimpl = argc > 14 ? atoi(argv[14]) : AIMPL, omerge = argc > 15 ? atoi(argv[15]) : 0;
  const int pkv = argc > 16 ? atoi(argv[16]) : 0;
  Model m{};
  m.D = (name == "qwen3-1.7b" || name == "qwen3-8b") ? 128 : 64;
  if (name == "qwen3-1.7b") { m.H = 2048; m.Q = 2048; m.KV = 1024; m.I = 6144; m.L = 28; m.V = 151936; }
  else if (name == "llama-3.2-1b") { m.H = 2048; m.Q = 2048; m.KV = 512; m.I = 8192; m.L = 16; m.V = 128256; }
  else if (name == "smollm2-135m") { m.H = 576; m.Q = 576; m.KV = 192; m.I = 1536; m.L = 30; m.V = 49152; }
  else if (name == "qwen3-8b") { m.H = 4096; m.Q = 4096; m.KV = 1024; m.I = 12288; m.L = 36; m.V = 151936; }
  else { fprintf(stderr, "unknown shape %s\n", name.c_str()); return 2; }
  cudaDeviceProp prop; CK(cudaGetDeviceProperties(&prop, 0));
  m.fuse = fuse; m.cl = fuse ? cl : 1;
  if (aimpl != AIMPL) { fprintf(stderr, "aimpl %d: this binary was built with -DAIMPL=%d\n", aimpl, AIMPL); return 2; }
  if (aimpl && (m.G > 4 || (m.D != 64 && m.D != 128))) { fprintf(stderr, "aimpl 1, 2: G <= 4, D 64 or 128\n"); return 2; }
  m.ctx = ctx; m.nKV = m.KV / m.D; m.G = m.Q / m.D / m.nKV; m.ck = 16384 / (2 * m.D); m.maxlen = ctx + steps + 1;
  m.qkn = name.rfind("qwen3", 0) == 0;
  if (ROPE && ctx) {  // cos / sin per position (theta as the models'), q/k norm weights near 1 (a fixed LCG)
    if (m.G * m.D > NCONS * 32) { fprintf(stderr, "ROPE: G * D > %d (qwen3-8b): build -DROPE=0\n", NCONS * 32); return 2; }
    const double theta = name == "llama-3.2-1b" ? 500000.0 : name == "smollm2-135m" ? 100000.0 : 1000000.0;
    std::vector<float> rt((size_t)m.maxlen * m.D), nw((size_t)2 * m.L * m.D);
    for (int p = 0; p < m.maxlen; ++p)
      for (int j = 0; j < m.D / 2; ++j) {
        const double a = p * std::pow(theta, -2.0 * j / m.D);
        rt[(size_t)p * m.D + j] = (float)std::cos(a); rt[(size_t)p * m.D + m.D / 2 + j] = (float)std::sin(a);
      }
    uint32_t lcg = 12345u;
    for (auto& x : nw) { lcg = lcg * 1664525u + 1013904223u; x = 1.f + 0.2f * ((lcg >> 8) / 16777216.f - 0.5f); }
    float* rb; CK(cudaMalloc(&rb, sizeof(float) * (rt.size() + nw.size())));
    CK(cudaMemcpy(rb, rt.data(), sizeof(float) * rt.size(), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(rb + rt.size(), nw.data(), sizeof(float) * nw.size(), cudaMemcpyHostToDevice));
    m.rope = rb; m.qnw = rb + rt.size(); m.knw = m.qnw + (size_t)m.L * m.D;
  }
  if (ctx && m.G * m.D > 2 * NCONS * 32) { fprintf(stderr, "attention: G * D > 512\n"); return 2; }
  if (omerge != 0 && omerge != 1) { fprintf(stderr, "omerge: 0 or 1 (2 was removed in session 32)\n"); return 2; }
  m.omerge = omerge; m.pkv = pkv;
  if (omerge && (!fuse || !ctx || (m.G * m.D) % 64 || m.G * m.D > 1024)) {
    fprintf(stderr, "omerge: needs fuse, ctx > 0 and G * D a multiple of 64 up to 1024\n"); return 2;
  }
  m.nb = prop.multiProcessorCount; m.steps = steps;
  if (m.cl > 1) m.nb = m.nb / m.cl * m.cl;  // whole clusters (132 SMs: 128 blocks at cluster 16) m.attn_ns = attn_ns; m.first_token = 17;
  (void)stage_kb;
  m.stages = stages; m.stage = GR * CW * 2; m.nodeps = 0; m.hint = hint;
  long nqkv = (long)m.L * (m.Q + 2 * m.KV) * m.H, no = (long)m.L * m.H * m.Q;
  long ngu = (long)m.L * 2 * m.I * m.H, nd = (long)m.L * m.H * m.I, nlm = (long)m.V * m.H;
  long nw = nqkv + no + ngu + nd + nlm;
  bf16* w; CK(cudaMalloc(&w, (nw + nlm) * 2));
  fill_random<<<1024, 256>>>(w, nw, 1234u, 0.02f);
  fill_random<<<1024, 256>>>(w + nqkv + no + ngu + nd, nlm, 777u, 1.0f);  // LM head
  fill_random<<<1024, 256>>>(w + nw, nlm, 999u, 1.0f);  // embedding (plain layout)
  CK(cudaGetLastError());
  m.wqkv = w; m.wo = w + nqkv; m.wgu = m.wo + no; m.wd = m.wgu + ngu; m.wlm = m.wd + nd; m.emb = w + nw;
  if (fuse) {
    bf16* wdf; CK(cudaMalloc(&wdf, nd * 2));
    make_wdf<<<1024, 256>>>(m.wd, wdf, m.H, m.I, m.L);
    CK(cudaGetLastError());
    m.wdf = wdf;
  }
  if (omerge) {
    bf16* wof; CK(cudaMalloc(&wof, no * 2));
    make_wof<<<1024, 256>>>(m.wo, wof, m.H, m.Q, m.G * m.D, m.L);
    CK(cudaGetLastError());
    m.wof = wof;
    CK(cudaMalloc(&m.hd, sizeof(float) * m.H));
    CK(cudaMemset(m.hd, 0, sizeof(float) * m.H));
  }
  float* fbuf; CK(cudaMalloc(&fbuf, sizeof(float) * (2 * m.H + m.Q + 2 * m.KV + m.Q + 2 * m.I + m.nb + 2 * 16384 + m.V + 8 + m.H)));
  m.h = fbuf; m.qkv = m.h + 2 * m.H; m.attn = m.qkv + m.Q + 2 * m.KV; m.gu = m.attn + m.Q; m.best_val = m.gu + 2 * m.I;
  // (h: two residuals, LL's step parity)
  float* rx = m.best_val + m.nb; float* rlog = rx + 2 * 16384; float* rgap = rlog + m.V;
  m.hm = rgap + 8;
  int* ibuf; CK(cudaMalloc(&ibuf, sizeof(int) * (m.nb + 8 * m.L + 8 + 2 * steps + 4)));
  long nkv = ctx ? (long)m.L * m.nKV * m.maxlen * m.D : 8;
  bf16* kvbuf; CK(cudaMalloc(&kvbuf, 2 * nkv * 2));
  m.kc = kvbuf; m.vc = kvbuf + nkv;
  fill_random<<<1024, 256>>>(kvbuf, 2 * nkv, 4242u, 1.0f);
  float* abuf; CK(cudaMalloc(&abuf, sizeof(float) * (long)m.nb * m.G * (m.D + 2) + 64));
  m.apart = abuf; m.aml = abuf + (long)m.nb * m.G * m.D;
  CK(cudaMalloc(&m.hcnt, sizeof(int) * m.L * m.nKV));
  m.best_idx = ibuf; m.flags = ibuf + m.nb; m.tokens = m.flags + 5 * m.L + 1;
  int* rtok = m.tokens + steps;
  {  // shared memory: the input vector and the split rows' partial sums, per op
    int Rs[4] = {m.Q + 2 * m.KV, m.H, 2 * m.I, m.V}, Ks[4] = {m.H, m.Q, m.H, m.H};
    m.maxk = m.I > m.H ? m.I : m.H; if (m.Q > m.maxk) m.maxk = m.Q;
    if (fuse) m.maxk = m.H > m.Q ? m.H : m.Q;  // (no DOWN op: the MLP's act is a few groups)
    m.maxpart = 64;
    if (ctx) m.maxpart = m.G * m.D + 2 * m.D + 3 * m.G + m.G * (m.ck + 1) + 3 * m.G * (m.nb / m.nKV)
                         + 2 * NCONS * 32 * m.G + 8;  // (+ attn_sum_v2's KG x G x D)
    if (ctx) m.maxpart += 2 * NCONS * m.G + NCONS * m.G * m.D + 8 * m.D + 4;  // (attn_mma's warp states, q fragments)
    for (int j = 0; j < 5; ++j) {
      int R = j < 4 ? Rs[j] : m.H, G = R / GR, rows = (G + m.nb - 1) / m.nb * GR;
      if (rows * KP > m.maxpart) m.maxpart = rows * KP;
      if (R % GR) { fprintf(stderr, "rows %d not a multiple of %d\n", R, GR); return 2; }
    }
    int GI = m.I / GR, mrows = (GI + m.nb - 1) / m.nb * 2 * GR;  // MLP: gate + up rows per block
    if (fuse && mrows * KP > m.maxpart) m.maxpart = mrows * KP;
    int orows = ((m.H / GR) * m.nKV / m.nb + 2) * GR;  // omerge: O-proj rows per block (>= oproj_range's)
    if (omerge && orows * KP > m.maxpart) m.maxpart = orows * KP;
    if (omerge && 6 * NCONS * 32 > m.maxpart) m.maxpart = 6 * NCONS * 32;  // the merge's groups
    m.maxpart = (m.maxpart + 3) & ~3;  // what follows part (red .. recv, cbar) 16-byte aligned
    if (omerge && (m.H + m.nb - 1) / m.nb > 4 * NCONS * 32) { fprintf(stderr, "omerge: H / blocks > 1024\n"); return 2; }
    if (fuse && (m.H > 4096 || m.H % (4 * m.cl) || (m.nb % m.cl))) { fprintf(stderr, "fuse: bad H / cluster\n"); return 2; }
    (void)Ks;
  }
  size_t smem = (size_t)stages * m.stage + 2 * stages * 8 + sizeof(float) * (m.maxk + m.maxpart + 64) + 64 * 4 + NCONS * 32 * 4
                + sizeof(float) * ((m.H + 3) & ~3) + 16;
  if (smem > (size_t)prop.sharedMemPerBlockOptin) {
    fprintf(stderr, "shared memory %zu > %zu: use fewer stages\n", smem, (size_t)prop.sharedMemPerBlockOptin);
    return 2;
  }
  CK(cudaFuncSetAttribute(stream_chain, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  if (m.cl > 8) CK(cudaFuncSetAttribute(stream_chain, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  cudaLaunchConfig_t lc = {};
  cudaLaunchAttribute la[1];
  lc.gridDim = dim3(m.nb); lc.blockDim = dim3(NTHREADS); lc.dynamicSmemBytes = smem; lc.stream = 0;
  la[0].id = cudaLaunchAttributeClusterDimension;
  la[0].val.clusterDim.x = m.cl; la[0].val.clusterDim.y = 1; la[0].val.clusterDim.z = 1;
  lc.attrs = la; lc.numAttrs = 1;
  if (m.cl > 1) {  // a persistent kernel needs every cluster resident at once
    int maxc = 0;
    CK(cudaOccupancyMaxActiveClusters(&maxc, stream_chain, &lc));
    if (maxc * m.cl < m.nb) {
      fprintf(stderr, "clusters of %d: %d resident, %d blocks -> %d\n", m.cl, maxc, m.nb, maxc * m.cl);
      m.nb = maxc * m.cl; lc.gridDim = dim3(m.nb);
    }
  }
  m.S_split = asplit > 0 && asplit <= m.nb / m.nKV ? asplit : m.nb / m.nKV;
  if (LL && (!ctx || !fuse || omerge || amode)) {
    fprintf(stderr, "LL: needs ctx > 0, fuse, omerge 0 and amode 0\n"); return 2;
  }
  const size_t nll = (size_t)(m.Q + 2 * m.KV) + m.Q + m.H;
  unsigned long long* llbuf; CK(cudaMalloc(&llbuf, nll * 8));
  m.qkvl = llbuf; m.attnl = llbuf + m.Q + 2 * m.KV; m.hml = m.attnl + m.Q;
  auto launch = [&](Model mm) {
    CK(cudaMemset(m.hcnt, 0, sizeof(int) * m.L * m.nKV));
    if (LL) {  // (the epochs start again at 1 in every launch; h[0] is built by adds from zero)
      CK(cudaMemset(llbuf, 0, nll * 8)); CK(cudaMemset(m.h, 0, sizeof(float) * 2 * m.H));
    }
    CK(cudaLaunchKernelEx(&lc, stream_chain, mm));
  };

  // ---- reference: `steps` greedy steps with naive kernels ----
  if (ctx)  // (ref_attn keeps a head's scores in shared memory: past 48 KB at long contexts)
    CK(cudaFuncSetAttribute(ref_attn, cudaFuncAttributeMaxDynamicSharedMemorySize, (ctx + 17) * 4));
  int ref_steps = steps < 16 ? steps : 16;
  std::vector<int> ref_tokens(ref_steps);
  std::vector<float> gaps(ref_steps), h_ref(m.H);
  CK(cudaMemcpy(rtok, &m.first_token, 4, cudaMemcpyHostToDevice));
  for (int s = 0; s < ref_steps; ++s) {
    ref_embed<<<1, 256>>>(m.emb, rtok, m.h, m.H);
    for (int l = 0; l < m.L; ++l) {
      int R = m.Q + 2 * m.KV;
      ref_norm<<<1, 256>>>(m.h, rx, m.H);
      ref_matvec<<<(R + 7) / 8, 256>>>(m.wqkv + (long)l * R * m.H, rx, m.qkv, R, m.H, 0);
      if (ctx) {
#if ROPE
        ref_rope<<<(m.Q + m.KV) / m.D, 128>>>(m.qkv, m.rope, m.qnw, m.knw, m.Q, m.D, ctx + s, m.qkn, l);
#endif
        ref_append<<<1, 256>>>(m.qkv, m.kc, m.vc, m.Q, m.KV, m.D, m.nKV, m.maxlen, l, ctx + s);
        ref_attn<<<m.Q / m.D, 128, (ctx + s + 1) * 4>>>(m.qkv, m.kc, m.vc, m.attn, m.D, m.G, m.nKV, m.maxlen, l, ctx + s);
      } else {
        ref_copy<<<16, 256>>>(m.qkv, m.attn, m.Q);
      }
      ref_matvec<<<(m.H + 7) / 8, 256>>>(m.wo + (long)l * m.H * m.Q, m.attn, m.h, m.H, m.Q, 1);
      ref_norm<<<1, 256>>>(m.h, rx, m.H);
      ref_matvec<<<(2 * m.I + 7) / 8, 256>>>(m.wgu + (long)l * 2 * m.I * m.H, rx, m.gu, 2 * m.I, m.H, 0);
      ref_act<<<16, 256>>>(m.gu, rx, m.I);
      ref_matvec<<<(m.H + 7) / 8, 256>>>(m.wd + (long)l * m.H * m.I, rx, m.h, m.H, m.I, 1);
    }
    if (s == 0) CK(cudaMemcpy(h_ref.data(), m.h, 4 * m.H, cudaMemcpyDeviceToHost));
    ref_norm<<<1, 256>>>(m.h, rx, m.H);
    ref_matvec<<<(m.V + 7) / 8, 256>>>(m.wlm, rx, rlog, m.V, m.H, 0);
    ref_argmax<<<1, 1024>>>(rlog, m.V, rtok, rgap);
    CK(cudaMemcpy(&ref_tokens[s], rtok, 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(&gaps[s], rgap, 4, cudaMemcpyDeviceToHost));
  }
  CK(cudaGetLastError());

  // ---- the kernel: one step to check the residual, then all steps ----
  Model one = m; one.steps = 1;
  CK(cudaMemset(m.flags, 0, sizeof(int) * (5 * m.L + 1)));
  launch(one);
  CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
  std::vector<float> h1(m.H);
  CK(cudaMemcpy(h1.data(), m.h, 4 * m.H, cudaMemcpyDeviceToHost));
  if (omerge) {  // the residual is h + hd
    std::vector<float> hd1(m.H);
    CK(cudaMemcpy(hd1.data(), m.hd, 4 * m.H, cudaMemcpyDeviceToHost));
    for (int i = 0; i < m.H; ++i) h1[i] += hd1[i];
  }
  double num = 0, den = 0;
  for (int i = 0; i < m.H; ++i) { num += (h1[i] - h_ref[i]) * (double)(h1[i] - h_ref[i]); den += (double)h_ref[i] * h_ref[i]; }
  cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
  float best = 1e30f;
  m.nodeps = nodeps; m.mode = mode; m.amode = amode;  // (the one-step check above ran without them)
  for (int rep = 0; rep < 3; ++rep) {
    CK(cudaMemset(m.flags, 0, sizeof(int) * (5 * m.L + 1)));
    CK(cudaEventRecord(e0));
    launch(m);
    CK(cudaEventRecord(e1)); CK(cudaGetLastError()); CK(cudaEventSynchronize(e1));
    float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); if (ms < best) best = ms;
  }
  unsigned long long* ph; CK(cudaMalloc(&ph, 32 * 8)); CK(cudaMemset(ph, 0, 32 * 8));
  unsigned long long* trb; CK(cudaMalloc(&trb, (size_t)m.nb * TRW * 8)); CK(cudaMemset(trb, 0, (size_t)m.nb * TRW * 8));
  {
    Model tm = m; tm.phases = ph; tm.trace = trb;
    CK(cudaMemset(m.flags, 0, sizeof(int) * (5 * m.L + 1)));
    launch(tm);
    CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
  }
  unsigned long long hph[32]; CK(cudaMemcpy(hph, ph, 32 * 8, cudaMemcpyDeviceToHost));
  const double cps = hph[25] ? (double)hph[24] / hph[25] : 1.8;  // SM cycles per ns
  if (ctx)
    fprintf(stderr, "attention, block 0 (SM clock), us per step summed over layers: q staging %.1f / slot wait "
            "%.1f / scores %.1f / softmax %.1f / sum %.1f\n", hph[26] / cps / 1e3 / steps, hph[27] / cps / 1e3 / steps,
            hph[28] / cps / 1e3 / steps, hph[29] / cps / 1e3 / steps, hph[30] / cps / 1e3 / steps);
  fprintf(stderr, "SM clock during the traced run: %.0f MHz\n", hph[24] * 1e3 / (double)hph[25]);
  {  // one layer's events over the blocks, us after the first block's attention start
    std::vector<unsigned long long> tv((size_t)m.nb * TRW);
    CK(cudaMemcpy(tv.data(), trb, tv.size() * 8, cudaMemcpyDeviceToHost));
    unsigned long long t0 = ~0ull;
    for (int bb = 0; bb < m.nb; ++bb) if (tv[bb * TRW] && tv[bb * TRW] < t0) t0 = tv[bb * TRW];
    const char* en[20] = {"attn start", "split released", "merge done", "oproj waited", "oproj input",
                          "oproj tiles", "oproj release", "mlp waited", "mlp release", "prod kv wait", "prod kv waited",
                          "prod oproj", "prod mlp", "prod oproj all", "oproj slot 0", "attn q loaded", "oproj last slot",
                          "oproj last wait", "oproj rel synced", "oproj rel fenced"};
    fprintf(stderr, "one layer's events (step %d, layer %d), us after the first attention start: blocks min / median / max\n",
            m.steps / 2, m.L / 2);
    for (int e = 0; e < 20; ++e) {
      std::vector<double> x;
      for (int bb = 0; bb < m.nb; ++bb) if (tv[bb * TRW + e]) x.push_back((double)(long long)(tv[bb * TRW + e] - t0) / 1e3);
      if (x.empty()) continue;
      std::sort(x.begin(), x.end());
      fprintf(stderr, "  %-15s %4zu %8.2f %8.2f %8.2f\n", en[e], x.size(), x[0], x[x.size() / 2], x.back());
    }
  }
  const char* kn[6] = {"QKV", "ATTN", "OPROJ", "GATEUP", "DOWN", "LMHEAD"};
  fprintf(stderr, "phases, us per step summed over layers (block 0): wait / input / tiles / release\n");
  for (int k = 0; k < 6; ++k)
    fprintf(stderr, "  %-7s %8.1f %8.1f %8.1f %8.1f\n", kn[k], hph[k * 4] / 1e3 / steps, hph[k * 4 + 1] / 1e3 / steps,
            hph[k * 4 + 2] / 1e3 / steps, hph[k * 4 + 3] / 1e3 / steps);
  std::vector<int> toks(steps);
  CK(cudaMemcpy(toks.data(), m.tokens, 4 * steps, cudaMemcpyDeviceToHost));
  int same = 0, first_diff = -1;
  for (int s = 0; s < ref_steps; ++s) { if (toks[s] == ref_tokens[s]) ++same; else if (first_diff < 0) first_diff = s; }
  // ---- copy bandwidth in this run (bytes read + written) ----
  size_t cb = (size_t)1 << 31; void *ca, *cbuf; CK(cudaMalloc(&ca, cb)); CK(cudaMalloc(&cbuf, cb));
  float cbest = 1e30f;
  for (int rep = 0; rep < 5; ++rep) {
    CK(cudaEventRecord(e0)); CK(cudaMemcpy(cbuf, ca, cb, cudaMemcpyDeviceToDevice)); CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1)); float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); if (ms < cbest) cbest = ms;
  }
  double copy_bw = 2.0 * cb / (cbest * 1e-3);
  double kv_bytes = ctx ? 2.0 * m.L * m.nKV * (ctx + (steps - 1) / 2.0) * m.D * 2 : 0.0;
  double bytes = nw * 2.0 + kv_bytes, us = best * 1e3 / steps;
  double roof_us = bytes / copy_bw * 1e6;
  printf("{\"rope\": %d, \"qkn\": %d, \"ll\": %d, \"pkv\": %d, \"omerge\": %d, \"aimpl\": %d, \"splits\": %d, \"amode\": %d, \"fuse\": %d, \"cluster\": %d, \"shape\": \"%s\", \"steps\": %d, \"attn_ns\": %d, \"stages\": %d, \"stage_kb\": %d, \"nodeps\": %d, \"hint\": %d, \"mode\": %d, \"blocks\": %d, "
         "\"us_per_step\": %.1f, \"tok_per_s\": %.0f, \"ctx\": %d, \"kv_bytes\": %.0f, \"weight_bytes\": %.0f, \"copy_TBps\": %.3f, "
         "\"roofline_us\": %.1f, \"frac_roofline\": %.3f, \"resid_rel_err_step1\": %.2e, "
         "\"tokens_equal\": \"%d/%d\", \"first_diff\": %d, \"gap_at_first_diff\": %.4f, \"smem\": %zu}\n",
         ROPE && ctx, m.qkn && ROPE && ctx, LL, pkv, omerge, aimpl, m.S_split, amode, fuse, m.cl, name.c_str(), steps, attn_ns, stages, stage_kb, nodeps, hint, mode, m.nb, us, 1e6 / us, ctx, kv_bytes, nw * 2.0, copy_bw / 1e12, roof_us,
         roof_us / us, sqrt(num / den), same, ref_steps, first_diff,
         first_diff >= 0 ? gaps[first_diff] : 0.f, smem);
  return 0;
}
