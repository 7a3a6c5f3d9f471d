# Sanitizer build of the host (CPU) code, for tests/sanitize/run.sh.
#   ACCORD_SANITIZE: empty (default, no sanitizer) or a -fsanitize= list such as
#                    "address,undefined". Every report aborts (-fno-sanitize-recover=all), so a
#                    test run fails on the first one. CUDA sources are not instrumented.
# The module is loaded into an uninstrumented python: run it with the compiler's runtime first in
# LD_PRELOAD (`$(c++ -print-file-name=libasan.so)`), see tests/sanitize/run.sh.
set(ACCORD_SANITIZE "" CACHE STRING "Sanitizers for the host code (e.g. address,undefined); empty: none")

# accord_add_sanitizers(target [GLUE sources...]): GLUE sources (the pybind11 bindings) are
# instrumented but compiled at -O0: optimising pybind11's templates under both sanitizers takes
# minutes, and the kernels, where the memory traffic is, keep the release optimisation level.
function(accord_add_sanitizers target)
  cmake_parse_arguments(ARG "" "" "GLUE" ${ARGN})
  if(ACCORD_SANITIZE STREQUAL "")
    return()
  endif()
  if(NOT ACCORD_SANITIZE MATCHES "^[a-z,_-]+$")
    message(FATAL_ERROR "accord: ACCORD_SANITIZE=${ACCORD_SANITIZE}: expected a -fsanitize= list "
                        "such as address,undefined")
  endif()
  set(_flags -fsanitize=${ACCORD_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer -g)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${_flags}>)
  target_link_options(${target} PRIVATE -fsanitize=${ACCORD_SANITIZE})
  if(ARG_GLUE)
    set_source_files_properties(${ARG_GLUE} PROPERTIES COMPILE_OPTIONS -O0)
  endif()
  message(STATUS "accord: host code built with -fsanitize=${ACCORD_SANITIZE}")
endfunction()
