// upfirdn2d kernel logic: parameters, launch plan and the per-thread work.
//
// Each block computes a tile of `tile_h x tile_w` output pixels for
// `planes_per_block` consecutive (n, c) planes. It first copies the input
// pixels that tile reads (zero outside the image) and the filter into shared
// memory, then every thread sums the filter taps that land on input pixels
// for its outputs. Only the taps that hit a non-zero of the upsampled image
// are visited, so upsampling by 2 with a 4x4 filter costs 4 taps per output.
//
// The filter arrives as the user gave it (1-D separable or 2-D, in the
// accumulation type); the block expands it in shared memory to the 2-D
// cross-correlation taps c[ky][kx], flipped unless flip_filter and times the
// gain, so the caller launches nothing else. Output pixel (oy, ox) reads the
// zero-inserted, padded image at rows oy * down_y + ky, i.e. input row
// (oy * down_y + ky - pad_y0) / up_y when that is a whole number, for ky in [0, f_h).
#pragma once

#include "common.h"

namespace smallgan {

struct Upfirdn2dParams {
  const void* x;  // [batch, channels, in_h, in_w], strides x_stride
  const void* f;  // [f_h, f_w], or [f_w] when f_separable (f_h == f_w); contiguous, accumulation type
  void* y;        // [batch, channels, out_h, out_w], strides y_stride
  int64_t x_stride[4];
  int64_t y_stride[4];
  int batch, channels, in_h, in_w, out_h, out_w;
  int up_x, up_y, down_x, down_y, pad_x0, pad_y0;
  int f_w, f_h;
  int f_separable;  // f is 1-D: taps are f[ky] * f[kx]
  int flip_filter;  // 0: true convolution (reverse the taps), 1: correlation
  double gain;

