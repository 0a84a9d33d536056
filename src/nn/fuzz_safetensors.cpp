// libFuzzer entry: the safetensors header parser must reject any byte string with a sky::Error,
// never crash, hang or read outside the buffer. Build with -Dfuzz=enabled (clang). Seeds with
// headers nested past the 128-level limit: skyrun tests/host/json_fuzz_seeds.lua seeds (seeds/safetensors).
#include <cstddef>
#include <cstdint>

#include "host/bind.hpp"
#include "nn/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    sky::nn::SafetensorsHeader h = sky::nn::safetensors_parse(data, size, "fuzz.safetensors");
    // Every accepted tensor must lie inside the buffer.
    for (const auto& t : h.tensors)
      if (h.data_start + t.end > size) __builtin_trap();
  } catch (const sky::Error&) {
  }
  return 0;
}
