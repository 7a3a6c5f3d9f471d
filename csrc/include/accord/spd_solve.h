#pragma once
// Solve of one small symmetric system (A + ridge I) x = r, shared by both backends.
//
// Jacobi eigendecomposition A = V diag(lam) V^T (cyclic order on the CPU, round-robin order
// on CUDA, below), then the pseudo-inverse solution
// x = V diag(1/lam_i if |lam_i| > tol else 0) V^T r, tol = k * DBL_EPSILON * max|lam|.
// A rank-deficient or zero matrix therefore gives the finite minimum-norm least-squares answer,
// never NaN from a division by a zero pivot. A NaN or Inf anywhere in the system (matrix, rhs)
// gives an all-NaN x, never a silently finite answer (and the sweep count is bounded).
// k is small (<= kMaxSolveDim): the cost, O(sweeps k^3), is nothing next to the Gram pass.
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "accord/macros.h"

namespace accord {

constexpr int kMaxSolveDim = 128;
constexpr int kMaxJacobiSweeps = 60;

// How the element loops of one solve run. The algorithm below is written once against this
// interface: the CPU runs it on one thread (SerialLoops), the CUDA backend with one warp per
// system (csrc/cuda/solve_spd.cu), lanes taking the i of each independent element loop in turn.
// The scalar parts (sweep test, projections) run in every lane alike, so a given order computes
// every value by the same operations in the same order on both backends (the CPU runs the
// round-robin order too, for tests: accord._C.solve_spd_round_robin).
//   for_each(k, f): f(i) for every i in [0, k), iterations independent of each other; every
//                   lane's earlier reads and writes are complete before it starts and its
//                   writes are visible to every lane when it returns.
//   all(b):         b combined with && over the lanes.
//   kLanes:         how many lanes share the loops (a layout choice only, never the bits).
struct SerialLoops {
  static constexpr int kLanes = 1;
  template <typename F>
  ACCORD_HD void for_each(int64_t k, F&& f) const {
    for (int64_t i = 0; i < k; ++i) f(i);
  }
  ACCORD_HD bool all(bool b) const { return b; }
};

// The parts shared by both sweep orders. a: k*k row-major, overwritten (its diagonal ends as
// the eigenvalues); v: k*k scratch (the eigenvectors).

// Checks the input and starts the iteration (a += ridge I, v = I). Returns false, with x all
// NaN, when the system has a NaN or Inf: the sweeps would stop at once (NaN off-diagonal norm)
// or every eigenvalue would be dropped (tol = inf), returning a finite x.
template <typename Loops>
ACCORD_HD bool jacobi_start(double* a, double* v, const double* r, int64_t k, double ridge,
                            double* x, const Loops& loops) {
  bool finite = true;  // fabs(NaN) <= DBL_MAX is false
  loops.for_each(k, [&](int64_t i) {
    for (int64_t j = 0; j < k; ++j) finite = finite && fabs(a[i * k + j]) <= DBL_MAX;
    finite = finite && fabs(r[i]) <= DBL_MAX;
  });
  if (!loops.all(finite)) {
    loops.for_each(k, [&](int64_t i) { x[i] = nan(""); });
    return false;
  }
  loops.for_each(k, [&](int64_t i) {
    a[i * k + i] += ridge;
    for (int64_t j = 0; j < k; ++j) v[i * k + j] = i == j ? 1.0 : 0.0;
  });
  return true;
}

// True when the off-diagonal part is negligible (also on NaN): no further sweep.
ACCORD_HD bool jacobi_converged(const double* a, int64_t k) {
  double off = 0.0, diag = 0.0;
  for (int64_t i = 0; i < k; ++i) {
    diag += a[i * k + i] * a[i * k + i];
    for (int64_t j = i + 1; j < k; ++j) off += a[i * k + j] * a[i * k + j];
  }
  return !(off > DBL_EPSILON * DBL_EPSILON * diag);
}

// The rotation (c, s) that zeroes a[p][q]; false (and (1, 0)) when a[p][q] is already 0.
ACCORD_HD bool jacobi_rotation(const double* a, int64_t k, int64_t p, int64_t q, double* c,
                               double* s) {
  const double apq = a[p * k + q];
  if (apq == 0.0) {
    *c = 1.0;
    *s = 0.0;
    return false;
  }
  const double theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
  const double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
  *c = 1.0 / sqrt(t * t + 1.0);
  *s = t * *c;
  return true;
}

// (x, y) <- (c x - s y, s x + c y): one element pair of a rotation.
ACCORD_HD void rotate_pair(double* x, double* y, double c, double s) {
  const double xv = *x, yv = *y;
  *x = c * xv - s * yv;
  *y = s * xv + c * yv;
}

// x = V diag(1/lam_i if |lam_i| > tol else 0) V^T r, tol = k * DBL_EPSILON * max|lam|.
template <typename Loops>
ACCORD_HD void pinv_solution(const double* a, const double* v, const double* r, int64_t k,
                             double* x, const Loops& loops) {
  double lam_max = 0.0;
  for (int64_t i = 0; i < k; ++i) lam_max = fmax(lam_max, fabs(a[i * k + i]));
  const double tol = double(k) * DBL_EPSILON * lam_max;
  loops.for_each(k, [&](int64_t i) { x[i] = 0.0; });
  for (int64_t e = 0; e < k; ++e) {
    const double lam = a[e * k + e];
    if (!(fabs(lam) > tol) && !(lam != lam)) continue;  // null space (NaN falls through)
    double proj = 0.0;
    for (int64_t i = 0; i < k; ++i) proj += v[i * k + e] * r[i];
    const double scale = proj / lam;
    loops.for_each(k, [&](int64_t i) { x[i] += scale * v[i * k + e]; });
  }
}

// Cyclic order (the CPU backend): rotations (0,1), (0,2), ..., (k-2,k-1), one after the other,
// each angle computed from the matrix the previous rotation left.
template <typename Loops>
ACCORD_HD void solve_symmetric_pinv(double* a, double* v, const double* r, int64_t k, double ridge,
                                    double* x, const Loops& loops) {
  if (!jacobi_start(a, v, r, k, ridge, x, loops)) return;
  for (int sweep = 0; sweep < kMaxJacobiSweeps && !jacobi_converged(a, k); ++sweep) {
    for (int64_t p = 0; p < k; ++p) {
      for (int64_t q = p + 1; q < k; ++q) {
        double c, s;
        if (!jacobi_rotation(a, k, p, q, &c, &s)) continue;
        loops.for_each(k, [&](int64_t i) {  // columns p, q of a; columns p, q of v
          rotate_pair(&a[i * k + p], &a[i * k + q], c, s);
          rotate_pair(&v[i * k + p], &v[i * k + q], c, s);
        });
        loops.for_each(k, [&](int64_t i) {  // rows p, q of a (after all of the columns)
          rotate_pair(&a[p * k + i], &a[q * k + i], c, s);
        });
      }
    }
  }
  pinv_solution(a, v, r, k, x, loops);
}

ACCORD_HD void solve_symmetric_pinv(double* a, double* v, const double* r, int64_t k, double ridge,
                                    double* x) {
  solve_symmetric_pinv(a, v, r, k, ridge, x, SerialLoops{});
}

// Pair j of round `round` of the round-robin ("circle") order over m = k rounded up to even
// indices: in m - 1 rounds every pair (p < q) appears once, and the m / 2 pairs of one round
// are disjoint. A pair with q >= k (k odd) is a no-op. No division: index arithmetic runs in
// every lane of the CUDA solve, where 64-bit division is slow.
ACCORD_HD void round_robin_pair(int m, int round, int j, int* p, int* q) {
  int x = round, y = m - 1;
  if (j != 0) {
    x = round + j;
    if (x >= m - 1) x -= m - 1;
    y = round - j;
    if (y < 0) y += m - 1;
  }
  *p = x < y ? x : y;
  *q = x < y ? y : x;
}

// Round-robin order (the CUDA backend): the m / 2 rotations of a round touch disjoint index
// pairs, so their angles do not depend on each other and are computed at once, then applied
// together (all columns, then all rows). The same pairs as the cyclic order, with the same
// convergence test and pseudo-inverse, in ceil(k/2)-wide steps instead of single rotations: a
// round costs one rotation's dependent chain of divisions and square roots, not k/2 of them.
// Results agree with the cyclic order to rounding. cs: 4 * ceil(k/2) doubles of scratch (per
// pair c, s, p, q); a rotation stored as s == 0 (a[p][q] == 0, or an angle too small to
// represent) is skipped.
template <typename Loops>
ACCORD_HD void solve_symmetric_pinv_round_robin(double* a, double* v, const double* r, int64_t k,
                                                double ridge, double* x, double* cs,
                                                const Loops& loops) {
  if (!jacobi_start(a, v, r, k, ridge, x, loops)) return;
  const int m = int(k + (k & 1)), half = m / 2;
  for (int sweep = 0; sweep < kMaxJacobiSweeps && !jacobi_converged(a, k); ++sweep) {
    for (int round = 0; round < m - 1; ++round) {
      loops.for_each(half, [&](int64_t j) {
        int p, q;
        round_robin_pair(m, round, int(j), &p, &q);
        double* pair = cs + 4 * j;
        pair[2] = p;
        pair[3] = q;
        if (q < k) {
          jacobi_rotation(a, k, p, q, &pair[0], &pair[1]);
        } else {
          pair[0] = 1.0;
          pair[1] = 0.0;
        }
      });
      // row i's columns p, q of a and v, and column i's rows p, q of a, for pair j (skipped
      // when its rotation is the identity)
      auto columns = [&](int64_t j, int64_t i) {
        const double* pair = cs + 4 * j;
        if (pair[1] == 0.0) return;
        const int64_t p = int64_t(pair[2]), q = int64_t(pair[3]);
        rotate_pair(&a[i * k + p], &a[i * k + q], pair[0], pair[1]);
        rotate_pair(&v[i * k + p], &v[i * k + q], pair[0], pair[1]);
      };
      auto rows = [&](int64_t j, int64_t i) {
        const double* pair = cs + 4 * j;
        if (pair[1] == 0.0) return;
        const int64_t p = int64_t(pair[2]), q = int64_t(pair[3]);
        rotate_pair(&a[p * k + i], &a[q * k + i], pair[0], pair[1]);
      };
      // all columns, then all rows; each element's operations are the same in both layouts
      if (k < Loops::kLanes) {  // fewer rows than lanes: (pair, row) items over the lanes
        const uint32_t ku = uint32_t(k);
        loops.for_each(half * k, [&](int64_t w) {
          const uint32_t j = uint32_t(w) / ku;
          columns(j, uint32_t(w) - j * ku);
        });
        loops.for_each(half * k, [&](int64_t w) {
          const uint32_t j = uint32_t(w) / ku;
          rows(j, uint32_t(w) - j * ku);
        });
      } else {  // a row (column) per lane, its pairs in turn
        loops.for_each(k, [&](int64_t i) {
          for (int j = 0; j < half; ++j) columns(j, i);
        });
        loops.for_each(k, [&](int64_t i) {
          for (int j = 0; j < half; ++j) rows(j, i);
        });
      }
    }
  }
  pinv_solution(a, v, r, k, x, loops);
}

}  // namespace accord
