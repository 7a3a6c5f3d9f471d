// Device discovery. Must be safe on machines with no driver or no GPU (import accord there).
#include <cuda_runtime.h>

#include "accord/kernels.h"

namespace accord::cuda {

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the error so it does not surface from a later launch check
    return 0;
  }
  return count;
}

DeviceOf::DeviceOf(const void* ptr) {
  cudaPointerAttributes attr;
  if (ptr == nullptr || cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  int current = 0;
  if (attr.type == cudaMemoryTypeDevice && cudaGetDevice(&current) == cudaSuccess &&
      current != attr.device) {
    previous_ = current;
    cudaSetDevice(attr.device);
  }
}

DeviceOf::~DeviceOf() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

}  // namespace accord::cuda
