// The native module "skyrun.nn" behind lua/transformers/modeling.lua: the "skyrun.Model"
// userdata (forward, generate, save_pretrained, train/eval, parameters), config.json as a Lua
// table, and the safetensors reader/writer for Lua callers.
#include <torch/torch.h>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>

#include <filesystem>

#include "host/bind.hpp"
#include "host/json.hpp"
#include "host/lua_json.hpp"
#include "nn/layers.hpp"
#include "nn/model.hpp"
#include "nn/safetensors.hpp"
#include "torch/lua_tensor.hpp"

namespace sky::nn {

namespace {

extern const ClassSpec kModelClass;

Model& self(lua_State* L) { return class_check<Model>(L, 1, kModelClass); }

// ---- JSON → Lua (config.json) -----------------------------------------------------------------------

void push_json(lua_State* L, const rapidjson::Value& v, bool int_keys) {
  switch (v.GetType()) {
    case rapidjson::kNullType: lua_pushnil(L); break;
    case rapidjson::kFalseType: lua_pushboolean(L, 0); break;
    case rapidjson::kTrueType: lua_pushboolean(L, 1); break;
    case rapidjson::kNumberType: lua_pushnumber(L, v.GetDouble()); break;
    case rapidjson::kStringType: lua_pushlstring(L, v.GetString(), v.GetStringLength()); break;
    case rapidjson::kArrayType:
      lua_createtable(L, static_cast<int>(v.Size()), 0);
      for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
        push_json(L, v[i], false);
        lua_rawseti(L, -2, static_cast<int>(i + 1));
      }
      break;
    case rapidjson::kObjectType:
      lua_createtable(L, 0, static_cast<int>(v.MemberCount()));
      for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) {
        char* end = nullptr;
        long long k = int_keys ? strtoll(it->name.GetString(), &end, 10) : 0;
        if (int_keys && end && !*end) lua_pushinteger(L, static_cast<lua_Integer>(k));  // id2label keeps 0-based ints
        else lua_pushlstring(L, it->name.GetString(), it->name.GetStringLength());
        push_json(L, it->value, std::strcmp(it->name.GetString(), "id2label") == 0);
        lua_rawset(L, -3);
      }
      break;
  }
}

// Pushes the config as a Lua table (every key of config.json, plus the resolved fields).
void push_config(lua_State* L, const ModelConfig& c) {
  std::string text = config_to_json(c);
  rapidjson::Document doc;
  if (!json_parse(doc, text)) throw Error("config: cannot read back its own JSON");
  push_json(L, doc, false);  // [cfg]
  lua_pushinteger(L, static_cast<lua_Integer>(c.num_labels));
  lua_setfield(L, -2, "num_labels");
}

// ---- options ---------------------------------------------------------------------------------------

ModelHead head_from_name(lua_State* L, std::string_view s) {
  if (s == "base") return ModelHead::Base;
  if (s == "causal_lm") return ModelHead::CausalLM;
  if (s == "sequence_classification") return ModelHead::SequenceClassification;
  raise_error(L, "unknown model head '" + std::string(s) + "'");
}

