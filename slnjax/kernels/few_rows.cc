// A matrix product for a few rows (a decoded token's batch), for XLA:CPU through the FFI.
//
//   out[R, N] = x[R, K] @ w[K, N],   R <= 8, N % 8 == 0,
//
// with w given packed as w_p[N/8, K, 8] (w_p[t, k, j] = w[k, 8t + j]): each 8-column tile is
// one contiguous block, so the weights are read once, front to back, by every thread.
// XLA:CPU's own kernels read an [8,512] x [512,50304] product's weights at 5-8 GB/s on a
// machine that streams 16-23 GB/s; they pack panels of the row-major matrix at every call.
// Each tile keeps R (<= 8) AVX2 accumulators, one per row; x is transposed to [K, R] first so
// that the R broadcasts of a k come from one cache line. One row adds into 4 partial sums
// over k and 2-4 rows into 2, so that the FMAs of a row do not wait on each other.
// The tiles are split into one contiguous range per thread of XLA's intra-op pool (fewer for
// a small product), run by ParallelFor.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kTile = 8;            // columns per tile: one AVX2 register
constexpr int64_t kPrefetch = 1024;  // floats ahead in a tile stream (4 KiB)

template <int R, int S>  // R rows, S partial sums over k per row (R * S <= 8)
void Tile(const float* xT, const float* wt, float* out, int64_t K, int64_t N, int64_t c0) {
  __m256 acc[R * S];
  for (int i = 0; i < R * S; ++i) acc[i] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + S <= K; k += S) {
    if (S > 1 || (k & 1) == 0)  // one prefetch per 64-byte line
      _mm_prefetch(reinterpret_cast<const char*>(wt + kTile * k + kPrefetch), _MM_HINT_T0);
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s) {
      const __m256 w = _mm256_loadu_ps(wt + kTile * (k + s));
      const float* xk = xT + R * (k + s);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
        acc[r * S + s] = _mm256_fmadd_ps(_mm256_broadcast_ss(xk + r), w, acc[r * S + s]);
    }
  }
  for (; k < K; ++k) {
    const __m256 w = _mm256_loadu_ps(wt + kTile * k);
    for (int r = 0; r < R; ++r)
      acc[r * S] = _mm256_fmadd_ps(_mm256_broadcast_ss(xT + R * k + r), w, acc[r * S]);
  }
  for (int r = 0; r < R; ++r) {
    __m256 sum = acc[r * S];
    for (int s = 1; s < S; ++s) sum = _mm256_add_ps(sum, acc[r * S + s]);
    _mm256_storeu_ps(out + r * N + c0, sum);
  }
}

using TileFn = void (*)(const float*, const float*, float*, int64_t, int64_t, int64_t);

TileFn TileFor(int64_t rows) {
  switch (rows) {
    case 1: return Tile<1, 4>;
    case 2: return Tile<2, 2>;
    case 3: return Tile<3, 2>;
    case 4: return Tile<4, 2>;
    case 5: return Tile<5, 1>;
    case 6: return Tile<6, 1>;
    case 7: return Tile<7, 1>;
    case 8: return Tile<8, 1>;
    default: return nullptr;
  }
}

// Runs fn(0) .. fn(n-1): the calling thread and n-1 tasks of XLA's intra-op pool claim the
// indices from an atomic counter, and the caller waits only for the ones already claimed
// (a task that starts late finds nothing left and touches nothing but the shared state).
template <typename Fn>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, Fn fn) {
  struct State {
    Fn fn;
    int64_t n;
    std::atomic<int64_t> next{0}, done{0};
    std::mutex mu;
    std::condition_variable cv;
    State(Fn f, int64_t count) : fn(std::move(f)), n(count) {}
  };
  auto st = std::make_shared<State>(std::move(fn), n);
  auto drain = [st] {
    for (int64_t i = st->next.fetch_add(1); i < st->n; i = st->next.fetch_add(1)) {
      st->fn(i);
      if (st->done.fetch_add(1) + 1 == st->n) {
        std::lock_guard<std::mutex> lock(st->mu);
        st->cv.notify_all();
      }
    }
  };
  for (int64_t i = 1; i < n; ++i) pool.Schedule([drain] { drain(); });
  drain();
  std::unique_lock<std::mutex> lock(st->mu);
  st->cv.wait(lock, [&] { return st->done.load() == st->n; });
}

