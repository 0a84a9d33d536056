// Tensors in Lua: the "skyrun.Tensor" userdata (one at::Tensor handle each), shared by every
// LibTorch-backed module (skyrun.torch, skyrun.nn, skyrun.train, ...). C++ code that takes a
// tensor from Lua calls lua_check_tensor; one that returns a tensor calls lua_push_tensor.
#pragma once

#include <ATen/ATen.h>
#include <lua.hpp>

#include <optional>

namespace sky {

void lua_push_tensor(lua_State* L, at::Tensor t);  // pushes 1
bool lua_is_tensor(lua_State* L, int idx);
at::Tensor lua_check_tensor(lua_State* L, int idx);  // argument error unless a Tensor

// A Tensor, or a (nested) Lua table of numbers/booleans converted to one: dtype `want` when
// given, else int64 when every number is integral, float32 otherwise, bool for booleans.
at::Tensor lua_to_tensor(lua_State* L, int idx, std::optional<at::ScalarType> want = std::nullopt);

// Token ids, positions and other indices: a Tensor of an integer dtype or a table of integral
// numbers, as int64. A fraction (2.5) or a float tensor is an error naming `what`, never truncated
// (torch's embedding refuses float indices too).
at::Tensor lua_to_index_tensor(lua_State* L, int idx, const char* what);

// Pushes t as nested Lua tables (numbers; booleans for bool tensors); a 0-d tensor as a number.
void lua_push_tensor_list(lua_State* L, const at::Tensor& t);

// "float32", "int64", "bfloat16", ... ↔ at::ScalarType (Lua-facing names, as torch's without "torch.").
at::ScalarType lua_dtype_from_name(lua_State* L, int idx);
const char* lua_dtype_name(at::ScalarType t);

}  // namespace sky