  // Launch plan, filled by upfirdn2d_plan().
  int tile_w, tile_h;        // output pixels per tile
  int tile_in_w, tile_in_h;  // input pixels a tile can read (upper bound)
  int tiles_x, tiles_y;
  int planes_per_block, plane_groups;
  int threads;
  int64_t shared_bytes;
};

// Position of a tile: its first output pixel and the first input pixel it reads.
struct Upfirdn2dTile {
  int out_x0, out_y0, in_x0, in_y0;
};

SG_HD int upfirdn2d_tile_in(int tile_out, int down, int f, int up) {
  // Input pixels read by `tile_out` consecutive outputs: the multiples of `up`
  // in a window of (tile_out - 1) * down + f upsampled positions.
  return ((tile_out - 1) * down + f - 1) / up + 1;
}

// Whether the kernel's 32-bit index arithmetic covers a call. Memory is
// addressed with 64-bit offsets (the int64_t strides times each index), so
// the element count of the tensors is not limited; what must fit an int are
// the (n, c) plane count, a plane's pixel count (which bounds the tile count,
// the grid's x size) and the positions in the upsampled, padded image that
// upfirdn2d_tile and upfirdn2d_compute form (out * down - pad, in * up + pad).
inline bool upfirdn2d_sizes_fit(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w, int64_t out_h,
                                int64_t out_w, int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y,
                                int64_t pad_x0, int64_t pad_y0, int64_t f_h, int64_t f_w) {
  const int64_t limit = 2147483647;  // INT32_MAX
  const int64_t pad = (pad_x0 < 0 ? -pad_x0 : pad_x0) + (pad_y0 < 0 ? -pad_y0 : pad_y0);
  const int64_t span_x = (out_w * down_x > in_w * up_x ? out_w * down_x : in_w * up_x) + pad + f_w;
  const int64_t span_y = (out_h * down_y > in_h * up_y ? out_h * down_y : in_h * up_y) + pad + f_h;
  return batch * channels < limit && out_h * out_w < limit && in_h * in_w < limit && span_x < limit &&
         span_y < limit;
}

inline int upfirdn2d_pow2_at_least(int v, int cap) {
  int p = 1;
  while (p < v && p < cap) p *= 2;
  return p;
}

// Chooses tile sizes so that the shared memory fits `max_shared` bytes.
// Returns false when even a 1x1 tile does not fit (a huge filter).
inline bool upfirdn2d_plan(Upfirdn2dParams& p, int acc_bytes, int64_t max_shared) {
  const int kThreads = 256;
  int tw = upfirdn2d_pow2_at_least(p.out_w, 32);
  int th = upfirdn2d_pow2_at_least(p.out_h, 32);
  const int64_t planes = (int64_t)p.batch * p.channels;
  for (;;) {
    int in_w = upfirdn2d_tile_in(tw, p.down_x, p.f_w, p.up_x);
    int in_h = upfirdn2d_tile_in(th, p.down_y, p.f_h, p.up_y);
    // Small images: several planes per block so that the threads have work.
    int64_t ppb = kThreads / (tw * th);
    if (ppb < 1) ppb = 1;
    if (ppb > planes) ppb = planes;
    int64_t filter_elems = (int64_t)p.f_w * p.f_h;
    while (ppb > 1 && (filter_elems + ppb * in_w * in_h) * acc_bytes > max_shared) ppb /= 2;
    int64_t bytes = (filter_elems + ppb * in_w * in_h) * acc_bytes;
    if (bytes <= max_shared) {
      p.tile_w = tw;
      p.tile_h = th;
      p.tile_in_w = in_w;
      p.tile_in_h = in_h;
      p.tiles_x = (p.out_w + tw - 1) / tw;
      p.tiles_y = (p.out_h + th - 1) / th;
      p.planes_per_block = (int)ppb;
      p.plane_groups = (int)((planes + ppb - 1) / ppb);
      int work = (int)(ppb * tw * th);
      p.threads = work >= kThreads ? kThreads : ((work + 31) / 32) * 32;
      p.shared_bytes = bytes;
      return true;
    }
    if (tw == 1 && th == 1) return false;
    if (tw >= th) tw = tw > 1 ? tw / 2 : 1; else th /= 2;
  }
}

SG_HD Upfirdn2dTile upfirdn2d_tile(const Upfirdn2dParams& p, int tile_index) {
  Upfirdn2dTile t;
  t.out_x0 = (tile_index % p.tiles_x) * p.tile_w;
  t.out_y0 = (tile_index / p.tiles_x) * p.tile_h;
  t.in_x0 = ceil_div(t.out_x0 * p.down_x - p.pad_x0, p.up_x);
  t.in_y0 = ceil_div(t.out_y0 * p.down_y - p.pad_y0, p.up_y);
  return t;
}

// Shared memory layout: filter (f_h * f_w), then planes_per_block input tiles.
template <typename A>
SG_HD void upfirdn2d_load_filter(const Upfirdn2dParams& p, int tid, int nthreads, A* s_f) {
  const A* f = static_cast<const A*>(p.f);
  for (int i = tid; i < p.f_w * p.f_h; i += nthreads) {
    int ky = i / p.f_w;
    int kx = i - ky * p.f_w;
    if (!p.flip_filter) {
      ky = p.f_h - 1 - ky;
      kx = p.f_w - 1 - kx;
    }
    A tap = p.f_separable ? f[ky] * f[kx] : f[ky * p.f_w + kx];
    s_f[i] = tap * (A)p.gain;
  }
}

template <typename T, typename A>
SG_HD void upfirdn2d_load_tile(const Upfirdn2dParams& p, const Upfirdn2dTile& t, int group, int tid, int nthreads,
                               A* s_x) {
  const T* x = static_cast<const T*>(p.x);
  const int plane_elems = p.tile_in_w * p.tile_in_h;
  const int64_t planes = (int64_t)p.batch * p.channels;
  for (int i = tid; i < p.planes_per_block * plane_elems; i += nthreads) {
    int local = i / plane_elems;
    int rem = i - local * plane_elems;
    int ty = rem / p.tile_in_w;
    int tx = rem - ty * p.tile_in_w;
    int64_t plane = (int64_t)group * p.planes_per_block + local;
    int iy = t.in_y0 + ty;
    int ix = t.in_x0 + tx;
    A v = 0;
    if (plane < planes && iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w) {
      int64_t n = plane / p.channels;
      int64_t c = plane - n * p.channels;
      v = load(x + n * p.x_stride[0] + c * p.x_stride[1] + iy * p.x_stride[2] + ix * p.x_stride[3]);
    }
    s_x[i] = v;
  }
}

template <typename T, typename A>
SG_HD void upfirdn2d_compute(const Upfirdn2dParams& p, const Upfirdn2dTile& t, int group, int tid, int nthreads,
                             const A* s_f, const A* s_x) {
  T* y = static_cast<T*>(p.y);
  const int tile_elems = p.tile_w * p.tile_h;
  const int plane_elems = p.tile_in_w * p.tile_in_h;
  const int64_t planes = (int64_t)p.batch * p.channels;
  for (int i = tid; i < p.planes_per_block * tile_elems; i += nthreads) {
    int local = i / tile_elems;
    int rem = i - local * tile_elems;
    int oy = t.out_y0 + rem / p.tile_w;
    int ox = t.out_x0 + rem % p.tile_w;
    int64_t plane = (int64_t)group * p.planes_per_block + local;
    if (plane >= planes || oy >= p.out_h || ox >= p.out_w) continue;
    // First tap that lands on a real (not inserted) pixel, and that pixel's
    // position in the shared tile; each further tap `up` along is the next pixel.
    int qy = oy * p.down_y - p.pad_y0;
    int qx = ox * p.down_x - p.pad_x0;
    int ky0 = pos_mod(-qy, p.up_y);
    int kx0 = pos_mod(-qx, p.up_x);
    int sy0 = (qy + ky0) / p.up_y - t.in_y0;
    int sx0 = (qx + kx0) / p.up_x - t.in_x0;
    const A* tile = s_x + local * plane_elems;
    A acc = 0;
    for (int ky = ky0, sy = sy0; ky < p.f_h; ky += p.up_y, ++sy) {
      const A* row = tile + sy * p.tile_in_w;
      const A* frow = s_f + ky * p.f_w;
      for (int kx = kx0, sx = sx0; kx < p.f_w; kx += p.up_x, ++sx) {
        SG_ASSERT(sy >= 0 && sy < p.tile_in_h && sx >= 0 && sx < p.tile_in_w);
        acc += frow[kx] * row[sx];
      }
    }
    int64_t n = plane / p.channels;
    int64_t c = plane - n * p.channels;
    store(y + n * p.y_stride[0] + c * p.y_stride[1] + oy * p.y_stride[2] + ox * p.y_stride[3], acc);
  }
}

}  // namespace smallgan
