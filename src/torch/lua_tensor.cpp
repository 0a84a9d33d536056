// The "skyrun.Tensor" userdata and the native module "skyrun.torch" behind lua/torch: tensors
// from Lua tables and back, shape/dtype/device, and a handful of ops. Indices given by Lua
// callers for dimensions are 1-based (dim 1 is the first), negative ones count from the end.
#include "torch/lua_tensor.hpp"

#include <ATen/ScalarOps.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "host/bind.hpp"
#include "sky_config.h"
#if SKY_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace sky {

namespace {

extern const ClassSpec kTensorClass;

at::Tensor& self(lua_State* L, int idx = 1) { return class_check<at::Tensor>(L, idx, kTensorClass); }

struct DtypeName {
  const char* name;
  at::ScalarType type;
};
const DtypeName kDtypeNames[] = {
    {"float32", at::kFloat}, {"float", at::kFloat},   {"float64", at::kDouble}, {"double", at::kDouble},
    {"float16", at::kHalf},  {"half", at::kHalf},     {"bfloat16", at::kBFloat16}, {"int64", at::kLong},
    {"long", at::kLong},     {"int32", at::kInt},     {"int", at::kInt},        {"int16", at::kShort},
    {"int8", at::kChar},     {"uint8", at::kByte},    {"bool", at::kBool},
};

// Lua dimension (1-based, or negative from the end) → ATen dimension.
int64_t dim_arg(lua_State* L, int idx, int64_t ndim) {
  int64_t d = check_int64(L, idx);
  if (d > 0 && d <= ndim) return d - 1;
  if (d < 0 && -d <= ndim) return d;
  const char* msg = lua_pushfstring(L, "dimension %d out of range for a %d-d tensor (1-based)", static_cast<int>(d),
                                    static_cast<int>(ndim));
  luaL_argerror(L, idx, msg);
  return 0;
}

std::vector<int64_t> shape_args(lua_State* L, int first) {
  std::vector<int64_t> shape;
  if (lua_istable(L, first)) {
    size_t n = lua_objlen(L, first);
    for (size_t i = 1; i <= n; ++i) {
      lua_rawgeti(L, first, static_cast<int>(i));
      shape.push_back(check_int64(L, -1));
      lua_pop(L, 1);
    }
    return shape;
  }
  for (int i = first; i <= lua_gettop(L) && lua_type(L, i) == LUA_TNUMBER; ++i) shape.push_back(check_int64(L, i));
  return shape;
}

// ---- table → tensor ----------------------------------------------------------------------------

struct Flat {
  std::vector<double> values;
  std::vector<int64_t> shape;
  bool all_integral = true;
  bool booleans = false;
  bool numbers = false;
};

// The range of an integral dtype, as doubles: [lo, hi) (hi exclusive: 2^63 itself is out of int64).
std::pair<double, double> integral_range(at::ScalarType t) {
  switch (t) {
    case at::kByte: return {0.0, 256.0};
    case at::kChar: return {-128.0, 128.0};
    case at::kShort: return {-32768.0, 32768.0};
    case at::kInt: return {-2147483648.0, 2147483648.0};
    default: return {-9223372036854775808.0, 9223372036854775808.0};
  }
}

// Values converted to an integral dtype must fit it (torch raises "Overflow" too): wrapping 2^63
// to a negative int64 or 1e300 to some int32 would be a silently wrong tensor. Fractions truncate
// toward zero, as torch.tensor([2.5], dtype=torch.int64) does.
void check_fits(lua_State* L, const std::vector<double>& values, at::ScalarType type) {
  auto [lo, hi] = integral_range(type);
  for (double v : values) {
    double t = std::trunc(v);
    if (!(t >= lo && t < hi)) {
      char buf[64];
      snprintf(buf, sizeof buf, "%.17g", v);
      raise_error(L, std::string("torch.tensor: ") + buf + " does not fit " + lua_dtype_name(type) +
                         (type == at::kLong ? " (give dtype = 'float64' for such values)" : ""));
    }
  }
}

void flatten(lua_State* L, int idx, Flat& f, size_t depth) {
  int t = lua_type(L, idx);
  if (t == LUA_TNUMBER || t == LUA_TBOOLEAN) {
    if (depth != f.shape.size()) luaL_error(L, "torch.tensor: ragged nested table (a number at depth %d)", static_cast<int>(depth));
    double v = t == LUA_TBOOLEAN ? (lua_toboolean(L, idx) ? 1.0 : 0.0) : lua_tonumber(L, idx);
    if (t == LUA_TBOOLEAN) f.booleans = true;
    else f.numbers = true;
    if (v != std::floor(v) || !std::isfinite(v)) f.all_integral = false;
    f.values.push_back(v);
    return;
  }
  if (t == LUA_TUSERDATA && class_test_handle(L, idx, kTensorClass)) {
    luaL_error(L, "torch.tensor: nested tensors are not supported yet; use torch.stack");
  }
  if (t != LUA_TTABLE) luaL_error(L, "torch.tensor: expected numbers or nested tables of numbers, got %s", luaL_typename(L, idx));
  int64_t n = static_cast<int64_t>(lua_objlen(L, idx));
  if (depth == f.shape.size()) {
    if (!f.values.empty()) luaL_error(L, "torch.tensor: ragged nested table (a table at depth %d)", static_cast<int>(depth));
    f.shape.push_back(n);
  } else if (depth < f.shape.size() && f.shape[depth] != n) {
    luaL_error(L, "torch.tensor: ragged nested table (lengths %d and %d at depth %d)", static_cast<int>(f.shape[depth]),
               static_cast<int>(n), static_cast<int>(depth + 1));
  } else if (depth > f.shape.size()) {
    luaL_error(L, "torch.tensor: ragged nested table");
  }
  for (int64_t i = 1; i <= n; ++i) {
    lua_rawgeti(L, idx, static_cast<int>(i));
    flatten(L, lua_gettop(L), f, depth + 1);
    lua_pop(L, 1);
  }
}

void push_list(lua_State* L, const at::Tensor& t, int64_t dim, const double* data, int64_t& pos, bool as_bool) {
  if (dim == t.dim()) {
    double v = data[pos++];
    if (as_bool) lua_pushboolean(L, v != 0);
    else lua_pushnumber(L, v);
    return;
  }
  int64_t n = t.size(dim);
  lua_createtable(L, static_cast<int>(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    push_list(L, t, dim + 1, data, pos, as_bool);
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
}

// A Lua number as an operand, the way Python hands torch a number: an integral value that fits
// int64 is an int, any other a float, and either is a "wrapped number" so that type promotion
// treats it as a scalar (int64 tensor * 0.5 -> float32, float16 tensor * 2 -> float16).
at::Tensor wrapped_number(double v) {
  bool is_int = v == std::trunc(v) && v >= -9223372036854775808.0 && v < 9223372036854775808.0;
  at::Tensor t = is_int ? c10::scalar_to_tensor(at::Scalar(static_cast<int64_t>(v))) : c10::scalar_to_tensor(at::Scalar(v));
  t.unsafeGetTensorImpl()->set_wrapped_number(true);
  return t;
}

// The operand at idx: a tensor, a Lua number (as wrapped_number) or a table of numbers.
// Returns whether it was a tensor or a table (not a bare number).
bool binary_operand(lua_State* L, int idx, at::Tensor& out) {
  if (lua_type(L, idx) == LUA_TNUMBER) {
    out = wrapped_number(lua_tonumber(L, idx));
    return false;
  }
  out = lua_to_tensor(L, idx);
  return true;
}

// ---- methods -------------------------------------------------------------------------------------

int t_tolist(lua_State* L) {
  lua_push_tensor_list(L, self(L));
  return 1;
}

int t_item(lua_State* L) {
  at::Tensor& t = self(L);
  if (t.numel() != 1) return luaL_error(L, "item: the tensor has %d elements, not 1", static_cast<int>(t.numel()));
  if (t.scalar_type() == at::kBool) lua_pushboolean(L, t.item<bool>());
  else lua_pushnumber(L, t.to(at::kDouble).item<double>());
  return 1;
}

int t_size(lua_State* L) {
  at::Tensor& t = self(L);
  if (lua_gettop(L) >= 2 && !lua_isnil(L, 2)) {
    lua_pushinteger(L, static_cast<lua_Integer>(t.size(dim_arg(L, 2, t.dim()))));
    return 1;
  }
  lua_createtable(L, static_cast<int>(t.dim()), 0);
  for (int64_t i = 0; i < t.dim(); ++i) {
    lua_pushinteger(L, static_cast<lua_Integer>(t.size(i)));
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

int p_shape(lua_State* L) {
  lua_settop(L, 1);
  return t_size(L);
}

int t_dim(lua_State* L) {
  lua_pushinteger(L, static_cast<lua_Integer>(self(L).dim()));
  return 1;
}

int t_numel(lua_State* L) {
  lua_pushnumber(L, static_cast<double>(self(L).numel()));
  return 1;
}

int t_dtype(lua_State* L) {
  lua_pushstring(L, lua_dtype_name(self(L).scalar_type()));
  return 1;
}

int t_device(lua_State* L) {
  lua_pushstring(L, self(L).device().str().c_str());
  return 1;
}

int t_requires_grad(lua_State* L) {
  lua_pushboolean(L, self(L).requires_grad());
  return 1;
}

// t:requires_grad_([flag = true]) -> t: sets requires_grad in place, as torch's (freezes a
// parameter with false); the tensor must be a leaf.
int t_requires_grad_set(lua_State* L) {
  at::Tensor t = self(L);
  t.requires_grad_(lua_isnoneornil(L, 2) ? true : opt_boolean(L, 2, true));
  lua_settop(L, 1);
  return 1;
}

// t:to("float32" | "cuda" | {dtype=, device=})
int t_to(lua_State* L) {
  at::Tensor t = self(L);
  if (lua_type(L, 2) == LUA_TSTRING) {
    std::string s = lua_tostring(L, 2);
    bool is_dtype = false;
    for (const auto& d : kDtypeNames)
      if (s == d.name) is_dtype = true;
    bool is_device = s == "cpu" || s.rfind("cuda", 0) == 0 || s == "meta";
    if (is_dtype || !is_device) t = t.to(lua_dtype_from_name(L, 2));  // an unknown name gets a did-you-mean
    else t = t.to(at::Device(s));
  } else {
    Options o(L, 2, "to", {{"dtype", OptType::String}, {"device", OptType::String}});
    if (o.has("device")) t = t.to(at::Device(o.string("device", "cpu")));
    if (o.has("dtype")) {
      o.push("dtype");
      t = t.to(lua_dtype_from_name(L, lua_gettop(L)));
      lua_pop(L, 1);
    }
  }
  lua_push_tensor(L, t);
  return 1;
}

template <at::ScalarType T>
int t_cast(lua_State* L) {
  lua_push_tensor(L, self(L).to(T));
  return 1;
}

int t_view(lua_State* L) {
  lua_push_tensor(L, self(L).reshape(shape_args(L, 2)));
  return 1;
}

int t_clone(lua_State* L) {
  lua_push_tensor(L, self(L).clone());
  return 1;
}

int t_detach(lua_State* L) {
  lua_push_tensor(L, self(L).detach());
  return 1;
}

int t_contiguous(lua_State* L) {
  lua_push_tensor(L, self(L).contiguous());
  return 1;
}

int t_transpose(lua_State* L) {
  at::Tensor& t = self(L);
  lua_push_tensor(L, t.transpose(dim_arg(L, 2, t.dim()), dim_arg(L, 3, t.dim())));
  return 1;
}

// t:select(dim, index): index 1-based
int t_select(lua_State* L) {
  at::Tensor& t = self(L);
  int64_t d = dim_arg(L, 2, t.dim());
  int64_t i = check_int64(L, 3);
  int64_t n = t.size(d);
  if (i < 1 || i > n) return luaL_error(L, "select: index %d out of range 1..%d", static_cast<int>(i), static_cast<int>(n));
  lua_push_tensor(L, t.select(d, i - 1));
  return 1;
}

// t:narrow(dim, start, length): start 1-based
int t_narrow(lua_State* L) {
  at::Tensor& t = self(L);
  int64_t d = dim_arg(L, 2, t.dim());
  lua_push_tensor(L, t.narrow(d, check_int64(L, 3) - 1, check_int64(L, 4)));
  return 1;
}

int t_squeeze(lua_State* L) {
  at::Tensor& t = self(L);
  lua_push_tensor(L, lua_isnoneornil(L, 2) ? t.squeeze() : t.squeeze(dim_arg(L, 2, t.dim())));
  return 1;
}

int t_unsqueeze(lua_State* L) {
  at::Tensor& t = self(L);
  lua_push_tensor(L, t.unsqueeze(dim_arg(L, 2, t.dim() + 1)));
  return 1;
}

// Reductions: t:sum() / t:sum(dim [, keepdim])
template <int Kind>
int t_reduce(lua_State* L) {
  at::Tensor& t = self(L);
  at::Tensor r;
  if (lua_isnoneornil(L, 2)) {
    switch (Kind) {
      case 0: r = t.sum(); break;
      case 1: r = t.to(at::isFloatingType(t.scalar_type()) ? t.scalar_type() : at::kFloat).mean(); break;
      case 2: r = t.max(); break;
      case 3: r = t.min(); break;
      case 4: r = t.argmax(); break;
    }
  } else {
    int64_t d = dim_arg(L, 2, t.dim());
    bool keep = opt_boolean(L, 3, false);
    switch (Kind) {
      case 0: r = t.sum(d, keep); break;
      case 1: r = t.to(at::isFloatingType(t.scalar_type()) ? t.scalar_type() : at::kFloat).mean(d, keep); break;
      case 2: r = std::get<0>(t.max(d, keep)); break;
      case 3: r = std::get<0>(t.min(d, keep)); break;
      case 4: r = t.argmax(d, keep); break;
    }
  }
  lua_push_tensor(L, r);
  return 1;
}

template <int Kind>
int t_unary(lua_State* L) {
  at::Tensor& t = self(L);
  at::Tensor r;
  switch (Kind) {
    case 0: r = t.abs(); break;
    case 1: r = t.exp(); break;
    case 2: r = t.log(); break;
    case 3: r = t.sqrt(); break;
    case 4: r = t.neg(); break;
    case 5: r = t.tanh(); break;
    case 6: r = t.sigmoid(); break;
    case 7: r = at::relu(t); break;
  }
  lua_push_tensor(L, r);
  return 1;
}

int t_softmax(lua_State* L) {
  at::Tensor& t = self(L);
  lua_push_tensor(L, t.softmax(dim_arg(L, 2, t.dim()), at::kFloat));
  return 1;
}

int t_log_softmax(lua_State* L) {
  at::Tensor& t = self(L);
  lua_push_tensor(L, t.log_softmax(dim_arg(L, 2, t.dim()), at::kFloat));
  return 1;
}

int t_matmul(lua_State* L) {
  lua_push_tensor(L, at::matmul(self(L), lua_to_tensor(L, 2)));
  return 1;
}

// Binary arithmetic: (tensor|number) op (tensor|number); used for methods and metamethods.
template <int Op>
int t_binary(lua_State* L) {
  at::Tensor a, b;
  bool ka = binary_operand(L, 1, a), kb = binary_operand(L, 2, b);
  at::Tensor r;
  if (!ka && !kb) return luaL_error(L, "tensor arithmetic needs a tensor");
  switch (Op) {
    case 0: r = a + b; break;
    case 1: r = a - b; break;
    case 2: r = a * b; break;
    case 3: r = a / b; break;
    case 4: r = at::pow(a, b); break;
    case 5: r = a.eq(b); break;
    case 6: r = a.ne(b); break;
    case 7: r = a.lt(b); break;
    case 8: r = a.le(b); break;
    case 9: r = a.gt(b); break;
    case 10: r = a.ge(b); break;
  }
  lua_push_tensor(L, r);
  return 1;
}

int t_unm(lua_State* L) {
  lua_push_tensor(L, self(L).neg());
  return 1;
}

int t_equal(lua_State* L) {
  at::Tensor& a = self(L);
  at::Tensor b = lua_to_tensor(L, 2);
  lua_pushboolean(L, a.sizes() == b.sizes() && a.to(at::kDouble).eq(b.to(at::kDouble).to(a.device())).all().item<bool>());
  return 1;
}

// t:allclose(other, {atol=1e-8, rtol=1e-5})
int t_allclose(lua_State* L) {
  at::Tensor a = self(L);
  at::Tensor b = lua_to_tensor(L, 2);
  Options o(L, 3, "allclose", {{"atol", OptType::Number}, {"rtol", OptType::Number}});
  lua_pushboolean(L, a.sizes() == b.sizes() &&
                         at::allclose(a.to(at::kDouble).cpu(), b.to(at::kDouble).cpu(), o.number("rtol", 1e-5), o.number("atol", 1e-8)));
  return 1;
}

int t_backward(lua_State* L) {
  self(L).backward();
  return 0;
}

int t_grad(lua_State* L) {
  at::Tensor g = self(L).grad();
  if (!g.defined()) lua_pushnil(L);
  else lua_push_tensor(L, g);
  return 1;
}

int t_tostring(lua_State* L) {
  at::Tensor& t = self(L);
  std::string s = "tensor(";
  if (t.numel() <= 64) {
    std::ostringstream os;
    os << t.to(at::kCPU);
    std::string body = os.str();
    // ATen's printing ends with "[ CPUFloatType{2,3} ]": keep the values only.
    auto cut = body.rfind("\n[ ");
    if (cut != std::string::npos) body = body.substr(0, cut);
    s += body;
  } else {
    s += "...";
  }
  s += ", shape={";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  s += std::string("}, dtype=") + lua_dtype_name(t.scalar_type()) + ", device=" + t.device().str() + ")";
  lua_pushlstring(L, s.data(), s.size());
  return 1;
}

int t_len(lua_State* L) {
  at::Tensor& t = self(L);
  lua_pushinteger(L, t.dim() == 0 ? 0 : static_cast<lua_Integer>(t.size(0)));
  return 1;
}

const ClassSpec kTensorClass = {
    "skyrun.Tensor",
    "Tensor",
    {
        {"tolist", safe<t_tolist>},       {"item", safe<t_item>},
        {"size", safe<t_size>},           {"dim", safe<t_dim>},
        {"numel", safe<t_numel>},         {"to", safe<t_to>},
        {"float", safe<t_cast<at::kFloat>>}, {"double", safe<t_cast<at::kDouble>>},
        {"long", safe<t_cast<at::kLong>>}, {"int", safe<t_cast<at::kInt>>},
        {"bfloat16", safe<t_cast<at::kBFloat16>>}, {"half", safe<t_cast<at::kHalf>>},
        {"bool", safe<t_cast<at::kBool>>}, {"view", safe<t_view>},
        {"reshape", safe<t_view>},        {"clone", safe<t_clone>},
        {"detach", safe<t_detach>},       {"contiguous", safe<t_contiguous>},
        {"transpose", safe<t_transpose>}, {"select", safe<t_select>},
        {"narrow", safe<t_narrow>},       {"squeeze", safe<t_squeeze>},
        {"unsqueeze", safe<t_unsqueeze>}, {"sum", safe<t_reduce<0>>},
        {"mean", safe<t_reduce<1>>},      {"max", safe<t_reduce<2>>},
        {"min", safe<t_reduce<3>>},       {"argmax", safe<t_reduce<4>>},
        {"abs", safe<t_unary<0>>},        {"exp", safe<t_unary<1>>},
        {"log", safe<t_unary<2>>},        {"sqrt", safe<t_unary<3>>},
        {"neg", safe<t_unary<4>>},        {"tanh", safe<t_unary<5>>},
        {"sigmoid", safe<t_unary<6>>},    {"relu", safe<t_unary<7>>},
        {"softmax", safe<t_softmax>},     {"log_softmax", safe<t_log_softmax>},
        {"matmul", safe<t_matmul>},       {"add", safe<t_binary<0>>},
        {"sub", safe<t_binary<1>>},       {"mul", safe<t_binary<2>>},
        {"div", safe<t_binary<3>>},       {"pow", safe<t_binary<4>>},
        {"eq", safe<t_binary<5>>},        {"ne", safe<t_binary<6>>},
        {"lt", safe<t_binary<7>>},        {"le", safe<t_binary<8>>},
        {"gt", safe<t_binary<9>>},        {"ge", safe<t_binary<10>>},
        {"equal", safe<t_equal>},         {"allclose", safe<t_allclose>},
        {"backward", safe<t_backward>},   {"requires_grad_", safe<t_requires_grad_set>},
    },
    {
        {"shape", safe<p_shape>, nullptr},
        {"dtype", safe<t_dtype>, nullptr},
        {"device", safe<t_device>, nullptr},
        {"ndim", safe<t_dim>, nullptr},
        {"requires_grad", safe<t_requires_grad>, nullptr},
        {"grad", safe<t_grad>, nullptr},
    },
    safe<t_tostring>,
    nullptr,
    safe<t_len>,
};

// Arithmetic metamethods are not part of ClassSpec: add them to the registered metatable.
void register_tensor_class(lua_State* L) {
  class_register(L, kTensorClass);
  luaL_getmetatable(L, kTensorClass.metatable);  // [mt]
  const struct {
    const char* name;
    lua_CFunction fn;
  } meta[] = {{"__add", safe<t_binary<0>>}, {"__sub", safe<t_binary<1>>}, {"__mul", safe<t_binary<2>>},
              {"__div", safe<t_binary<3>>}, {"__pow", safe<t_binary<4>>}, {"__unm", safe<t_unm>}};
  for (const auto& m : meta) {
    lua_pushcfunction(L, m.fn);
    lua_setfield(L, -2, m.name);
  }
  lua_pop(L, 1);
}

// ---- module functions ------------------------------------------------------------------------------

at::TensorOptions creation_options(lua_State* L, int idx, at::ScalarType def) {
  if (idx == 0) idx = lua_gettop(L) + 1;  // none: no options
  Options o(L, idx, "torch", {{"dtype", OptType::String}, {"device", OptType::String}, {"requires_grad", OptType::Boolean}});
  at::TensorOptions opts = at::TensorOptions().dtype(def);
  if (o.has("dtype")) {
    o.push("dtype");
    opts = opts.dtype(lua_dtype_from_name(L, lua_gettop(L)));
    lua_pop(L, 1);
  }
  if (o.has("device")) opts = opts.device(at::Device(o.string("device", "cpu")));
  opts = opts.requires_grad(o.boolean("requires_grad", false));
  return opts;
}

int last_options_index(lua_State* L) { return lua_istable(L, lua_gettop(L)) && lua_gettop(L) > 1 ? lua_gettop(L) : 0; }

// torch.tensor(data [, {dtype=, device=, requires_grad=}])
int m_tensor(lua_State* L) {
  std::optional<at::ScalarType> want;
  at::TensorOptions opts;
  bool has_opts = lua_gettop(L) >= 2 && !lua_isnil(L, 2);
  if (has_opts) {
    Options o(L, 2, "torch.tensor", {{"dtype", OptType::String}, {"device", OptType::String}, {"requires_grad", OptType::Boolean}});
    if (o.has("dtype")) {
      o.push("dtype");
      want = lua_dtype_from_name(L, lua_gettop(L));
      lua_pop(L, 1);
    }
    at::Tensor t = lua_to_tensor(L, 1, want);
    if (o.has("device")) t = t.to(at::Device(o.string("device", "cpu")));
    if (o.boolean("requires_grad", false)) t.set_requires_grad(true);
    lua_push_tensor(L, t);
    return 1;
  }
  lua_push_tensor(L, lua_to_tensor(L, 1).clone());
  return 1;
}

template <int Kind>
int m_fill(lua_State* L) {
  int oi = last_options_index(L);
  std::vector<int64_t> shape = shape_args(L, 1);
  at::TensorOptions opts = creation_options(L, oi, at::kFloat);
  at::Tensor t;
  switch (Kind) {
    case 0: t = at::zeros(shape, opts.requires_grad(false)); break;
    case 1: t = at::ones(shape, opts.requires_grad(false)); break;
    case 2: t = at::randn(shape, opts.requires_grad(false)); break;
    case 3: t = at::rand(shape, opts.requires_grad(false)); break;
  }
  if (opts.requires_grad()) t.set_requires_grad(true);
  lua_push_tensor(L, t);
  return 1;
}

// torch.full(shape, value [, opts])
int m_full(lua_State* L) {
  std::vector<int64_t> shape = shape_args(L, 1);
  double v = luaL_checknumber(L, 2);
  at::ScalarType def = v == std::floor(v) && !lua_istable(L, 3) ? at::kLong : at::kFloat;
  lua_push_tensor(L, at::full(shape, v, creation_options(L, 3, def)));
  return 1;
}

// torch.arange(n) → 0..n-1; torch.arange(a, b [, step]) → a..b-1 (Python's semantics)
int m_arange(lua_State* L) {
  int oi = last_options_index(L);
  int nargs = oi ? oi - 1 : lua_gettop(L);
  double a = 0, b, step = 1;
  if (nargs == 1) b = luaL_checknumber(L, 1);
  else {
    a = luaL_checknumber(L, 1);
    b = luaL_checknumber(L, 2);
    if (nargs >= 3) step = luaL_checknumber(L, 3);
  }
  bool integral = a == std::floor(a) && b == std::floor(b) && step == std::floor(step);
  lua_push_tensor(L, at::arange(a, b, step, creation_options(L, oi, integral ? at::kLong : at::kFloat)));
  return 1;
}

int m_manual_seed(lua_State* L) {
  torch::manual_seed(static_cast<uint64_t>(check_int64(L, 1)));
  return 0;
}

int m_is_tensor(lua_State* L) {
  lua_pushboolean(L, lua_is_tensor(L, 1));
  return 1;
}

// The tensors of the Lua list at idx (`who` names the function in errors).
std::vector<at::Tensor> tensor_list_arg(lua_State* L, int idx, const char* who) {
  check_table(L, idx);
  std::vector<at::Tensor> ts;
  size_t n = lua_objlen(L, idx);
  for (size_t i = 1; i <= n; ++i) {
    lua_rawgeti(L, idx, static_cast<int>(i));
    ts.push_back(lua_to_tensor(L, -1));
    lua_pop(L, 1);
  }
  if (ts.empty()) luaL_error(L, "%s: no tensors", who);
  return ts;
}

// torch.cat({t1, t2, ...} [, dim]): along an existing dimension
int m_cat(lua_State* L) {
  std::vector<at::Tensor> ts = tensor_list_arg(L, 1, "torch.cat");
  int64_t d = lua_isnoneornil(L, 2) ? 0 : dim_arg(L, 2, ts[0].dim());
  lua_push_tensor(L, at::cat(ts, d));
  return 1;
}

// torch.stack({t1, t2, ...} [, dim]): along a new dimension
int m_stack(lua_State* L) {
  std::vector<at::Tensor> ts = tensor_list_arg(L, 1, "torch.stack");
  int64_t d = lua_isnoneornil(L, 2) ? 0 : dim_arg(L, 2, ts[0].dim() + 1);
  lua_push_tensor(L, at::stack(ts, d));
  return 1;
}

int m_cuda_is_available(lua_State* L) {
  lua_pushboolean(L, torch::cuda::is_available());
  return 1;
}

int m_cuda_device_count(lua_State* L) {
  lua_pushinteger(L, static_cast<lua_Integer>(torch::cuda::device_count()));
  return 1;
}

// cuda_memory_stat(what, device) -> bytes: the caching allocator's counter `what` ("allocated",
// "max_allocated", "reserved", "max_reserved") on a 0-based device, as torch.cuda.memory_allocated
// and friends read it; 0 where CUDA is absent (as PyTorch answers before CUDA is initialised).
int m_cuda_memory_stat(lua_State* L) {
  std::string_view what = check_string_view(L, 1);
  int64_t device = lua_isnoneornil(L, 2) ? -1 : check_int64(L, 2);
  const bool known = what == "allocated" || what == "max_allocated" || what == "reserved" || what == "max_reserved";
  if (!known) raise_error(L, "torch.cuda: no memory counter '" + std::string(what) + "'");
  double bytes = 0;
#if SKY_HAVE_CUDA
  if (torch::cuda::is_available()) {
    if (device < 0) device = c10::cuda::current_device();
    if (device >= static_cast<int64_t>(torch::cuda::device_count()))
      raise_error(L, "torch.cuda: no device " + std::to_string(device) + " (there are " +
                         std::to_string(torch::cuda::device_count()) + ")");
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const size_t agg = 0;  // StatType::AGGREGATE (its namespace moved between LibTorch 2.x releases)
    const auto& stat = (what == "allocated" || what == "max_allocated") ? stats.allocated_bytes[agg]
                                                                         : stats.reserved_bytes[agg];
    bytes = static_cast<double>(what.substr(0, 4) == "max_" ? stat.peak : stat.current);
  }
#else
  (void)device;
#endif
  lua_pushnumber(L, bytes);
  return 1;
}

// cuda_reset_peak_memory_stats(device): the max_ counters start again from the current values.
int m_cuda_reset_peak_memory_stats(lua_State* L) {
  int64_t device = lua_isnoneornil(L, 1) ? -1 : check_int64(L, 1);
#if SKY_HAVE_CUDA
  if (torch::cuda::is_available()) {
    if (device < 0) device = c10::cuda::current_device();
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
  }
#else
  (void)device;
#endif
  return 0;
}

int m_cuda_synchronize(lua_State* L) {
#if SKY_HAVE_CUDA
  if (torch::cuda::is_available()) c10::cuda::device_synchronize();
#endif
  (void)L;
  return 0;
}

int m_version(lua_State* L) {
  lua_pushstring(L, TORCH_VERSION);
  return 1;
}

}  // namespace

// ---- the bridge ------------------------------------------------------------------------------------

void lua_push_tensor(lua_State* L, at::Tensor t) {
  // Lua's collector sees a tensor as a few bytes of userdata and would let gigabytes of dropped
  // tensors (CPU or GPU) pile up between its cycles; so tell it what each one holds, as if Lua had
  // allocated that much (a view counts its own elements, not its base's storage). Small tensors
  // add up until they make 64 KB.
  static thread_local size_t pending = 0;  // each LuaJIT state runs on one thread
  if (t.defined()) pending += static_cast<size_t>(t.numel()) * t.element_size();
  if (pending >= (size_t{64} << 10)) {
    lua_gc(L, LUA_GCSTEP, static_cast<int>(std::min<size_t>(pending >> 10, size_t{1} << 30)));
    pending = 0;
  }
  luaL_getmetatable(L, kTensorClass.metatable);  // [mt?]
  bool missing = lua_isnil(L, -1);
  lua_pop(L, 1);
  if (missing) register_tensor_class(L);
  class_push(L, kTensorClass, std::make_shared<at::Tensor>(std::move(t)));
}

bool lua_is_tensor(lua_State* L, int idx) {
  Handle* h = class_test_handle(L, idx, kTensorClass);
  return h && h->ptr;
}

at::Tensor lua_check_tensor(lua_State* L, int idx) { return self(L, idx); }

at::Tensor lua_to_tensor(lua_State* L, int idx, std::optional<at::ScalarType> want) {
  idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
  if (lua_is_tensor(L, idx)) {
    at::Tensor t = self(L, idx);
    return want ? t.to(*want) : t;
  }
  if (lua_type(L, idx) != LUA_TTABLE && lua_type(L, idx) != LUA_TNUMBER && lua_type(L, idx) != LUA_TBOOLEAN)
    arg_type_error(L, idx, "Tensor or table of numbers");
  Flat f;
  flatten(L, idx, f, 0);
  if (f.booleans && f.numbers) luaL_error(L, "torch.tensor: mixes booleans and numbers");
  at::ScalarType type = want ? *want : f.booleans ? at::kBool : f.all_integral ? at::kLong : at::kFloat;
  if (at::isIntegralType(type, /*includeBool=*/false)) check_fits(L, f.values, type);
  at::Tensor d = at::from_blob(f.values.data(), {static_cast<int64_t>(f.values.size())}, at::TensorOptions().dtype(at::kDouble));
  // from_blob borrows f.values, which dies on return: always copy (to() alone returns the same
  // buffer when the dtype is already float64).
  return d.to(type, /*non_blocking=*/false, /*copy=*/true).reshape(f.shape);
}

at::Tensor lua_to_index_tensor(lua_State* L, int idx, const char* what) {
  idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
  bool from_table = !lua_is_tensor(L, idx);
  at::Tensor t = lua_to_tensor(L, idx);
  if (at::isIntegralType(t.scalar_type(), /*includeBool=*/false)) return t.to(at::kLong);
  if (!from_table || !at::isFloatingType(t.scalar_type()))
    raise_error(L, std::string(what) + " must hold integers (got a " + lua_dtype_name(t.scalar_type()) + " tensor)");
  at::Tensor d = t.to(at::kDouble).flatten().contiguous();
  const double* v = d.data_ptr<double>();
  for (int64_t i = 0; i < d.numel(); ++i) {
    if (v[i] != std::trunc(v[i]) || !std::isfinite(v[i])) {
      char buf[64];
      snprintf(buf, sizeof buf, "%.17g", v[i]);
      raise_error(L, std::string(what) + " must hold integers (found " + buf + ")");
    }
  }
  return t.to(at::kLong);  // not reached: a table of integral numbers is int64 already
}

void lua_push_tensor_list(lua_State* L, const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU).to(at::kDouble).contiguous();
  int64_t pos = 0;
  push_list(L, c, 0, c.data_ptr<double>(), pos, t.scalar_type() == at::kBool);
}

at::ScalarType lua_dtype_from_name(lua_State* L, int idx) {
  std::string s(check_string_view(L, idx));
  if (s.rfind("torch.", 0) == 0) s = s.substr(6);
  for (const auto& d : kDtypeNames)
    if (s == d.name) return d.type;
  std::vector<std::string> names;
  for (const auto& d : kDtypeNames) names.push_back(d.name);
  std::string hint = suggest_closest(s, names);
  std::string msg = "unknown dtype '" + s + "'" + (hint.empty() ? "" : " (did you mean '" + hint + "'?)");
  raise_error(L, msg);
}

const char* lua_dtype_name(at::ScalarType t) {
  for (const auto& d : kDtypeNames)
    if (d.type == t) return d.name;
  return c10::toString(t);
}

}  // namespace sky

extern "C" __attribute__((visibility("default"))) int luaopen_skyrun_torch(lua_State* L) {
  using namespace sky;
  register_tensor_class(L);
  const luaL_Reg fns[] = {
      {"tensor", safe<m_tensor>},
      {"zeros", safe<m_fill<0>>},
      {"ones", safe<m_fill<1>>},
      {"randn", safe<m_fill<2>>},
      {"rand", safe<m_fill<3>>},
      {"full", safe<m_full>},
      {"arange", safe<m_arange>},
      {"cat", safe<m_cat>},
      {"stack", safe<m_stack>},
      {"manual_seed", safe<m_manual_seed>},
      {"is_tensor", safe<m_is_tensor>},
      {"cuda_is_available", safe<m_cuda_is_available>},
      {"cuda_device_count", safe<m_cuda_device_count>},
      {"cuda_memory_stat", safe<m_cuda_memory_stat>},
      {"cuda_reset_peak_memory_stats", safe<m_cuda_reset_peak_memory_stats>},
      {"cuda_synchronize", safe<m_cuda_synchronize>},
      {"version", safe<m_version>},
      {nullptr, nullptr},
  };
  lua_newtable(L);
  luaL_register(L, nullptr, fns);
  return 1;
}
