-- testlib: the small harness Lua test files run under `skyrun`.
--   local T = require "testlib"
--   T.test("a name that reads as a sentence", function() T.eq(1 + 1, 2) end)
--   T.run()   -- prints one line per test, exits 1 when any failed

local inspect = require "sky.inspect"

local T = {}
local tests = {}

function T.test(name, fn) tests[#tests + 1] = { name = name, fn = fn } end

local function deep_eq(a, b, seen)
  if a == b then return true end
  if type(a) == "number" and type(b) == "number" and a ~= a and b ~= b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do if not deep_eq(v, b[k], seen) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
T.deep_eq = deep_eq

function T.eq(actual, expected, what)
  if not deep_eq(actual, expected) then
    error(string.format("%sexpected %s, got %s", what and (what .. ": ") or "", inspect(expected), inspect(actual)), 2)
  end
end

function T.ok(cond, what)
  if not cond then error("expected a true value" .. (what and (": " .. what) or ""), 2) end
  return cond
end

function T.near(actual, expected, tol, what)
  if math.abs(actual - expected) > tol then
    error(string.format("%sexpected %.10g within %g, got %.10g", what and (what .. ": ") or "", expected, tol, actual), 2)
  end
end

-- Asserts that text contains the plain substring needle.
function T.contains(text, needle, what)
  if type(text) ~= "string" or not text:find(needle, 1, true) then
    error(string.format("%sexpected %s to contain %s", what and (what .. ": ") or "", inspect(text), inspect(needle)), 2)
  end
end

function T.not_contains(text, needle, what)
  if type(text) == "string" and text:find(needle, 1, true) then
    error(string.format("%sexpected %s not to contain %s", what and (what .. ": ") or "", inspect(text), inspect(needle)), 2)
  end
end

-- Runs fn, expects it to raise; returns the message. With `needle`, the message must contain it.
function T.raises(fn, needle)
  local ok, err = pcall(fn)
  if ok then error("expected an error" .. (needle and (" containing " .. inspect(needle)) or ""), 2) end
  err = tostring(err)
  if needle and not err:find(needle, 1, true) then
    error(string.format("expected an error containing %s, got %s", inspect(needle), inspect(err)), 2)
  end
  return err
end

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
T.shell_quote = shell_quote

function T.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

function T.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

function T.file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- CPU seconds this process has used (user + system), from /proc/self/stat (1/100 s ticks).
function T.cpu_seconds()
  local f = assert(io.open("/proc/self/stat"))
  local fields = {}
  for x in f:read("*a"):match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = x end
  f:close()
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

-- Runs a shell command that must succeed (os.execute's result differs between Lua versions).
function T.exec(cmd)
  local r = os.execute(cmd)
  if not (r == 0 or r == true) then error("command failed: " .. cmd, 2) end
end

-- A fresh temporary folder, removed when the test process ends (best effort).
local tmpdirs = {}
function T.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  T.exec("mkdir -p " .. shell_quote(p))
  tmpdirs[#tmpdirs + 1] = p
  return p
end

-- Runs fn(mountpoint) with a fresh tmpfs of `size` ("64k", "2m") mounted there (root needed), for
-- full-disk tests; unmounted afterwards, also when fn raises.
function T.with_tmpfs(size, fn)
  local mnt = T.tmpdir()
  T.exec("mount -t tmpfs -o size=" .. size .. " tmpfs " .. shell_quote(mnt))
  local ok, err = xpcall(fn, debug.traceback, mnt)
  T.exec("umount -l " .. shell_quote(mnt))  -- lazy: a file a failed test left open does not keep it busy
  if not ok then error(err, 0) end
end

-- Runs a shell command; returns stdout, stderr, exit code. opts.stdin: text fed to it.
function T.sh(cmd, opts)
  opts = opts or {}
  local dir = T.tmpdir()
  local input = ""
  if opts.stdin then
    T.write_file(dir .. "/in", opts.stdin)
    input = " < " .. shell_quote(dir .. "/in")
  end
  local full = string.format("( %s ) > %s 2> %s%s; echo $? > %s", cmd, shell_quote(dir .. "/out"),
    shell_quote(dir .. "/err"), input, shell_quote(dir .. "/code"))
  os.execute(full)
  return T.read_file(dir .. "/out"), T.read_file(dir .. "/err"), tonumber(T.read_file(dir .. "/code"))
end

-- Runs a shell command that must succeed; returns its stdout, or raises naming the command and
-- what it printed.
function T.sh_ok(cmd)
  local out, err, code = T.sh(cmd)
  if code ~= 0 then error("`" .. cmd .. "` failed (exit " .. tostring(code) .. "): " .. err .. out, 2) end
  return out
end

-- The skyrun binary under test.
T.skyrun_bin = os.getenv("SKYRUN_BIN") or "skyrun"

-- Runs skyrun with a list of arguments; returns stdout, stderr, exit code.
function T.skyrun(args, opts)
  local parts = { shell_quote(T.skyrun_bin) }
  for _, a in ipairs(args) do parts[#parts + 1] = shell_quote(a) end
  local prefix = opts and opts.cwd and ("cd " .. shell_quote(opts.cwd) .. " && ") or ""
  return T.sh(prefix .. table.concat(parts, " "), opts)
end

function T.run()
  local failed = 0
  local only = os.getenv("TEST_ONLY")
  for _, t in ipairs(tests) do
    if not only or t.name:find(only, 1, true) then
      local t0 = os.clock()
      local ok, err = xpcall(t.fn, debug.traceback)
      if ok then
        print(string.format("ok   %s (%.2fs cpu)", t.name, os.clock() - t0))
      else
        failed = failed + 1
        print(string.format("FAIL %s\n     %s", t.name, tostring(err):gsub("\n", "\n     ")))
      end
      io.stdout:flush()  -- a later crash keeps the lines of the tests before it
    end
  end
  for _, d in ipairs(tmpdirs) do os.execute("rm -rf " .. shell_quote(d)) end
  print(string.format("%d tests, %d failed", #tests, failed))
  io.stdout:flush()
  os.exit(failed > 0 and 1 or 0)
end

return T
