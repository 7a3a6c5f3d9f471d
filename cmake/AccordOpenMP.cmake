# OpenMP for the CPU kernels. Without it the kernels still build and run single-threaded.
find_package(OpenMP COMPONENTS CXX)

function(accord_link_openmp target)
  if(OpenMP_CXX_FOUND)
    target_link_libraries(${target} PRIVATE OpenMP::OpenMP_CXX)
    target_compile_definitions(${target} PRIVATE ACCORD_WITH_OPENMP=1)
  else()
    message(WARNING "accord: OpenMP not found; CPU kernels will run on one thread")
  endif()
endfunction()