// nn.from_pretrained(folder, head, {dtype=, device=, num_labels=, id2label=, label2id=, problem_type=,
//                    attn_implementation=})
// → model, {missing=, unexpected=, warnings=}
int l_from_pretrained(lua_State* L) {
  std::string folder(check_string_view(L, 1));
  ModelHead head = head_from_name(L, check_string_view(L, 2));
  Options o(L, 3, "from_pretrained",
            {{"dtype", OptType::String}, {"device", OptType::String}, {"num_labels", OptType::Integer},
             {"id2label", OptType::Table}, {"label2id", OptType::Table}, {"problem_type", OptType::String},
             {"attn_implementation", OptType::String}, {"quantization_config", OptType::String}});
  LoadOptions lo;
  if (o.has("quantization_config"))
    lo.quant4 = quant4_options_from_json(o.string("quantization_config", ""), "from_pretrained");
  lo.attn_implementation = o.string("attn_implementation", "");
  check_attn_implementation(lo.attn_implementation);
  lo.head = head;
  lo.dtype = o.string("dtype", "auto");
  lo.device = o.string("device", "cpu");
  if (o.has("num_labels")) lo.num_labels = o.integer("num_labels", 2);
  if (o.has("id2label")) {
    o.push("id2label");  // [t]
    lua_pushnil(L);
    while (lua_next(L, -2)) {  // [t, k, v]
      if (lua_type(L, -2) != LUA_TNUMBER || lua_type(L, -1) != LUA_TSTRING)
        raise_error(L, "from_pretrained: id2label must map integer ids to label names");
      lo.id2label[static_cast<int64_t>(lua_tonumber(L, -2))] = lua_tostring(L, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (o.has("label2id")) {
    o.push("label2id");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TNUMBER)
        raise_error(L, "from_pretrained: label2id must map label names to integer ids");
      lo.label2id[lua_tostring(L, -2)] = static_cast<int64_t>(lua_tonumber(L, -1));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lo.problem_type = o.string("problem_type", "");
  LoadReport report;
  std::shared_ptr<Model> m = model_from_pretrained(folder, lo, &report);
  lua_push_model(L, m);
  lua_createtable(L, 0, 3);
  auto push_list = [&](const std::vector<std::string>& v, const char* key) {
    lua_createtable(L, static_cast<int>(v.size()), 0);
    for (size_t i = 0; i < v.size(); ++i) {
      lua_pushlstring(L, v[i].data(), v[i].size());
      lua_rawseti(L, -2, static_cast<int>(i + 1));
    }
    lua_setfield(L, -2, key);
  };
  push_list(report.missing, "missing_keys");
  push_list(report.unexpected, "unexpected_keys");
  push_list(report.mismatched, "mismatched_keys");
  std::string w = report.warnings(m->class_name(), folder);
  lua_pushlstring(L, w.data(), w.size());
  lua_setfield(L, -2, "warnings");
  return 2;
}

// nn.from_config(config (JSON text or table), head, {dtype=, device=, attn_implementation=}) → model
// (random init)
int l_from_config(lua_State* L) {
  std::string text;
  if (lua_istable(L, 1)) {
    text = lua_json_encode(L, 1, 0, "config");
  } else {
    text = std::string(check_string_view(L, 1));
  }
  std::string_view json = text;
  ModelHead head = head_from_name(L, check_string_view(L, 2));
  Options o(L, 3, "from_config",
            {{"dtype", OptType::String}, {"device", OptType::String}, {"attn_implementation", OptType::String},
             {"quantization_config", OptType::String}});
  ModelConfig c = config_parse(json, "config");
  c.attn_implementation = o.string("attn_implementation", "");
  check_attn_implementation(c.attn_implementation);
  std::string dt = o.string("dtype", c.dtype.empty() ? "float32" : c.dtype);
  std::optional<Quant4Options> quant;
  if (o.has("quantization_config"))
    quant = quant4_options_from_json(o.string("quantization_config", ""), "from_config");
  lua_push_model(L, model_from_config(c, head, dtype_from_string(dt), device_from_string(o.string("device", "cpu")),
                                      quant ? &*quant : nullptr));
  return 1;
}

// nn.load_config(folder) → table
int l_load_config(lua_State* L) {
  push_config(L, config_load(std::string(check_string_view(L, 1))));
  return 1;
}

// ---- model methods ---------------------------------------------------------------------------------

at::Tensor opt_tensor_field(lua_State* L, int tbl, const char* key) {
  lua_getfield(L, tbl, key);
  at::Tensor t;
  if (!lua_isnil(L, -1)) t = lua_to_tensor(L, lua_gettop(L));
  lua_pop(L, 1);
  return t;
}

at::Tensor opt_index_field(lua_State* L, int tbl, const char* key) {
  lua_getfield(L, tbl, key);
  at::Tensor t;
  if (!lua_isnil(L, -1)) t = lua_to_index_tensor(L, lua_gettop(L), key);
  lua_pop(L, 1);
  return t;
}

// model(inputs) / model:forward(inputs) → {loss=, logits=} (base models: {last_hidden_state=})
int m_forward(lua_State* L) {
  Model& m = self(L);
  check_table(L, 2);
  static const char* const known[] = {"input_ids", "attention_mask", "labels", "token_type_ids", "position_ids",
                                      "num_items_in_batch", nullptr};
  lua_pushnil(L);
  while (lua_next(L, 2)) {  // [k, v]
    lua_pop(L, 1);
    bool ok = false;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (int i = 0; known[i]; ++i) ok = ok || std::strcmp(known[i], lua_tostring(L, -1)) == 0;
    if (!ok) {
      std::vector<std::string> names;
      for (int i = 0; known[i]; ++i) names.push_back(known[i]);
      std::string k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1);
      std::string hint = suggest_closest(k, names);
      raise_error(L, m.class_name() + ": unknown input '" + k + "'" + (hint.empty() ? "" : " (did you mean '" + hint + "'?)"));
    }
  }
  ForwardArgs a;
  a.input_ids = opt_index_field(L, 2, "input_ids");
  if (!a.input_ids.defined()) raise_error(L, m.class_name() + ": inputs need input_ids");
  if (a.input_ids.dim() == 1) a.input_ids = a.input_ids.unsqueeze(0);
  a.attention_mask = opt_tensor_field(L, 2, "attention_mask");
  if (a.attention_mask.defined() && a.attention_mask.dim() == 1) a.attention_mask = a.attention_mask.unsqueeze(0);
  a.labels = opt_tensor_field(L, 2, "labels");
  a.token_type_ids = opt_index_field(L, 2, "token_type_ids");
  if (a.token_type_ids.defined() && a.token_type_ids.dim() == 1) a.token_type_ids = a.token_type_ids.unsqueeze(0);
  a.position_ids = opt_index_field(L, 2, "position_ids");
  lua_getfield(L, 2, "num_items_in_batch");
  if (lua_type(L, -1) == LUA_TNUMBER) a.num_items_in_batch = lua_tonumber(L, -1);
  else if (lua_is_tensor(L, -1)) a.num_items_in_batch = lua_check_tensor(L, -1).to(at::kDouble).item<double>();
  lua_pop(L, 1);
  std::optional<at::NoGradGuard> no_grad;
  if (!m.is_training()) no_grad.emplace();
  ForwardOutput out = m.forward(a);
  lua_createtable(L, 0, 2);
  if (out.loss.defined()) {
    lua_push_tensor(L, out.loss);
    lua_setfield(L, -2, "loss");
  }
  lua_push_tensor(L, out.logits);
  lua_setfield(L, -2, m.head() == ModelHead::Base ? "last_hidden_state" : "logits");
  return 1;
}

int m_call(lua_State* L) { return m_forward(L); }

// model:generate(input_ids, {max_new_tokens=, do_sample=, temperature=, top_p=, top_k=,
//                            eos_token_id=, pad_token_id=, attention_mask=}) → Tensor
int m_generate(lua_State* L) {
  Model& m = self(L);
  at::Tensor ids = lua_to_index_tensor(L, 2, "generate: input_ids");
  if (ids.dim() == 1) ids = ids.unsqueeze(0);
  Options o(L, 3, "generate",
            {{"max_new_tokens", OptType::Integer}, {"do_sample", OptType::Boolean}, {"temperature", OptType::Number},
             {"top_p", OptType::Number}, {"top_k", OptType::Integer}, {"eos_token_id", OptType::Any},
             {"pad_token_id", OptType::Integer}, {"attention_mask", OptType::Any}});
  GenerateOptions g;
  g.max_new_tokens = o.integer("max_new_tokens", 20);
  g.do_sample = o.boolean("do_sample", false);
  g.temperature = o.number("temperature", 1.0);
  g.top_p = o.number("top_p", 1.0);
  g.top_k = o.integer("top_k", 50);
  g.pad_token_id = o.integer("pad_token_id", m.config().pad_token_id);
  g.eos_token_ids = m.config().eos_token_ids;
  if (o.has("eos_token_id")) {
    o.push("eos_token_id");
    g.eos_token_ids.clear();
    if (lua_type(L, -1) == LUA_TNUMBER) g.eos_token_ids.push_back(check_int64(L, -1));
    else if (lua_istable(L, -1))
      for (size_t i = 1; i <= lua_objlen(L, -1); ++i) {
        lua_rawgeti(L, -1, static_cast<int>(i));
        g.eos_token_ids.push_back(check_int64(L, -1));
        lua_pop(L, 1);
      }
    else if (!(lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
      raise_error(L, "generate: eos_token_id must be a number, a list of numbers, or false");
    lua_pop(L, 1);
  }
  if (o.has("attention_mask")) {
    o.push("attention_mask");
    g.attention_mask = lua_to_tensor(L, lua_gettop(L), at::kLong);
    if (g.attention_mask.dim() == 1) g.attention_mask = g.attention_mask.unsqueeze(0);
    lua_pop(L, 1);
  }
  lua_push_tensor(L, m.generate(ids, g));
  return 1;
}

// model:push_to_hub(repo_id [, opts]): transformers.hub_push (Lua) saves and uploads the model.
int m_push_to_hub(lua_State* L) {
  self(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "transformers.hub_push");
  lua_call(L, 1, 1);                    // [args..., module]
  lua_getfield(L, -1, "push");          // [args..., module, push]
  lua_replace(L, -2);                   // [args..., push]
  lua_insert(L, 1);                     // [push, self, repo_id, opts]
  lua_pushliteral(L, "model");          // [push, self, repo_id, opts, "model"]
  lua_insert(L, 3);                     // [push, self, "model", repo_id, opts]
  lua_settop(L, 5);
  lua_pushliteral(L, "push_to_hub");
  lua_call(L, 5, 1);
  return 1;
}

// model:save_pretrained(dir, {max_shard_size = "5GB" | bytes})
int m_save_pretrained(lua_State* L) {
  Model& m = self(L);
  std::string dir(check_string_view(L, 2));
  Options o(L, 3, "save_pretrained", {{"max_shard_size", OptType::NumberOrString}, {"safe_serialization", OptType::Boolean}});
  uint64_t max_shard = 0;
  if (o.has("max_shard_size")) {
    o.push("max_shard_size");
    max_shard = lua_type(L, -1) == LUA_TNUMBER ? static_cast<uint64_t>(lua_tonumber(L, -1)) : parse_size(lua_tostring(L, -1));
    lua_pop(L, 1);
  } else {
    max_shard = parse_size("50GB");  // HF 5's default
  }
  if (!o.boolean("safe_serialization", true)) raise_error(L, "not supported yet: save_pretrained without safetensors");
  m.save_pretrained(dir, max_shard);
  return 0;
}

// model:gradient_checkpointing_enable({gradient_checkpointing_kwargs = {use_reentrant = }})
int m_gradient_checkpointing_enable(lua_State* L) {
  Model& m = self(L);
  Options o(L, 2, "gradient_checkpointing_enable", {{"gradient_checkpointing_kwargs", OptType::Table}});
  if (o.has("gradient_checkpointing_kwargs")) {
    o.push("gradient_checkpointing_kwargs");  // [kw]
    Options kw(L, lua_gettop(L), "gradient_checkpointing_kwargs", {{"use_reentrant", OptType::Boolean},
                                                                    {"preserve_rng_state", OptType::Boolean}});
    // Both of torch's variants give the same gradients; ours is one autograd node per block
    // whose inputs include the block's trainable parameters, so neither needs input grads.
    if (kw.has("preserve_rng_state") && !kw.boolean("preserve_rng_state", true))
      raise_error(L, "not supported yet: gradient_checkpointing_kwargs.preserve_rng_state = false");
    lua_pop(L, 1);
  }
  m.set_gradient_checkpointing(true);
  return 0;
}

int m_gradient_checkpointing_disable(lua_State* L) {
  self(L).set_gradient_checkpointing(false);
  return 0;
}

int p_is_gradient_checkpointing(lua_State* L) {
  lua_pushboolean(L, self(L).gradient_checkpointing());
  return 1;
}

int p_is_loaded_in_4bit(lua_State* L) {
  lua_pushboolean(L, self(L).is_loaded_in_4bit());
  return 1;
}

int m_train(lua_State* L) {
  self(L).train(opt_boolean(L, 2, true));
  lua_settop(L, 1);
  return 1;
}

int m_eval(lua_State* L) {
  self(L).eval();
  lua_settop(L, 1);
  return 1;
}

// model:to("cuda" | "bfloat16" | {device=, dtype=}) → model
int m_to(lua_State* L) {
  Model& m = self(L);
  std::optional<at::Device> dev;
  std::optional<at::ScalarType> dt;
  if (lua_type(L, 2) == LUA_TSTRING) {
    std::string s = lua_tostring(L, 2);
    if (s == "cpu" || s.rfind("cuda", 0) == 0) dev = device_from_string(s);
    else dt = dtype_from_string(s);
  } else {
    Options o(L, 2, "to", {{"device", OptType::String}, {"dtype", OptType::String}});
    if (o.has("device")) dev = device_from_string(o.string("device", "cpu"));
    if (o.has("dtype")) dt = dtype_from_string(o.string("dtype", "float32"));
  }
  m.to(dev, dt);
  lua_settop(L, 1);
  return 1;
}

// model:named_parameters() → { {name, tensor}, ... }
int m_named_parameters(lua_State* L) {
  const auto& ps = self(L).named_parameters();
  lua_createtable(L, static_cast<int>(ps.size()), 0);
  for (size_t i = 0; i < ps.size(); ++i) {
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, ps[i].first.data(), ps[i].first.size());
    lua_rawseti(L, -2, 1);
    lua_push_tensor(L, ps[i].second);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

// model:get_parameter(name) → Tensor
int m_get_parameter(lua_State* L) {
  lua_push_tensor(L, self(L).parameter(std::string(check_string_view(L, 2))));
  return 1;
}

// model:num_parameters{only_trainable=} → the parameter count (only those with requires_grad)
int m_num_parameters(lua_State* L) {
  Options o(L, 2, "num_parameters", {{"only_trainable", OptType::Boolean}, {"exclude_embeddings", OptType::Boolean}});
  if (o.boolean("exclude_embeddings", false)) raise_error(L, "not supported yet: num_parameters exclude_embeddings");
  if (!o.boolean("only_trainable", false)) {
    lua_pushnumber(L, static_cast<double>(self(L).num_parameters()));
    return 1;
  }
  int64_t n = 0;
  for (const auto& [name, t] : self(L).named_parameters())
    if (t.requires_grad()) n += t.numel();
  lua_pushnumber(L, static_cast<double>(n));
  return 1;
}

int p_config(lua_State* L) {
  push_config(L, self(L).config());
  return 1;
}

int p_class_name(lua_State* L) {
  lua_pushstring(L, self(L).class_name().c_str());
  return 1;
}

int p_dtype(lua_State* L) {
  lua_pushstring(L, dtype_to_string(self(L).dtype()).c_str());
  return 1;
}

int p_device(lua_State* L) {
  lua_pushstring(L, self(L).device().str().c_str());
  return 1;
}

int p_training(lua_State* L) {
  lua_pushboolean(L, self(L).is_training());
  return 1;
}

int m_tostring(lua_State* L) {
  Model& m = self(L);
  std::string s = m.class_name() + " (" + std::to_string(m.num_parameters()) + " parameters, " +
                  dtype_to_string(m.dtype()) + ", " + m.device().str() + ")";
  lua_pushlstring(L, s.data(), s.size());
  return 1;
}

const ClassSpec kModelClass = {
    "skyrun.Model",
    "Model",
    {
        {"forward", safe<m_forward>},
        {"generate", safe<m_generate>},
        {"save_pretrained", safe<m_save_pretrained>},
        {"push_to_hub", safe<m_push_to_hub>},
        {"train", safe<m_train>},
        {"eval", safe<m_eval>},
        {"to", safe<m_to>},
        {"named_parameters", safe<m_named_parameters>},
        {"get_parameter", safe<m_get_parameter>},
        {"num_parameters", safe<m_num_parameters>},
        {"gradient_checkpointing_enable", safe<m_gradient_checkpointing_enable>},
        {"gradient_checkpointing_disable", safe<m_gradient_checkpointing_disable>},
    },
    {
        {"config", safe<p_config>, nullptr},
        {"class_name", safe<p_class_name>, nullptr},
        {"dtype", safe<p_dtype>, nullptr},
        {"device", safe<p_device>, nullptr},
        {"training", safe<p_training>, nullptr},
        {"is_gradient_checkpointing", safe<p_is_gradient_checkpointing>, nullptr},
        {"is_loaded_in_4bit", safe<p_is_loaded_in_4bit>, nullptr},
    },
    safe<m_tostring>,
    safe<m_call>,
};

// ---- safetensors for Lua ------------------------------------------------------------------------------

// nn.safetensors_load(path) → {name = Tensor}, metadata
int l_safetensors_load(lua_State* L) {
  std::string path(check_string_view(L, 1));
  auto f = SafetensorsFile::open(path);
  lua_createtable(L, 0, static_cast<int>(f->header().tensors.size()));
  for (const auto& e : f->header().tensors) {
    at::ScalarType st;
    switch (e.dtype) {
      case Dtype::F64: st = at::kDouble; break;
      case Dtype::F32: st = at::kFloat; break;
      case Dtype::F16: st = at::kHalf; break;
      case Dtype::BF16: st = at::kBFloat16; break;
      case Dtype::I64: st = at::kLong; break;
      case Dtype::I32: st = at::kInt; break;
      case Dtype::I16: st = at::kShort; break;
      case Dtype::I8: st = at::kChar; break;
      case Dtype::U8: st = at::kByte; break;
      case Dtype::BOOL: st = at::kBool; break;
      default: raise_error(L, path + ": tensor '" + e.name + "': not supported yet: dtype " + dtype_name(e.dtype));
    }
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(st));
    f->read(e, t.data_ptr());
    lua_push_tensor(L, t);
    lua_setfield(L, -2, e.name.c_str());
  }
  lua_createtable(L, 0, static_cast<int>(f->header().metadata.size()));
  for (const auto& [k, v] : f->header().metadata) {
    lua_pushlstring(L, v.data(), v.size());
    lua_setfield(L, -2, k.c_str());
  }
  return 2;
}

// nn.safetensors_header(path) → { {name=, dtype=, shape=, offsets={b, e}}, ... }, metadata
int l_safetensors_header(lua_State* L) {
  auto f = SafetensorsFile::open(std::string(check_string_view(L, 1)));
  const auto& h = f->header();
  lua_createtable(L, static_cast<int>(h.tensors.size()), 0);
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    const auto& e = h.tensors[i];
    lua_createtable(L, 0, 4);
    lua_pushstring(L, e.name.c_str());
    lua_setfield(L, -2, "name");
    lua_pushstring(L, dtype_name(e.dtype));
    lua_setfield(L, -2, "dtype");
    lua_createtable(L, static_cast<int>(e.shape.size()), 0);
    for (size_t j = 0; j < e.shape.size(); ++j) {
      lua_pushnumber(L, static_cast<double>(e.shape[j]));
      lua_rawseti(L, -2, static_cast<int>(j + 1));
    }
    lua_setfield(L, -2, "shape");
    lua_createtable(L, 2, 0);
    lua_pushnumber(L, static_cast<double>(e.begin));
    lua_rawseti(L, -2, 1);
    lua_pushnumber(L, static_cast<double>(e.end));
    lua_rawseti(L, -2, 2);
    lua_setfield(L, -2, "data_offsets");
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  lua_createtable(L, 0, 0);
  for (const auto& [k, v] : h.metadata) {
    lua_pushlstring(L, v.data(), v.size());
    lua_setfield(L, -2, k.c_str());
  }
  return 2;
}

// nn.safetensors_save(path, {name = Tensor}, metadata?)
int l_safetensors_save(lua_State* L) {
  std::string path(check_string_view(L, 1));
  check_table(L, 2);
  std::map<std::string, at::Tensor> tensors;  // sorted by name
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    if (lua_type(L, -2) != LUA_TSTRING) raise_error(L, "safetensors_save: tensor names must be strings");
    tensors[lua_tostring(L, -2)] = lua_to_tensor(L, lua_gettop(L)).detach().to(at::kCPU).contiguous();
    lua_pop(L, 1);
  }
  std::map<std::string, std::string> meta;
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        raise_error(L, "safetensors_save: metadata must map strings to strings");
      meta[lua_tostring(L, -2)] = lua_tostring(L, -1);
      lua_pop(L, 1);
    }
  }
  std::vector<TensorToWrite> out;
  for (const auto& [name, t] : tensors) {
    Dtype d;
    switch (t.scalar_type()) {
      case at::kDouble: d = Dtype::F64; break;
      case at::kFloat: d = Dtype::F32; break;
      case at::kHalf: d = Dtype::F16; break;
      case at::kBFloat16: d = Dtype::BF16; break;
      case at::kLong: d = Dtype::I64; break;
      case at::kInt: d = Dtype::I32; break;
      case at::kShort: d = Dtype::I16; break;
      case at::kChar: d = Dtype::I8; break;
      case at::kByte: d = Dtype::U8; break;
      case at::kBool: d = Dtype::BOOL; break;
      default: raise_error(L, "safetensors_save: tensor '" + name + "' has an unsupported dtype");
    }
    out.push_back(TensorToWrite{name, d, t.sizes().vec(), t.data_ptr()});
  }
  safetensors_write(path, out, meta);
  return 0;
}

int l_set_seed(lua_State* L) {
  torch::manual_seed(static_cast<uint64_t>(check_int64(L, 1)));
  return 0;
}

}  // namespace

