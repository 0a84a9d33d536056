-- hub_testing: what the hub tests share: a fresh cache per test, options aimed at a loopback
-- server, a child skyrun run with a controlled environment, and readers of the cache layout.

local T = require "testlib"

local M = {}
local q = T.shell_quote

-- The variables huggingface_hub reads: a child starts with none of them unless a test sets it.
local HF_VARS = { "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE",
  "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HF_HOME", "HF_TOKEN_PATH", "HF_HUB_DISABLE_PROGRESS_BARS",
  "HF_HUB_DISABLE_IMPLICIT_TOKEN", "XDG_CACHE_HOME" }

--- Options for in-process calls: the server's endpoint, the cache given, no implicit token.
function M.opts(hub, cache, extra)
  local o = { endpoint = hub.endpoint, cache_dir = cache, token = false }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

--- Runs Lua `code` in a child skyrun whose environment has only `env` of the HF variables.
--- Returns stdout, stderr, exit code. opts.tty: run it under script(1) so stderr is a terminal.
function M.run_child(code, env, opts)
  local dir = T.tmpdir()
  local script = dir .. "/child.lua"
  T.write_file(script, code)
  local parts = { "env" }
  for _, v in ipairs(HF_VARS) do parts[#parts + 1] = "-u " .. v end
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  local cmd = table.concat(parts, " ") .. " " .. q(T.skyrun_bin) .. " " .. q(script)
  if opts and opts.tty then
    -- script(1) gives the child a pseudo-terminal; its output (stdout and stderr mixed) is a file.
    local log = dir .. "/tty.log"
    local out, err, code_ = T.sh("script -qefc " .. q(cmd) .. " " .. q(log) .. " > /dev/null")
    return T.read_file(log), err, code_
  end
  return T.sh(cmd)
end

function M.readlink(path)
  local out = T.sh("readlink " .. q(path))
  return (out:gsub("\n$", ""))
end

function M.is_symlink(path) return select(3, T.sh("test -L " .. q(path))) == 0 end
function M.exists(path) return select(3, T.sh("test -e " .. q(path))) == 0 end

--- Names in a folder, sorted.
function M.ls(dir)
  local out = T.sh("ls -A " .. q(dir) .. " 2>/dev/null")
  local names = {}
  for name in out:gmatch("[^\n]+") do names[#names + 1] = name end
  table.sort(names)
  return names
end

function M.file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

--- sha256 and git blob sha1 of a string, with the system's tools (the Hub's two kinds of ETag).
function M.sha256(data)
  local dir = T.tmpdir()
  T.write_file(dir .. "/d", data)
  return (T.sh("sha256sum " .. q(dir .. "/d")):match("^(%x+)"))
end

function M.git_blob_sha1(data)
  local dir = T.tmpdir()
  T.write_file(dir .. "/d", "blob " .. #data .. "\0" .. data)
  return (T.sh("sha1sum " .. q(dir .. "/d")):match("^(%x+)"))
end

--- Deterministic bytes of length n (a safetensors-like binary body).
function M.bytes(n, seed)
  local parts = {}
  local x = seed or 7
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    parts[i] = string.char(x % 256)
  end
  return table.concat(parts)
end

return M