// Splits `items` into at most as many contiguous ranges as XLA's pool has threads (the
// caller works too: with the pool sized to the cores, one task fewer than its threads), no
// range under `min_items`; returns the range length.
int64_t RangeLength(ffi::ThreadPool& pool, int64_t items, int64_t min_items) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t ranges = std::max<int64_t>(1, std::min(threads, items / min_items));
  return (items + ranges - 1) / ranges;
}

ffi::Error FewRowsMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                         ffi::Buffer<ffi::F32> w_packed, ffi::ResultBuffer<ffi::F32> out) {
  const auto xd = x.dimensions();
  const auto wd = w_packed.dimensions();
  if (xd.size() != 2 || wd.size() != 3 || wd[2] != kTile || wd[1] != xd[1])
    return ffi::Error::InvalidArgument(
        "few_rows_matmul: expected x [R,K] and packed weights [N/8,K,8].");
  const int64_t rows = xd[0], K = xd[1], tiles = wd[0], N = tiles * kTile;
  const TileFn tile = TileFor(rows);
  if (tile == nullptr)
    return ffi::Error::InvalidArgument("few_rows_matmul: 1 to 8 rows only.");
  std::vector<float> xT(rows * K);
  const float* xp = x.typed_data();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < K; ++k) xT[k * rows + r] = xp[r * K + k];
  const float* w = w_packed.typed_data();
  float* y = out->typed_data();
  // One contiguous range of tiles per thread, so that each streams its weights front to
  // back; small products (< 64 KiB a range) stay on fewer threads.
  const int64_t len = RangeLength(pool, tiles, std::max<int64_t>(1, 65536 / (K * kTile * 4)));
  ParallelFor(pool, (tiles + len - 1) / len, [=, xT = xT.data()](int64_t r) {
    for (int64_t t = r * len; t < std::min(tiles, (r + 1) * len); ++t)
      tile(xT, w + t * K * kTile, y, K, N, t * kTile);
  });
  return ffi::Error::Success();
}

// Packs w [K, N] into w_p [N/8, K, 8]. XLA:CPU's transpose for this took ~210 ms for
// Pythia-70M's weights (178 MB); here each thread takes a range of 64-tile blocks and, per
// row k, copies one contiguous 2 KiB stretch of w into 64 tile streams.
ffi::Error Pack(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> out) {
  const auto wd = w.dimensions();
  if (wd.size() != 2 || wd[1] % kTile)
    return ffi::Error::InvalidArgument("few_rows pack: expected w [K,N] with N % 8 == 0.");
  const int64_t K = wd[0], N = wd[1], tiles = N / kTile;
  constexpr int64_t kBlock = 64;  // tiles per block
  const int64_t blocks = (tiles + kBlock - 1) / kBlock;
  const float* src = w.typed_data();
  float* dst = out->typed_data();
  const int64_t len = RangeLength(pool, blocks, 1);
  ParallelFor(pool, (blocks + len - 1) / len, [=](int64_t r) {
    for (int64_t b = r * len; b < std::min(blocks, (r + 1) * len); ++b) {
      const int64_t t0 = b * kBlock, t1 = std::min(tiles, t0 + kBlock);
      for (int64_t k = 0; k < K; ++k) {
        const float* row = src + k * N;
        for (int64_t t = t0; t < t1; ++t)
          _mm256_storeu_ps(dst + (t * K + k) * kTile, _mm256_loadu_ps(row + t * kTile));
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SlnjaxFewRowsMatmul, FewRowsMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(SlnjaxFewRowsPack, Pack,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
