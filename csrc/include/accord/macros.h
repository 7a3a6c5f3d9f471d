#pragma once
// Functions marked ACCORD_HD are compiled for the host and, under nvcc, for the device too:
// the per-element and per-segment math is written once and shared by both backends.
#if defined(__CUDACC__)
#define ACCORD_HD __host__ __device__ __forceinline__
#else
#define ACCORD_HD inline
#endif
