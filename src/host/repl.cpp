// The REPL: libedit line editing and history, multi-line statements, results pretty-printed by
// the Lua module sky.inspect, errors printed without leaving, Ctrl-C interrupting running code.
#include <editline/readline.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "host/cli.hpp"
#include "host/runtime.hpp"
#include "sky_config.h"

extern "C" {
#include <luajit.h>
}

namespace sky {

namespace {

std::string history_path() {
  std::string dir;
  if (const char* s = getenv("XDG_STATE_HOME"); s && *s) dir = s;
  else if (const char* h = getenv("HOME"); h && *h) dir = std::string(h) + "/.local/state";
  else return "";
  dir += "/skyrun";
  // mkdir -p, one level at a time
  for (size_t p = 1; p <= dir.size(); ++p)
    if (p == dir.size() || dir[p] == '/') mkdir(dir.substr(0, p).c_str(), 0700);
  return dir + "/history";
}

bool is_incomplete(lua_State* L, int status) {
  if (status != LUA_ERRSYNTAX) return false;
  size_t n = 0;
  const char* msg = lua_tolstring(L, -1, &n);
  static const char kEof[] = "'<eof>'";
  const size_t k = sizeof(kEof) - 1;
  return msg && n >= k && strcmp(msg + n - k, kEof) == 0;
}

// Compiles `code` as an expression first (so `x * 21` prints 42), then as a statement.
// Returns the lua_load status; on success the chunk is on the stack.
int compile(lua_State* L, const std::string& code) {
  std::string expr = "return " + code;
  if (luaL_loadbuffer(L, expr.data(), expr.size(), "=stdin") == 0) return 0;
  lua_pop(L, 1);
  return luaL_loadbuffer(L, code.data(), code.size(), "=stdin");
}

void print_results(lua_State* L, int base) {
  int n = lua_gettop(L) - base;
  if (n <= 0) return;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "sky.inspect");
  if (!runtime_pcall(L, 1, 1)) {
    cli_report(L);
    lua_settop(L, base);
    return;
  }
  int inspect = lua_gettop(L);
  std::string line;
  for (int i = base + 1; i <= base + n; ++i) {
    lua_pushvalue(L, inspect);
    lua_pushvalue(L, i);
    if (!runtime_pcall(L, 1, 1)) {
      cli_report(L);
      break;
    }
    if (i > base + 1) line += "\t";
    line += lua_tostring(L, -1) ? lua_tostring(L, -1) : "?";
    lua_pop(L, 1);
  }
  puts(line.c_str());
  fflush(stdout);
  lua_settop(L, base);
}

volatile sig_atomic_t g_prompt_interrupted = 0;
void on_prompt_sigint(int) { g_prompt_interrupted = 1; }

void catch_sigint_at_prompt() {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_prompt_sigint;  // no SA_RESTART: the terminal read returns EINTR
  sigaction(SIGINT, &sa, nullptr);
}

}  // namespace

int repl_run(lua_State* L) {
  printf("skyrun %s (%s)  Ctrl-D exits, Ctrl-C interrupts\n", SKY_VERSION, LUAJIT_VERSION);
  fflush(stdout);
  std::string hist = history_path();
  using_history();
  if (!hist.empty()) read_history(hist.c_str());

  std::string buffer;
  for (;;) {
    catch_sigint_at_prompt();
    g_prompt_interrupted = 0;
    errno = 0;
    char* raw = readline(buffer.empty() ? "> " : ">> ");
    if (!raw) {
      if (g_prompt_interrupted || errno == EINTR) {  // Ctrl-C at the prompt: drop the line
        buffer.clear();
        putchar('\n');
        continue;
      }
      putchar('\n');
      break;  // Ctrl-D
    }
    std::string line = raw;
    free(raw);
    if (g_prompt_interrupted) {
      buffer.clear();
      continue;
    }
    buffer = buffer.empty() ? line : buffer + "\n" + line;
    if (buffer.find_first_not_of(" \t") == std::string::npos) {
      buffer.clear();
      continue;
    }

    int base = lua_gettop(L);
    int status = compile(L, buffer);
    if (is_incomplete(L, status)) {
      lua_pop(L, 1);
      continue;
    }
    add_history(buffer.c_str());
    if (!hist.empty()) write_history(hist.c_str());
    buffer.clear();
    if (status != 0) {
      cli_report(L);
      continue;
    }
    // Interactive chunks run interpreted: a JIT-compiled loop never reaches the hook that
    // Ctrl-C installs. Modules they call are compiled as usual.
    luaJIT_setmode(L, -1, LUAJIT_MODE_ALLFUNC | LUAJIT_MODE_OFF);
    cli_catch_sigint(L);
    bool ok = runtime_pcall(L, 0, LUA_MULTRET);
    cli_catch_sigint(nullptr);
    if (!ok) {
      cli_report(L);
      lua_settop(L, base);
      continue;
    }
    print_results(L, base);
  }
  return 0;
}

}  // namespace sky
