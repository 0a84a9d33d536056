// `skyrun instances` and `skyrun down [id]`: what skyrun started on clouds (lua/sky/cloud/cli.lua
// does the work; this file only registers the subcommands and runs it).
#include <cstdio>

#include "host/cli.hpp"
#include "host/modules.hpp"
#include "host/runtime.hpp"

namespace sky {
namespace {

// Runs require("sky.cloud.cli").main(command, arg1, ...) and returns its exit status.
int run_cloud_cli(const char* command, int argc, char** argv) {
  lua_State* L = runtime_new_state();
  if (!L) {
    fprintf(stderr, "skyrun %s: cannot create Lua state: not enough memory\n", command);
    return 1;
  }
  int rc = 1;
  lua_getglobal(L, "require");  // [require]
  lua_pushliteral(L, "sky.cloud.cli");
  if (!runtime_pcall(L, 1, 1)) {  // [cli | err]
    cli_report(L);
  } else {
    lua_getfield(L, -1, "main");  // [cli, main]
    lua_remove(L, -2);            // [main]
    lua_pushstring(L, command);
    for (int i = 1; i < argc; ++i) lua_pushstring(L, argv[i]);
    cli_catch_sigint(L);
    bool ok = runtime_pcall(L, argc, 1);  // [status | err]
    cli_catch_sigint(nullptr);
    if (!ok) cli_report(L);
    else rc = lua_isnumber(L, -1) ? static_cast<int>(lua_tointeger(L, -1)) : 0;
  }
  lua_settop(L, 0);
  runtime_free_state(L);
  return rc;
}

int instances_main(int argc, char** argv) { return run_cloud_cli("instances", argc, argv); }
int down_main(int argc, char** argv) { return run_cloud_cli("down", argc, argv); }

}  // namespace
}  // namespace sky

SKY_SUBCOMMAND("instances", sky::instances_main, "list the cloud machines skyrun started that are still there");
SKY_SUBCOMMAND("down", sky::down_main, "[POOL_ID|INSTANCE_ID ...] terminate them (all when none is named)");
