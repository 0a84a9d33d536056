// The native module "huggingface_hub.core": the hub client's functions for Lua. Option tables are
// read here (unknown keys refused); lua/huggingface_hub/init.lua is the documented surface.
#include <string>
#include <vector>

#include "host/bind.hpp"
#include "host/modules.hpp"
#include "host/runtime.hpp"
#include "hub/hub.hpp"
#include "hub/upload.hpp"

namespace sky {
namespace {

// The options every call shares, as huggingface_hub's keyword arguments.
#define HUB_REPO_OPTIONS                                                                                  \
  {"revision", OptType::String}, {"repo_type", OptType::String}, {"cache_dir", OptType::String},         \
      {"token", OptType::Any}, {"local_files_only", OptType::Boolean}, {"endpoint", OptType::String}

void read_repo_options(lua_State* L, const Options& o, hub::RepoOptions& r, const char* where) {
  r.revision = o.string("revision", "main");
  r.repo_type = hub::repo_type_parse(o.string("repo_type", "model"));
  r.cache_dir = o.string("cache_dir", "");
  r.endpoint = o.string("endpoint", "");
  r.local_files_only = o.boolean("local_files_only", false);
  o.push("token");  // [token]
  if (lua_type(L, -1) == LUA_TSTRING) {
    r.token = std::string(lua_tostring(L, -1));
  } else if (lua_type(L, -1) == LUA_TBOOLEAN) {
    if (!lua_toboolean(L, -1)) {
      r.token = std::string();  // token=false: send none
    } else {
      std::optional<std::string> t = hub::get_token();
      if (!t) {
        lua_pop(L, 1);
        throw Error(std::string(where) + ": token=true but no token was found: set HF_TOKEN or log in (`hf auth login`)");
      }
      r.token = *t;
    }
  } else if (!lua_isnil(L, -1)) {
    const char* got = type_name_at(L, -1);
    lua_pop(L, 1);
    throw Error(std::string("option 'token' to '") + where + "' must be a string or a boolean (got " + got + ")");
  }
  lua_pop(L, 1);  // []
  r.cancelled = [L] { return runtime_interrupt_pending(L); };
}

// A string or an array of strings at the top of the stack. Pops 1.
std::vector<std::string> pop_string_list(lua_State* L, const char* key, const char* where) {
  std::vector<std::string> out;
  if (lua_type(L, -1) == LUA_TSTRING) {
    out.emplace_back(lua_tostring(L, -1));
  } else if (lua_istable(L, -1)) {
    int n = static_cast<int>(lua_objlen(L, -1));
    for (int i = 1; i <= n; ++i) {
      lua_rawgeti(L, -1, i);  // [list, item]
      if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 2);
        throw Error(std::string("option '") + key + "' to '" + where + "' must hold strings (item " +
                    std::to_string(i) + " is not)");
      }
      out.emplace_back(lua_tostring(L, -1));
      lua_pop(L, 1);  // [list]
    }
  }
  lua_pop(L, 1);
  return out;
}

// Runs F; a download stopped by Ctrl-C disarms the pending interrupt so that exactly one error,
// "interrupted!", reaches the script (the hook would otherwise fire again in the error handler).
template <int (*F)(lua_State*)>
int cancellable(lua_State* L) {
  try {
    return F(L);
  } catch (const hub::HubError& e) {
    if (e.kind() == hub::ErrorKind::cancelled && runtime_interrupt_take(L)) throw Error("interrupted!");
    throw;
  }
}

void push_optional_path(lua_State* L, const std::optional<std::string>& p) {
  if (p) lua_pushlstring(L, p->data(), p->size());
  else lua_pushnil(L);
}

