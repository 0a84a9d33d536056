// The command line: `skyrun [options] [script [args]]`, subcommands, the REPL.
#pragma once

#include <lua.hpp>

namespace sky {

int cli_main(int argc, char** argv);

// The interactive loop on a terminal. Returns the process exit status.
int repl_run(lua_State* L);

// Installs a SIGINT handler that interrupts Lua code running in L (nullptr: restore default).
void cli_catch_sigint(lua_State* L);

// Prints a failed runtime_pcall's message ("skyrun: ...") to stderr and pops it.
void cli_report(lua_State* L);

}  // namespace sky
