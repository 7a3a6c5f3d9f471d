// The run-time SIMD level of the CPU kernels (vec.h), exposed through kernels.h.
#include <cstring>

#include "accord/kernels.h"
#include "vec.h"

namespace accord::cpu {

const char* current_isa() { return vec::isa_name(vec::isa()); }

const char* best_isa() { return vec::isa_name(vec::supported_isa()); }

bool set_isa(const char* name) {
  for (vec::Isa level : {vec::Isa::kPortable, vec::Isa::kAvx2})
    if (std::strcmp(name, vec::isa_name(level)) == 0) return vec::set_isa(level);
  return false;
}

}  // namespace accord::cpu