void push_string_array(lua_State* L, const std::vector<std::string>& v) {
  lua_createtable(L, static_cast<int>(v.size()), 0);  // [t]
  for (size_t i = 0; i < v.size(); ++i) {
    lua_pushlstring(L, v[i].data(), v[i].size());
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
}

// hf_hub_download(repo_id, filename [, opts]) -> path | nil (optional=true and the file is absent)
int hub_hf_hub_download(lua_State* L) {
  std::string repo_id(check_string_view(L, 1));
  std::string filename(check_string_view(L, 2));
  Options o(L, 3, "hf_hub_download",
            {HUB_REPO_OPTIONS, {"optional", OptType::Boolean}, {"force_download", OptType::Boolean}});
  hub::DownloadOptions d;
  read_repo_options(L, o, d, "hf_hub_download");
  d.force_download = o.boolean("force_download", false);
  if (o.boolean("optional", false)) push_optional_path(L, hub::hf_hub_download_optional(repo_id, filename, d));
  else push_optional_path(L, hub::hf_hub_download(repo_id, filename, d));
  return 1;
}

// snapshot_download(repo_id [, opts]) -> snapshot folder
int hub_snapshot_download(lua_State* L) {
  std::string repo_id(check_string_view(L, 1));
  Options o(L, 2, "snapshot_download",
            {HUB_REPO_OPTIONS, {"force_download", OptType::Boolean}, {"allow_patterns", OptType::StringOrTable},
             {"ignore_patterns", OptType::StringOrTable}, {"max_workers", OptType::Integer}});
  hub::SnapshotOptions s;
  read_repo_options(L, o, s, "snapshot_download");
  s.force_download = o.boolean("force_download", false);
  s.max_workers = static_cast<int>(o.integer("max_workers", 8));
  if (s.max_workers < 1) throw Error("option 'max_workers' to 'snapshot_download' must be at least 1");
  o.push("allow_patterns");
  s.allow_patterns = pop_string_list(L, "allow_patterns", "snapshot_download");
  o.push("ignore_patterns");
  s.ignore_patterns = pop_string_list(L, "ignore_patterns", "snapshot_download");
  std::string folder = hub::snapshot_download(repo_id, s);
  lua_pushlstring(L, folder.data(), folder.size());
  return 1;
}

// list_repo_files(repo_id [, opts]) -> { path, ... } (sorted)
int hub_list_repo_files(lua_State* L) {
  std::string repo_id(check_string_view(L, 1));
  Options o(L, 2, "list_repo_files", {HUB_REPO_OPTIONS});
  hub::RepoOptions r;
  read_repo_options(L, o, r, "list_repo_files");
  push_string_array(L, hub::list_repo_files(repo_id, r));
  return 1;
}

// resolve_model_folder(path_or_id, files [, opts]) -> folder, { present files }
// files: { "config.json", { "tokenizer_config.json", optional = true }, ... }
int hub_resolve_model_folder(lua_State* L) {
  std::string path_or_id(check_string_view(L, 1));
  check_table(L, 2);
  std::vector<hub::WantedFile> files;
  int n = static_cast<int>(lua_objlen(L, 2));
  for (int i = 1; i <= n; ++i) {
    lua_rawgeti(L, 2, i);  // [entry]
    hub::WantedFile f;
    if (lua_type(L, -1) == LUA_TSTRING) {
      f.name = lua_tostring(L, -1);
    } else if (lua_istable(L, -1)) {
      lua_rawgeti(L, -1, 1);               // [entry, name]
      lua_getfield(L, -2, "optional");     // [entry, name, optional]
      if (lua_type(L, -2) != LUA_TSTRING) {
        lua_pop(L, 3);
        throw Error("resolve_model_folder: files[" + std::to_string(i) + "] must be a name or { name, optional = true }");
      }
      f.name = lua_tostring(L, -2);
      f.optional = lua_toboolean(L, -1);
      lua_pop(L, 2);  // [entry]
    } else {
      lua_pop(L, 1);
      throw Error("resolve_model_folder: files[" + std::to_string(i) + "] must be a name or { name, optional = true }");
    }
    lua_pop(L, 1);  // []
    files.push_back(std::move(f));
  }
  Options o(L, 3, "resolve_model_folder", {HUB_REPO_OPTIONS, {"force_download", OptType::Boolean}});
  hub::DownloadOptions d;
  read_repo_options(L, o, d, "resolve_model_folder");
  d.force_download = o.boolean("force_download", false);
  hub::ResolvedFolder r = hub::resolve_model_folder(path_or_id, files, d);
  lua_pushlstring(L, r.folder.data(), r.folder.size());
  push_string_array(L, r.files);
  return 2;
}

// try_to_load_from_cache(repo_id, filename [, opts]) -> path | nil, never touching the network
int hub_try_to_load_from_cache(lua_State* L) {
  std::string repo_id(check_string_view(L, 1));
  std::string filename(check_string_view(L, 2));
  Options o(L, 3, "try_to_load_from_cache",
            {{"revision", OptType::String}, {"repo_type", OptType::String}, {"cache_dir", OptType::String}});
  hub::RepoOptions r;
  r.revision = o.string("revision", "main");
  r.repo_type = hub::repo_type_parse(o.string("repo_type", "model"));
  r.cache_dir = o.string("cache_dir", "");
  r.token = std::string();  // no lookup needed: nothing is sent
  push_optional_path(L, hub::try_to_load_from_cache(repo_id, filename, r));
  return 1;
}

// repo_folder_name(repo_id [, repo_type]) -> "models--org--name"
int hub_repo_folder_name(lua_State* L) {
  std::string repo_id(check_string_view(L, 1));
  hub::RepoType t = hub::repo_type_parse(lua_isnoneornil(L, 2) ? "model" : std::string(check_string_view(L, 2)));
  std::string name = hub::repo_folder_name(repo_id, t);
  lua_pushlstring(L, name.data(), name.size());
  return 1;
}

// settings() -> { endpoint, cache_dir, token_path, offline, has_token } (never the token itself)
int hub_settings(lua_State* L) {
  hub::Settings s = hub::Settings::from_env();
  lua_createtable(L, 0, 5);  // [t]
  lua_pushlstring(L, s.endpoint.data(), s.endpoint.size());
  lua_setfield(L, -2, "endpoint");
  lua_pushlstring(L, s.cache_dir.data(), s.cache_dir.size());
  lua_setfield(L, -2, "cache_dir");
  lua_pushlstring(L, s.token_path.data(), s.token_path.size());
  lua_setfield(L, -2, "token_path");
  lua_pushboolean(L, s.offline);
  lua_setfield(L, -2, "offline");
  lua_pushboolean(L, hub::get_token().has_value());
  lua_setfield(L, -2, "has_token");
  return 1;
}

// whoami([opts]) -> JSON text of the Hub's answer
int hub_whoami(lua_State* L) {
  Options o(L, 1, "whoami", {{"token", OptType::Any}, {"endpoint", OptType::String}});
  hub::RepoOptions r;
  read_repo_options(L, o, r, "whoami");
  std::string body = hub::whoami(r);
  lua_pushlstring(L, body.data(), body.size());
  return 1;
}

// create_repo(repo_id [, opts]) -> url
int hub_create_repo(lua_State* L) {
  std::string repo_id(check_string_view(L, 1));
  Options o(L, 2, "create_repo", {{"repo_type", OptType::String}, {"token", OptType::Any}, {"endpoint", OptType::String},
                                  {"private", OptType::Boolean}, {"exist_ok", OptType::Boolean}});
  hub::CreateRepoOptions c;
  read_repo_options(L, o, c, "create_repo");
  o.push("private");
  if (!lua_isnil(L, -1)) c.is_private = lua_toboolean(L, -1) != 0;
  lua_pop(L, 1);
  c.exist_ok = o.boolean("exist_ok", false);
  std::string url = hub::create_repo(repo_id, c);
  lua_pushlstring(L, url.data(), url.size());
  return 1;
}

// create_commit(repo_id, { {path_in_repo, local_path|false}, ... }, opts)
//   -> { commit_url, oid, lfs_uploaded = {paths}, ignored = {paths} }
int hub_create_commit(lua_State* L) {
  std::string repo_id(check_string_view(L, 1));
  check_table(L, 2);
  std::vector<hub::CommitOperation> ops;
  int n = static_cast<int>(lua_objlen(L, 2));
  for (int i = 1; i <= n; ++i) {
    lua_rawgeti(L, 2, i);     // [op]
    if (!lua_istable(L, -1)) {
      lua_pop(L, 1);
      throw Error("create_commit: operations[" + std::to_string(i) + "] must be { path_in_repo, local_path or false }");
    }
    lua_rawgeti(L, -1, 1);    // [op, path]
    lua_rawgeti(L, -2, 2);    // [op, path, local]
    if (lua_type(L, -2) != LUA_TSTRING || !(lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TBOOLEAN)) {
      lua_pop(L, 3);
      throw Error("create_commit: operations[" + std::to_string(i) + "] must be { path_in_repo, local_path or false }");
    }
    hub::CommitOperation op;
    op.path_in_repo = lua_tostring(L, -2);
    if (lua_type(L, -1) == LUA_TSTRING) op.local_path = lua_tostring(L, -1);
    lua_pop(L, 3);
    ops.push_back(std::move(op));
  }
  Options o(L, 3, "create_commit",
            {{"repo_type", OptType::String}, {"revision", OptType::String}, {"token", OptType::Any},
             {"endpoint", OptType::String}, {"commit_message", OptType::String},
             {"commit_description", OptType::String}, {"parent_commit", OptType::String},
             {"max_workers", OptType::Integer}});
  hub::CommitOptions c;
  read_repo_options(L, o, c, "create_commit");
  c.commit_message = o.string("commit_message", "");
  c.commit_description = o.string("commit_description", "");
  c.parent_commit = o.string("parent_commit", "");
  c.max_workers = static_cast<int>(o.integer("max_workers", 5));
  hub::CommitInfo info = hub::create_commit(repo_id, ops, c);
  lua_createtable(L, 0, 4);  // [t]
  lua_pushlstring(L, info.commit_url.data(), info.commit_url.size());
  lua_setfield(L, -2, "commit_url");
  lua_pushlstring(L, info.oid.data(), info.oid.size());
  lua_setfield(L, -2, "oid");
  push_string_array(L, info.lfs_uploaded);
  lua_setfield(L, -2, "lfs_uploaded");
  push_string_array(L, info.ignored);
  lua_setfield(L, -2, "ignored");
  return 1;
}

// pattern_match(pattern, path) -> boolean (fnmatch as huggingface_hub's filter_repo_objects)
int hub_pattern_match(lua_State* L) {
  lua_pushboolean(L, hub::repo_pattern_match(check_string_view(L, 1), check_string_view(L, 2)));
  return 1;
}

}  // namespace
}  // namespace sky

