// Batched small symmetric solves: one system per OpenMP iteration, math in spd_solve.h.
#include <vector>

#include "accord/kernels.h"
#include "accord/spd_solve.h"

namespace accord::cpu {

void solve_spd(const double* gram, const double* rhs, int64_t num_systems, int64_t k, double ridge,
               double* x) {
#if defined(ACCORD_WITH_OPENMP)
#pragma omp parallel for schedule(static) if (num_systems * k * k * k >= (1 << 18))
#endif
  for (int64_t l = 0; l < num_systems; ++l) {
    std::vector<double> a(gram + l * k * k, gram + (l + 1) * k * k), v(size_t(k * k));
    solve_symmetric_pinv(a.data(), v.data(), rhs + l * k, k, ridge, x + l * k);
  }
}

void solve_spd_round_robin(const double* gram, const double* rhs, int64_t num_systems, int64_t k,
                           double ridge, double* x) {
  for (int64_t l = 0; l < num_systems; ++l) {
    std::vector<double> a(gram + l * k * k, gram + (l + 1) * k * k), v(size_t(k * k)),
        cs(size_t(4 * ((k + 1) / 2)));
    solve_symmetric_pinv_round_robin(a.data(), v.data(), rhs + l * k, k, ridge, x + l * k,
                                     cs.data(), SerialLoops{});
  }
}

}  // namespace accord::cpu
