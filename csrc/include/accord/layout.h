#pragma once
// A flat buffer split into layer segments, and its fixed-size tiling.
//
// Every reduction runs over tiles of `tile_size` elements that never cross a segment boundary:
// tile t belongs to segment l when tile_start[l] <= t < tile_start[l+1]. Each tile produces one
// float64 partial and partials are summed per segment in tile order, so a result depends only on
// the tiling, never on how many threads or blocks ran it (bitwise determinism).
#include <cstdint>

#include "accord/macros.h"

namespace accord {

struct Layout {
  const int64_t* offsets = nullptr;     // [num_segments + 1], on the kernel's device
  const int64_t* tile_start = nullptr;  // [num_segments + 1], on the kernel's device
  int64_t num_segments = 0;
  int64_t num_tiles = 0;
  int64_t tile_size = 0;
};

// Segment that owns tile t: the last l with tile_start[l] <= t (empty segments own no tile).
ACCORD_HD int64_t segment_of_tile(const Layout& layout, int64_t t) {
  int64_t lo = 0, hi = layout.num_segments;  // invariant: tile_start[lo] <= t < tile_start[hi]
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (layout.tile_start[mid] <= t) lo = mid; else hi = mid;
  }
  return lo;
}

struct TileRange { int64_t segment, begin, end; };

ACCORD_HD TileRange tile_range(const Layout& layout, int64_t t) {
  const int64_t l = segment_of_tile(layout, t);
  const int64_t begin = layout.offsets[l] + (t - layout.tile_start[l]) * layout.tile_size;
  const int64_t seg_end = layout.offsets[l + 1];
  const int64_t end = begin + layout.tile_size < seg_end ? begin + layout.tile_size : seg_end;
  return {l, begin, end};
}

}  // namespace accord