extern "C" int luaopen_huggingface_hub_core(lua_State* L) {
  static const luaL_Reg fns[] = {
      {"hf_hub_download", sky::safe<sky::cancellable<sky::hub_hf_hub_download>>},
      {"snapshot_download", sky::safe<sky::cancellable<sky::hub_snapshot_download>>},
      {"list_repo_files", sky::safe<sky::cancellable<sky::hub_list_repo_files>>},
      {"resolve_model_folder", sky::safe<sky::cancellable<sky::hub_resolve_model_folder>>},
      {"try_to_load_from_cache", sky::safe<sky::hub_try_to_load_from_cache>},
      {"repo_folder_name", sky::safe<sky::hub_repo_folder_name>},
      {"settings", sky::safe<sky::hub_settings>},
      {"pattern_match", sky::safe<sky::hub_pattern_match>},
      {"whoami", sky::safe<sky::cancellable<sky::hub_whoami>>},
      {"create_repo", sky::safe<sky::cancellable<sky::hub_create_repo>>},
      {"create_commit", sky::safe<sky::cancellable<sky::hub_create_commit>>},
      {nullptr, nullptr},
  };
  lua_createtable(L, 0, sizeof(fns) / sizeof(fns[0]) - 1);
  luaL_register(L, nullptr, fns);
  return 1;
}

SKY_NATIVE_MODULE("huggingface_hub.core", luaopen_huggingface_hub_core);
