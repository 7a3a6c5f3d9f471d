// accord._C: a thin pybind11 face over the kernels. Arguments are raw addresses (ints) so the
// module needs neither torch nor numpy headers; accord/_kernels.py turns arrays and tensors into
// addresses and validates everything before a call reaches here.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "accord/kernels.h"

namespace py = pybind11;
using accord::DType;
using accord::Layout;

namespace {

// The device argument of every kernel call: 0 = CPU, 1 + k = cuda:k (accord/_kernels.py's
// kernel_device). tile_size/workspace_bytes take any CUDA value (they do not depend on k).
enum Device : int { kCPU = 0, kCUDA = 1 };

template <typename T> T* ptr(uintptr_t address) { return reinterpret_cast<T*>(address); }

DType to_dtype(int code) {
  if (code < 0 || code > 3) throw std::invalid_argument("accord: bad dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

#if !defined(ACCORD_WITH_CUDA)
[[noreturn]] void no_cuda() {
  throw std::runtime_error(
      "accord was built without CUDA kernels; rebuild with nvcc on PATH (or ACCORD_WITH_CUDA=1)");
}
#endif

#if defined(ACCORD_WITH_CUDA)
#define ACCORD_ON_DEVICE(device, anchor, cpu_call, cuda_call) \
  do { if ((device) >= kCUDA) { accord::cuda::OnDevice guard((device) - kCUDA); cuda_call; } \
       else { (void)(anchor); cpu_call; } } while (0)
#else
#define ACCORD_ON_DEVICE(device, anchor, cpu_call, cuda_call) \
  do { if ((device) >= kCUDA) no_cuda(); (void)(anchor); cpu_call; } while (0)
#endif

Layout make_layout(uintptr_t offsets, uintptr_t tile_start, int64_t num_segments, int64_t num_tiles,
                   int64_t tile_size) {
  if (num_segments < 0 || num_tiles < 0 || tile_size <= 0)
    throw std::invalid_argument("accord: invalid layout sizes");
  Layout layout;
  layout.offsets = ptr<const int64_t>(offsets);
  layout.tile_start = ptr<const int64_t>(tile_start);
  layout.num_segments = num_segments;
  layout.num_tiles = num_tiles;
  layout.tile_size = tile_size;
  return layout;
}

void check_solve_k(int64_t k) {
  if (k > accord::kMaxSolveDim)
    throw std::invalid_argument("accord.solve_spd: k=" + std::to_string(k) + " exceeds " +
                                std::to_string(accord::kMaxSolveDim));
}

int64_t tile_size(int device, bool gram) {
#if defined(ACCORD_WITH_CUDA)
  if (device >= kCUDA) return gram ? accord::cuda::kGramTileSize : accord::cuda::kTileSize;
#else
  if (device >= kCUDA) no_cuda();
#endif
  return gram ? accord::cpu::kGramTileSize : accord::cpu::kTileSize;
}

int64_t workspace_bytes(int device, const std::string& op, const Layout& layout, int64_t k,
                        bool with_rhs) {
  if (device < kCUDA) return 0;
#if defined(ACCORD_WITH_CUDA)
  if (op == "segment_dots") return accord::cuda::segment_dots_workspace_bytes(layout);
  if (op == "adasum_combine") return accord::cuda::adasum_combine_workspace_bytes(layout);
  if (op == "gram") return accord::cuda::gram_workspace_bytes(layout, k, with_rhs);
  if (op == "solve_spd") return accord::cuda::solve_spd_workspace_bytes(layout.num_segments, k);
  return 0;
#else
  no_cuda();
#endif
}

py::dict build_info() {
  py::dict info;
  info["version"] = ACCORD_VERSION;
#if defined(ACCORD_WITH_CUDA)
  info["cuda"] = true;
  info["cuda_archs"] = std::string(ACCORD_CUDA_ARCHS);
  info["cuda_devices"] = accord::cuda::device_count();
#else
  info["cuda"] = false;
  info["cuda_archs"] = std::string();
  info["cuda_devices"] = 0;
#endif
#if defined(ACCORD_WITH_OPENMP)
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  info["omp_max_threads"] = accord::cpu::max_threads();
  info["cpu_tile_size"] = accord::cpu::kTileSize;
  info["cpu_isa"] = std::string(accord::cpu::current_isa());
  info["cpu_isa_best"] = std::string(accord::cpu::best_isa());
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "accord fused segment kernels (CPU OpenMP + SIMD, CUDA)";
  py::class_<Layout>(m, "Layout")
      .def(py::init(&make_layout), py::arg("offsets"), py::arg("tile_start"),
           py::arg("num_segments"), py::arg("num_tiles"), py::arg("tile_size"))
      .def_readonly("num_segments", &Layout::num_segments)
      .def_readonly("num_tiles", &Layout::num_tiles)
      .def_readonly("tile_size", &Layout::tile_size);

  // The solve's size limit lives in one place (spd_solve.h); Python reads it from here.
  m.attr("max_solve_k") = accord::kMaxSolveDim;
  m.def("build_info", &build_info);
  m.def("set_cpu_isa", [](const std::string& name) { return accord::cpu::set_isa(name.c_str()); },
        py::arg("name"));
  m.def("tile_size", &tile_size, py::arg("device"), py::arg("gram") = false);
  m.def("workspace_bytes", &workspace_bytes, py::arg("device"), py::arg("op"), py::arg("layout"),
        py::arg("k") = 0, py::arg("with_rhs") = false);
  // numpy's own route to an array's address (ndarray.ctypes.data) builds a ctypes helper
  // object per call, ~3 us: a large share of a small op's cost. The buffer protocol gives it
  // in a fraction of that (C-contiguous buffers only: PyBUF_SIMPLE).
  m.def("buffer_address", [](py::handle obj) {
    Py_buffer view;
    if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_SIMPLE) != 0) throw py::error_already_set();
    const auto address = reinterpret_cast<uintptr_t>(view.buf);
    PyBuffer_Release(&view);
    return address;
  }, py::arg("array"));
  m.def("cuda_device_count", []() {
#if defined(ACCORD_WITH_CUDA)
    return accord::cuda::device_count();
#else
    return 0;
#endif
  });

  auto nogil = py::call_guard<py::gil_scoped_release>();

  m.def("segment_dots", [](int dtype, int device, uintptr_t a, uintptr_t b, const Layout& layout,
                           uintptr_t dots, uintptr_t workspace, uintptr_t stream) {
    ACCORD_ON_DEVICE(device, ptr<void>(a),
        accord::cpu::segment_dots(to_dtype(dtype), ptr<void>(a), ptr<void>(b), layout, ptr<double>(dots)),
        accord::cuda::segment_dots(to_dtype(dtype), ptr<void>(a), ptr<void>(b), layout, ptr<double>(dots),
                                   ptr<void>(workspace), ptr<void>(stream)));
  }, nogil);

  m.def("adasum_combine", [](int dtype, int device, uintptr_t a, uintptr_t b, uintptr_t out,
                             const Layout& layout, uintptr_t dots, double wa, double wb,
                             uintptr_t workspace, uintptr_t stream) {
    ACCORD_ON_DEVICE(device, ptr<void>(a),
        accord::cpu::adasum_combine(to_dtype(dtype), ptr<void>(a), ptr<void>(b), ptr<void>(out), layout,
                                    ptr<const double>(dots), wa, wb),
        accord::cuda::adasum_combine(to_dtype(dtype), ptr<void>(a), ptr<void>(b), ptr<void>(out), layout,
                                     ptr<const double>(dots), wa, wb, ptr<void>(workspace), ptr<void>(stream)));
  }, nogil);

  m.def("gram", [](int dtype, int device, uintptr_t vectors, int64_t k, uintptr_t rhs,
                   const Layout& layout, uintptr_t gram, uintptr_t rhs_dots, uintptr_t workspace,
                   uintptr_t stream) {
    ACCORD_ON_DEVICE(device, ptr<void>(vectors),
        accord::cpu::gram(to_dtype(dtype), ptr<void>(vectors), k, ptr<void>(rhs), layout,
                          ptr<double>(gram), ptr<double>(rhs_dots)),
        accord::cuda::gram(to_dtype(dtype), ptr<void>(vectors), k, ptr<void>(rhs), layout,
                           ptr<double>(gram), ptr<double>(rhs_dots), ptr<void>(workspace), ptr<void>(stream)));
  }, nogil);

  m.def("solve_spd", [](int device, uintptr_t gram, uintptr_t rhs, int64_t num_systems, int64_t k,
                        double ridge, uintptr_t x, uintptr_t workspace, uintptr_t stream) {
    check_solve_k(k);
    ACCORD_ON_DEVICE(device, ptr<void>(gram),
        accord::cpu::solve_spd(ptr<const double>(gram), ptr<const double>(rhs), num_systems, k, ridge,
                               ptr<double>(x)),
        accord::cuda::solve_spd(ptr<const double>(gram), ptr<const double>(rhs), num_systems, k, ridge,
                                ptr<double>(x), ptr<void>(workspace), ptr<void>(stream)));
  }, nogil);

  m.def("solve_spd_round_robin", [](uintptr_t gram, uintptr_t rhs, int64_t num_systems, int64_t k,
                                    double ridge, uintptr_t x) {
    check_solve_k(k);
    accord::cpu::solve_spd_round_robin(ptr<const double>(gram), ptr<const double>(rhs), num_systems,
                                       k, ridge, ptr<double>(x));
  }, nogil, "solve_spd's CUDA sweep order on the CPU, on host float64 buffers (for tests)");

  m.def("weighted_sum", [](int dtype, int device, uintptr_t vectors, int64_t k, uintptr_t weights,
                           const Layout& layout, uintptr_t out, uintptr_t stream) {
    ACCORD_ON_DEVICE(device, ptr<void>(vectors),
        accord::cpu::weighted_sum(to_dtype(dtype), ptr<void>(vectors), k, ptr<const double>(weights),
                                  layout, ptr<void>(out)),
        accord::cuda::weighted_sum(to_dtype(dtype), ptr<void>(vectors), k, ptr<const double>(weights),
                                   layout, ptr<void>(out), ptr<void>(stream)));
  }, nogil);

  m.def("axpby", [](int dtype, int device, uintptr_t x, uintptr_t y, uintptr_t out,
                    const Layout& layout, uintptr_t alpha, uintptr_t beta, uintptr_t stream) {
    ACCORD_ON_DEVICE(device, ptr<void>(x),
        accord::cpu::axpby(to_dtype(dtype), ptr<void>(x), ptr<void>(y), ptr<void>(out), layout,
                           ptr<const double>(alpha), ptr<const double>(beta)),
        accord::cuda::axpby(to_dtype(dtype), ptr<void>(x), ptr<void>(y), ptr<void>(out), layout,
                            ptr<const double>(alpha), ptr<const double>(beta), ptr<void>(stream)));
  }, nogil);
}
