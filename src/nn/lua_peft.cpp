// The native module "skyrun.peft" behind lua/peft: a model's modules as PEFT matches them, Python
// re.fullmatch for regex target_modules, LoRA on a "skyrun.Model" (add, save, load, merge, unload,
// disable, parameter counts), freezing for prepare_model_for_kbit_training, and bitsandbytes'
// 4-bit format for tests. The PEFT policy (config names, matching rules, files) is Lua's.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <map>

#include "host/bind.hpp"
#include "nn/model.hpp"
#include "nn/quant4.hpp"
#include "nn/safetensors.hpp"
#include "torch/lua_tensor.hpp"

namespace sky::nn {

namespace {

const char* kind_name(ModuleKind k) {
  switch (k) {
    case ModuleKind::Linear: return "linear";
    case ModuleKind::Conv1D: return "conv1d";
    case ModuleKind::Embedding: return "embedding";
    default: return "other";
  }
}

std::vector<std::string> string_list(lua_State* L, int tbl, const char* key) {
  std::vector<std::string> out;
  lua_getfield(L, tbl, key);  // [list]
  if (lua_istable(L, -1)) {
    for (size_t i = 1; i <= lua_objlen(L, -1); ++i) {
      lua_rawgeti(L, -1, static_cast<int>(i));  // [list, s]
      if (lua_type(L, -1) != LUA_TSTRING) raise_error(L, std::string("lora_add: ") + key + " must be a list of strings");
      out.emplace_back(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  return out;
}

// peft.modules(model) → { {name=, kind=, in_features=, out_features=, bias=, output_layer=}, ... }
int l_modules(lua_State* L) {
  auto m = lua_check_model(L, 1);
  std::vector<ModuleInfo> mods = m->modules();
  lua_createtable(L, static_cast<int>(mods.size()), 0);
  for (size_t i = 0; i < mods.size(); ++i) {
    const ModuleInfo& mi = mods[i];
    lua_createtable(L, 0, 6);
    lua_pushlstring(L, mi.name.data(), mi.name.size());
    lua_setfield(L, -2, "name");
    lua_pushstring(L, kind_name(mi.kind));
    lua_setfield(L, -2, "kind");
    lua_pushnumber(L, static_cast<double>(mi.in));
    lua_setfield(L, -2, "in_features");
    lua_pushnumber(L, static_cast<double>(mi.out));
    lua_setfield(L, -2, "out_features");
    lua_pushboolean(L, mi.has_bias);
    lua_setfield(L, -2, "bias");
    lua_pushboolean(L, mi.output_layer);
    lua_setfield(L, -2, "output_layer");
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

// peft.fullmatch(pattern, s) → boolean (Python's re.fullmatch, through PCRE2)
int l_fullmatch(lua_State* L) {
  std::string pattern(check_string_view(L, 1));
  std::string_view s = check_string_view(L, 2);
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF, &err,
                                   &off, nullptr);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof buf);
    raise_error(L, "target_modules: invalid regex '" + pattern + "': " + reinterpret_cast<char*>(buf) + " at offset " +
                       std::to_string(off));
  }
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, PCRE2_ANCHORED | PCRE2_ENDANCHORED,
                       md, nullptr);
  pcre2_match_data_free(md);
  pcre2_code_free(code);
  if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)
    raise_error(L, "target_modules: regex '" + pattern + "' failed (PCRE2 error " + std::to_string(rc) + ")");
  lua_pushboolean(L, rc >= 0);
  return 1;
}

// peft.lora_add(model, {adapter=, r=, lora_alpha=, use_rslora=, lora_dropout=, init=, targets={},
//                       bias=, modules_to_save={}, trainable=})
int l_lora_add(lua_State* L) {
  auto m = lua_check_model(L, 1);
  Options o(L, 2, "lora_add",
            {{"adapter", OptType::String}, {"r", OptType::Integer}, {"lora_alpha", OptType::Number},
             {"use_rslora", OptType::Boolean}, {"lora_dropout", OptType::Number}, {"init", OptType::String},
             {"targets", OptType::Table}, {"bias", OptType::String}, {"modules_to_save", OptType::Table},
             {"trainable", OptType::Boolean}});
  LoraSpec s;
  s.adapter = o.string("adapter", "default");
  s.r = o.integer("r", 8);
  s.lora_alpha = o.number("lora_alpha", 8);
  s.use_rslora = o.boolean("use_rslora", false);
  s.lora_dropout = o.number("lora_dropout", 0);
  s.init = o.string("init", "true");
  s.bias = o.string("bias", "none");
  s.trainable = o.boolean("trainable", true);
  s.targets = string_list(L, 2, "targets");
  s.modules_to_save = string_list(L, 2, "modules_to_save");
  m->lora_add(s);
  return 0;
}

// peft.lora_save(model, path): adapter_model.safetensors as PEFT writes it (metadata format = pt)
int l_lora_save(lua_State* L) {
  auto m = lua_check_model(L, 1);
  std::string path(check_string_view(L, 2));
  std::vector<at::Tensor> keep;
  std::vector<TensorToWrite> out;
  for (const auto& [name, t] : m->lora_state_dict()) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    keep.push_back(c);
    out.push_back(TensorToWrite{name, st_dtype_of(c.scalar_type()), c.sizes().vec(), c.data_ptr()});
  }
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  safetensors_write(path, out, {{"format", "pt"}});
  return 0;
}

// peft.lora_state_dict(model) → {name = Tensor}
int l_lora_state_dict(lua_State* L) {
  auto m = lua_check_model(L, 1);
  auto sd = m->lora_state_dict();
  lua_createtable(L, 0, static_cast<int>(sd.size()));
  for (const auto& [name, t] : sd) {
    lua_push_tensor(L, t);
    lua_setfield(L, -2, name.c_str());
  }
  return 1;
}

// Every tensor of a safetensors file, copied into memory.
std::map<std::string, at::Tensor> read_all(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& e : f->header().tensors) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(scalar_type_of(e.dtype, path, e.name)));
    if (e.end > e.begin) f->read(e, t.data_ptr());
    out[e.name] = t;
  }
  return out;
}

