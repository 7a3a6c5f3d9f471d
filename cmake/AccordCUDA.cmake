# CUDA backend selection.
#   ACCORD_WITH_CUDA = AUTO (default): build the CUDA kernels when nvcc is found.
#                      ON: required, a missing nvcc is a configure error.  OFF: never.
#   ACCORD_CUDA_ARCHS: CMAKE_CUDA_ARCHITECTURES list, default Ampere + Hopper ("80;90").
# The CUDA runtime is linked statically so `import accord` works on machines with no toolkit.
set(ACCORD_WITH_CUDA "AUTO" CACHE STRING "Build CUDA kernels: AUTO, ON or OFF")
set(ACCORD_CUDA_ARCHS "80;90" CACHE STRING "CUDA architectures to compile for")

include(CheckLanguage)
set(ACCORD_CUDA_ENABLED OFF)
if(NOT ACCORD_WITH_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER)
    if(DEFINED ENV{CUDA_HOME} OR DEFINED ENV{CUDA_PATH})  # an explicit toolkit: only that one
      find_program(_accord_nvcc nvcc HINTS ENV CUDA_HOME ENV CUDA_PATH PATH_SUFFIXES bin
                   NO_DEFAULT_PATH)
    else()
      find_program(_accord_nvcc nvcc PATHS /usr/local/cuda/bin)
    endif()
    if(_accord_nvcc)
      set(CMAKE_CUDA_COMPILER ${_accord_nvcc})
    endif()
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(ACCORD_CUDA_ENABLED ON)
  elseif(ACCORD_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "accord: ACCORD_WITH_CUDA=1 but no CUDA compiler (nvcc) was found. "
                        "Put nvcc on PATH or set CUDA_HOME, or build with ACCORD_WITH_CUDA=0.")
  endif()
endif()

if(ACCORD_CUDA_ENABLED)
  set(CMAKE_CUDA_ARCHITECTURES ${ACCORD_CUDA_ARCHS})
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  set(CMAKE_CUDA_RUNTIME_LIBRARY Static)
endif()
message(STATUS "accord: CUDA kernels ${ACCORD_CUDA_ENABLED} (archs: ${ACCORD_CUDA_ARCHS})")

function(accord_add_cuda_sources target dir)
  if(NOT ACCORD_CUDA_ENABLED)
    target_compile_definitions(${target} PRIVATE ACCORD_CUDA_ARCHS="")
    return()
  endif()
  file(GLOB _cu_sources CONFIGURE_DEPENDS ${dir}/*.cu)
  target_sources(${target} PRIVATE ${_cu_sources})
  # "80;90" would split into two definitions: pass the archs comma-separated ("80,90")
  string(REPLACE ";" "," _archs_str "${ACCORD_CUDA_ARCHS}")
  target_compile_definitions(${target} PRIVATE ACCORD_WITH_CUDA=1
                             ACCORD_CUDA_ARCHS="${_archs_str}")
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 --expt-relaxed-constexpr>)
  # solve_spd.cu runs spd_solve.h exactly like the CPU backend: no FMA contraction there
  set_source_files_properties(${dir}/solve_spd.cu PROPERTIES COMPILE_OPTIONS "--fmad=false")
  set_target_properties(${target} PROPERTIES CUDA_RUNTIME_LIBRARY Static
                        CUDA_SEPARABLE_COMPILATION OFF)
endfunction()
