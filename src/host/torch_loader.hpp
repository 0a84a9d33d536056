// Loads the LibTorch-backed half of skyrun (skyrun_torch.so), which the binary carries inside
// itself, on first use. Thread-safe; the library stays loaded for the life of the process.
#pragma once

#include <lua.hpp>

#include <string>

namespace sky {

// True when this binary was built with the LibTorch module.
bool torch_module_built();

// The module's handle, loading it on the first call; nullptr with `err` set on failure
// (missing LibTorch shared libraries are named).
void* torch_module_handle(std::string& err);

// A lua_CFunction exported by the module (e.g. "luaopen_skyrun_nn"); nullptr with `err` set.
lua_CFunction torch_module_symbol(const char* symbol, std::string& err);

// Lines describing LibTorch, CUDA and NCCL for `skyrun --version`.
std::string torch_module_describe();

}  // namespace sky