// peft.lora_load(model, path): copies adapter_model.safetensors into the model's adapter
int l_lora_load(lua_State* L) {
  auto m = lua_check_model(L, 1);
  std::string path(check_string_view(L, 2));
  m->lora_load_state_dict(read_all(path), path);
  return 0;
}

int l_merge_and_unload(lua_State* L) {
  lua_check_model(L, 1)->lora_merge_and_unload();
  return 0;
}

int l_unload(lua_State* L) {
  lua_check_model(L, 1)->lora_unload();
  return 0;
}

// peft.set_adapters_enabled(model, on) → previous state
int l_set_adapters_enabled(lua_State* L) {
  auto m = lua_check_model(L, 1);
  bool was = m->adapters_enabled();
  m->set_adapters_enabled(lua_toboolean(L, 2) != 0);
  lua_pushboolean(L, was);
  return 1;
}

// peft.parameter_counts(model) → trainable, all (PEFT's get_nb_trainable_parameters)
int l_parameter_counts(lua_State* L) {
  auto [trainable, all] = lua_check_model(L, 1)->peft_parameter_counts();
  lua_pushnumber(L, static_cast<double>(trainable));
  lua_pushnumber(L, static_cast<double>(all));
  return 2;
}

// peft.has_lora(model) → boolean
int l_has_lora(lua_State* L) {
  lua_pushboolean(L, lua_check_model(L, 1)->lora_spec() != nullptr);
  return 1;
}

// peft.freeze(model): requires_grad = false on every parameter
int l_freeze(lua_State* L) {
  auto m = lua_check_model(L, 1);
  for (auto [name, t] : m->named_parameters())  // a handle on the same tensor
    if (t.is_floating_point()) t.set_requires_grad(false);
  return 0;
}

// peft.quant4(weight, quant_type, double_quant) → {["weight"] = packed, ["weight.absmax"] = ..., ...}
int l_quant4(lua_State* L) {
  at::Tensor w = lua_check_tensor(L, 1);
  std::string qt(check_string_view(L, 2));
  Quant4Weight q = quant4_quantize(w, qt, opt_boolean(L, 3, false));
  auto saved = quant4_saved_tensors(q, "weight");
  lua_createtable(L, 0, static_cast<int>(saved.size()));
  for (const auto& [name, t] : saved) {
    lua_push_tensor(L, t);
    lua_setfield(L, -2, name.c_str());
  }
  return 1;
}

// peft.dequant4({["weight"] = ..., ...}, shape, dtype?) → Tensor (raises naming a missing or bad tensor)
int l_dequant4(lua_State* L) {
  check_table(L, 1);
  check_table(L, 2);
  std::vector<int64_t> shape;
  for (size_t i = 1; i <= lua_objlen(L, 2); ++i) {
    lua_rawgeti(L, 2, static_cast<int>(i));
    shape.push_back(check_int64(L, -1));
    lua_pop(L, 1);
  }
  std::string dt = lua_isnoneornil(L, 3) ? "float32" : std::string(check_string_view(L, 3));
  Quant4Weight q = quant4_from_saved(
      [&](const std::string& n) {
        lua_getfield(L, 1, n.c_str());
        at::Tensor t = lua_isnil(L, -1) ? at::Tensor() : lua_check_tensor(L, -1);
        lua_pop(L, 1);
        return t;
      },
      "weight", shape, "dequant4");
  lua_push_tensor(L, quant4_dequantize(q, dtype_from_string(dt)));
  return 1;
}

int l_quant4_dynamic_map(lua_State* L) {
  lua_push_tensor(L, quant4_dynamic_map());
  return 1;
}

}  // namespace

}  // namespace sky::nn

extern "C" __attribute__((visibility("default"))) int luaopen_skyrun_peft(lua_State* L) {
  using namespace sky::nn;
  const luaL_Reg fns[] = {
      {"modules", sky::safe<l_modules>},
      {"fullmatch", sky::safe<l_fullmatch>},
      {"lora_add", sky::safe<l_lora_add>},
      {"lora_save", sky::safe<l_lora_save>},
      {"lora_state_dict", sky::safe<l_lora_state_dict>},
      {"lora_load", sky::safe<l_lora_load>},
      {"merge_and_unload", sky::safe<l_merge_and_unload>},
      {"unload", sky::safe<l_unload>},
      {"set_adapters_enabled", sky::safe<l_set_adapters_enabled>},
      {"parameter_counts", sky::safe<l_parameter_counts>},
      {"has_lora", sky::safe<l_has_lora>},
      {"freeze", sky::safe<l_freeze>},
      {"quant4", sky::safe<l_quant4>},
      {"dequant4", sky::safe<l_dequant4>},
      {"quant4_dynamic_map", sky::safe<l_quant4_dynamic_map>},
      {nullptr, nullptr},
  };
  lua_newtable(L);
  luaL_register(L, nullptr, fns);
  return 1;
}