std::shared_ptr<Model> lua_check_model(lua_State* L, int idx) { return class_check_shared<Model>(L, idx, kModelClass); }

std::shared_ptr<Model> lua_test_model(lua_State* L, int idx) {
  Handle* h = class_test_handle(L, idx, kModelClass);
  return h && h->ptr ? std::static_pointer_cast<Model>(h->ptr) : nullptr;
}

void lua_push_model(lua_State* L, std::shared_ptr<Model> model) { class_push(L, kModelClass, std::move(model)); }

}  // namespace sky::nn

extern "C" __attribute__((visibility("default"))) int luaopen_skyrun_nn(lua_State* L) {
  using namespace sky::nn;
  const luaL_Reg fns[] = {
      {"from_pretrained", sky::safe<l_from_pretrained>},
      {"from_config", sky::safe<l_from_config>},
      {"load_config", sky::safe<l_load_config>},
      {"safetensors_load", sky::safe<l_safetensors_load>},
      {"safetensors_header", sky::safe<l_safetensors_header>},
      {"safetensors_save", sky::safe<l_safetensors_save>},
      {"set_seed", sky::safe<l_set_seed>},
      {nullptr, nullptr},
  };
  lua_newtable(L);
  luaL_register(L, nullptr, fns);
  return 1;
}
