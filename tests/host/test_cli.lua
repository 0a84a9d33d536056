-- The skyrun command line: scripts, -e, stdin, arg, errors, exit codes, embedded modules.
local T = require "testlib"

T.test("-e runs code and prints its output", function()
  local out, err, code = T.skyrun { "-e", "print(1+1)" }
  T.eq(out, "2\n")
  T.eq(code, 0, err)
end)

T.test("a script sees its arguments in arg as the lua command sets them", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/t.lua", 'print(arg[0], arg[1], arg[2], select("#", ...), ...)\n')
  local out, err, code = T.skyrun { dir .. "/t.lua", "a", "b" }
  T.eq(code, 0, err)
  T.eq(out, dir .. "/t.lua\ta\tb\t2\ta\tb\n")
end)

T.test("an error on line 3 prints file:line and a traceback, and exits 1", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/t.lua", "local x = 1\nlocal y = 2\nerror('boom')\n")
  local out, err, code = T.skyrun({ "t.lua" }, { cwd = dir })
  T.eq(code, 1)
  T.contains(err, "t.lua:3: boom")
  T.contains(err, "stack traceback:")
end)

T.test("a C++ exception thrown in a binding is a catchable Lua error", function()
  local core = require "sky.core"
  local ok, msg = pcall(core.debug_throw, "native failure 42")
  T.eq(ok, false)
  T.contains(msg, "native failure 42")
  -- and the state is still usable afterwards
  T.eq(select(2, pcall(core.debug_throw, "again")):match("again") ~= nil, true)
end)

T.test("an uncaught C++ exception ends the script with its message, not an abort", function()
  local out, err, code = T.skyrun { "-e", "require('sky.core').debug_throw('from C++')" }
  T.eq(code, 1)
  T.contains(err, "from C++")
end)

T.test("skyrun - reads the script from standard input", function()
  local out, err, code = T.skyrun({ "-", "x" }, { stdin = "print('from stdin', arg[1])" })
  T.eq(code, 0, err)
  T.eq(out, "from stdin\tx\n")
end)

T.test("a syntax error names the file and line", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/bad.lua", "local a =\n\n")
  local _, err, code = T.skyrun({ "bad.lua" }, { cwd = dir })
  T.eq(code, 1)
  T.contains(err, "bad.lua:")
end)

T.test("a missing script is an error naming it", function()
  local _, err, code = T.skyrun { "/nonexistent/job.lua" }
  T.eq(code, 1)
  T.contains(err, "/nonexistent/job.lua")
end)

T.test("--help and --version describe the program", function()
  local out, _, code = T.skyrun { "--help" }
  T.eq(code, 0)
  T.contains(out, "usage: skyrun")
  T.contains(out, "skyrun worker ")      -- every registered subcommand has its line
  T.contains(out, "skyrun ssh-worker ")
  out, _, code = T.skyrun { "--version" }
  T.eq(code, 0)
  T.contains(out, "skyrun " .. require("sky").version)
  T.contains(out, "LuaJIT 2.1")
  T.contains(out, "LibTorch ")
  T.contains(out, "CUDA: ")
  T.contains(out, "NCCL: ")
end)

T.test("a script's own folder and LUA_PATH are searched for modules", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/myplugin.lua", "return { hello = function() return 'hi from plugin' end }\n")
  T.write_file(dir .. "/job.lua", "print(require('myplugin').hello())\n")
  local out, err, code = T.skyrun { dir .. "/job.lua" }
  T.eq(code, 0, err)
  T.eq(out, "hi from plugin\n")
  local other = T.tmpdir()
  T.write_file(other .. "/viapath.lua", "return 'via LUA_PATH'\n")
  out, err, code = T.sh(string.format("LUA_PATH=%s %s -e %s", T.shell_quote(other .. "/?.lua;;"),
    T.shell_quote(T.skyrun_bin), T.shell_quote("print(require 'viapath')")))
  T.eq(code, 0, err)
  T.eq(out, "via LUA_PATH\n")
end)

T.test("a copy of the binary alone in an empty folder has its Lua modules", function()
  local dir = T.tmpdir()
  T.exec("cp " .. T.shell_quote(T.skyrun_bin) .. " " .. T.shell_quote(dir .. "/skyrun"))
  local out, err, code = T.sh("cd " .. T.shell_quote(dir) .. " && env -i PATH=/usr/bin:/bin ./skyrun -e " ..
    T.shell_quote("local sky = require 'sky'; print(type(sky), sky.version ~= nil, package.loaded['sky.inspect'] ~= nil)"))
  T.eq(code, 0, err)
  T.eq(out, "table\ttrue\ttrue\n")
  local listing = T.sh("ls -A " .. T.shell_quote(dir))
  T.eq(listing, "skyrun\n")
end)

T.run()
