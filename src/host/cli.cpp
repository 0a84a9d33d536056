// `skyrun` command line: run a script, -e code, stdin, --version, --help, subcommands, REPL.
#include "host/cli.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "host/runtime.hpp"
#include "host/modules.hpp"
#include "host/torch_loader.hpp"
#include "sky_config.h"

namespace sky {

namespace {

lua_State* volatile g_sigint_state = nullptr;

void on_sigint(int) {
  lua_State* L = g_sigint_state;
  if (L) runtime_interrupt(L);
}

const char* kUsage =
    "usage: skyrun [options] [script [args...]]\n"
    "  -e CODE      run CODE\n"
    "  -l NAME      require library NAME before the script\n"
    "  -i           enter the REPL after running the script\n"
    "  -            run the script read from standard input\n"
    "  --           stop handling options\n"
    "  -v, --version  print skyrun, LuaJIT and LibTorch versions, and whether CUDA/NCCL are usable\n"
    "  -h, --help   show this help\n";

// The usage text, then every registered subcommand with its line.
void print_usage(FILE* f) {
  fputs(kUsage, f);
  fputs("subcommands:\n", f);
  for (const Subcommand& s : subcommands()) fprintf(f, "  skyrun %-12s %s\n", s.name, s.help);
  fputs("With no arguments on a terminal, skyrun starts an interactive REPL.\n", f);
}

std::string dirname_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// arg table as lua.c builds it: arg[0] the script, arg[1..] its arguments, arg[-k] what precedes.
void build_arg_table(lua_State* L, int argc, char** argv, int script_index) {
  lua_createtable(L, argc - script_index - 1, script_index + 1);
  for (int i = 0; i < argc; ++i) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script_index);
  }
  lua_setglobal(L, "arg");
}

bool run_chunk(lua_State* L, int status, int nargs_from_arg_table) {
  if (status != 0) {
    cli_report(L);
    return false;
  }
  int nargs = 0;
  if (nargs_from_arg_table > 0) {
    lua_getglobal(L, "arg");
    for (int i = 1; i <= nargs_from_arg_table; ++i) lua_rawgeti(L, -i, i);
    lua_remove(L, -nargs_from_arg_table - 1);
    nargs = nargs_from_arg_table;
  }
  cli_catch_sigint(L);
  bool ok = runtime_pcall(L, nargs, 0);
  cli_catch_sigint(nullptr);
  if (!ok) cli_report(L);
  return ok;
}

int print_version() {
  printf("skyrun %s\n%s\n", SKY_VERSION, LUAJIT_VERSION);
  fflush(stdout);
  std::string torch = torch_module_describe();
  fputs(torch.c_str(), stdout);
  return 0;
}

}  // namespace

void cli_catch_sigint(lua_State* L) {
  g_sigint_state = L;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = L ? on_sigint : SIG_DFL;
  sigaction(SIGINT, &sa, nullptr);
}

void cli_report(lua_State* L) {
  const char* msg = lua_tostring(L, -1);
  fprintf(stderr, "skyrun: %s\n", msg ? msg : "(error object is not a string)");
  fflush(stderr);
  lua_pop(L, 1);
}

int cli_main(int argc, char** argv) {
  if (argc >= 2) {
    if (const Subcommand* sub = find_subcommand(argv[1])) return sub->main(argc - 1, argv + 1);
  }

  lua_State* L = runtime_new_state();
  if (!L) {
    fprintf(stderr, "skyrun: cannot create Lua state: not enough memory\n");
    return 1;
  }
  struct StateOwner {
    lua_State* L;
    ~StateOwner() { runtime_free_state(L); }
  } owner{L};

  bool interactive = false;
  bool ran_something = false;
  int script_index = 0;
  int i = 1;
  for (; i < argc; ++i) {
    const char* a = argv[i];
    if (a[0] != '-' || strcmp(a, "-") == 0) break;
    if (strcmp(a, "--") == 0) {
      ++i;
      break;
    }
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      print_usage(stdout);
      return 0;
    }
    if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) return print_version();
    if (strcmp(a, "-i") == 0) {
      interactive = true;
      continue;
    }
    if (strcmp(a, "-e") == 0 || strcmp(a, "-l") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "skyrun: '%s' needs an argument\n", a);
        print_usage(stderr);
        return 1;
      }
      ++i;
      continue;  // run in order below, once arg is set
    }
    fprintf(stderr, "skyrun: unrecognized option '%s'\n", a);
    print_usage(stderr);
    return 1;
  }
  script_index = i < argc ? i : argc;
  build_arg_table(L, argc, argv, script_index < argc ? script_index : 0);

  // -e and -l, in order.
  for (int j = 1; j < script_index; ++j) {
    if (strcmp(argv[j], "-e") == 0) {
      ++j;
      ran_something = true;
      if (!run_chunk(L, luaL_loadbuffer(L, argv[j], strlen(argv[j]), "=(command line)"), 0)) return 1;
    } else if (strcmp(argv[j], "-l") == 0) {
      ++j;
      lua_getglobal(L, "require");
      lua_pushstring(L, argv[j]);
      if (!runtime_pcall(L, 1, 0)) {
        cli_report(L);
        return 1;
      }
    }
  }

  if (script_index < argc) {
    const char* script = argv[script_index];
    int nargs = argc - script_index - 1;
    int status;
    if (strcmp(script, "-") == 0) {
      runtime_add_script_dir(L, ".");
      status = luaL_loadfile(L, nullptr);
    } else {
      runtime_add_script_dir(L, dirname_of(script));
      status = luaL_loadfile(L, script);
    }
    if (!run_chunk(L, status, nargs)) return 1;
    ran_something = true;
  }

  if (interactive || (!ran_something && isatty(STDIN_FILENO))) return repl_run(L);
  if (!ran_something) {
    // Not a terminal and nothing to run: the script comes from stdin, as with `lua`.
    runtime_add_script_dir(L, ".");
    if (!run_chunk(L, luaL_loadfile(L, nullptr), 0)) return 1;
  }
  return 0;
}

}  // namespace sky
