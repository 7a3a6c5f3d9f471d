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

OnDevice::OnDevice(int index) {
  int current = 0;
  if (cudaGetDevice(&current) == cudaSuccess && current != index) {
    previous_ = current;
    cudaSetDevice(index);
  }
}

OnDevice::~OnDevice() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

}  // namespace accord::cuda
