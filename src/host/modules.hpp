// The native modules linked into the binary, offered to `require` through package.preload.
#pragma once

#include "host/runtime.hpp"

namespace sky {
// Terminated by an entry with name == nullptr.
const NativeModule* native_modules();
}  // namespace sky
