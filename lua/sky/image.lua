-- sky.Image{apt=, env=, files=, setup=, lua=}: what a node needs before workers start, rendered as
-- one idempotent POSIX shell script (image:script()). Providers decide how to apply it: the local
-- provider applies env and files itself and runs apt/setup only with modify_host = true; remote
-- providers run the script on each host.
--   apt    = { "libgomp1", ... }          Debian packages (installed only when missing)
--   env    = { NAME = "value" }           environment of the workers
--   files  = { ["dest/path"] = "local/source/path" }   copied to the node (relative: the worker's folder)
--   setup  = "shell commands" or { "line", ... }        run once per distinct text (a marker file)
--   lua    = { "mymodule", ["name"] = "path.lua" }      Lua modules shipped as source to the workers
local core = require "sky.core"
local secret = require "sky.secret"

local M = {}

local Image = {}
Image.__index = Image

local shell_quote = require("sky.ssh.core").shell_quote

local function read_file(path, what)
  local f, err = io.open(path, "rb")
  if not f then error("sky.Image: cannot read " .. what .. ": " .. tostring(err), 0) end
  local s = f:read("*a")
  f:close()
  return s
end

-- FNV-1a, 32 bits, as 8 hex digits (marker names; not security).
local function fnv1a(s)
  local h = 2166136261
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i))
    h = bit.tobit(h * 16777619 % 4294967296)
  end
  return bit.tohex(h)
end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1, c2 = bit.rshift(n, 18) % 64, bit.rshift(n, 12) % 64
    local c3, c4 = bit.rshift(n, 6) % 64, n % 64
    out[#out + 1] = b64chars:sub(c1 + 1, c1 + 1) .. b64chars:sub(c2 + 1, c2 + 1) ..
      (b and b64chars:sub(c3 + 1, c3 + 1) or "=") .. (c and b64chars:sub(c4 + 1, c4 + 1) or "=")
  end
  local s64 = table.concat(out)
  local lines = {}
  for i = 1, #s64, 76 do lines[#lines + 1] = s64:sub(i, i + 75) end
  return table.concat(lines, "\n")
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

local function as_lines(v, where)
  if v == nil then return {} end
  if type(v) == "string" then return { v } end
  if type(v) ~= "table" then error("sky.Image: " .. where .. " must be a string or a list of strings", 3) end
  local t = {}
  for i, line in ipairs(v) do
    if type(line) ~= "string" then error("sky.Image: " .. where .. "[" .. i .. "] must be a string", 3) end
    t[i] = line
  end
  return t
end

--- sky.Image{apt=, env=, files=, setup=, lua=}
--- Checks an environment table and returns a copy with string values. Keys are names without
--- '=' or NUL (shell = true: shell variable names, as the image's script exports them); values
--- are strings, numbers or booleans without NUL. Errors name the key and blame `level`.
function M.check_env(env, where, level, shell)
  local out = {}
  for k, v in pairs(env) do
    local name = type(k) == "string" and string.format("%q", k) or tostring(k)
    if type(k) ~= "string" or k == "" or k:find("[=%z]") or (shell and not k:match("^[%a_][%w_]*$")) then
      error(string.format("%s: env key %s is not a variable name%s", where, name,
        type(k) == "string" and k:find("=", 1, true) and " (it contains '=')" or ""), level)
    end
    local tv = type(v)
    if tv ~= "string" and tv ~= "number" and tv ~= "boolean" then
      error(string.format("%s: env[%s] must be a string, number or boolean (got %s)", where, name, tv), level)
    end
    v = tostring(v)
    if v:find("%z") then error(string.format("%s: env[%s] contains a NUL byte", where, name), level) end
    out[k] = v
  end
  return out
end

function M.Image(opts)
  opts = core.check_options(opts, { apt = "table", env = "table", files = "table", setup = "string|table", lua = "table" },
    "sky.Image", 3)
  local self = setmetatable({ apt = {}, env = {}, files = {}, setup = as_lines(opts.setup, "setup"), lua = {} }, Image)
  for i, p in ipairs(opts.apt or {}) do
    if type(p) ~= "string" or not p:match("^[%w][%w%.%+%-:=~]*$") then
      error("sky.Image: apt[" .. i .. "] is not a Debian package name: " .. tostring(p), 2)
    end
    self.apt[i] = p
  end
  self.env = M.check_env(opts.env or {}, "sky.Image", 3, true)
  for dest, src in pairs(opts.files or {}) do
    if type(dest) ~= "string" or type(src) ~= "string" then
      error("sky.Image: files maps destination paths to local source paths (strings)", 2)
    end
    self.files[dest] = src
  end
  for k, v in pairs(opts.lua or {}) do
    if type(k) == "number" then self.lua[v] = true
    else self.lua[k] = v end
  end
  return self
end

--- A new image with more apt packages, env, files, setup lines and Lua modules (for plugins).
function Image:extend(more)
  local merged = { apt = {}, env = {}, files = {}, setup = {}, lua = {} }
  for _, src in ipairs({ self, more }) do
    for _, p in ipairs(src.apt or {}) do merged.apt[#merged.apt + 1] = p end
    for k, v in pairs(src.env or {}) do merged.env[k] = v end
    for k, v in pairs(src.files or {}) do merged.files[k] = v end
    for _, l in ipairs(as_lines(src.setup, "setup")) do merged.setup[#merged.setup + 1] = l end
    for k, v in pairs(src.lua or {}) do merged.lua[k] = v end
  end
  local lua = {}
  for k, v in pairs(merged.lua) do lua[k] = v end
  merged.lua = lua
  return M.Image(merged)
end

-- {name = {source=, chunkname=}} of the image's Lua modules (sent in the workers' setup).
function Image:_lua_modules()
  local t, any = {}, false
  for name, path in pairs(self.lua) do
    if path == true then
      path = package.searchpath(name, package.path)
      if not path then error("sky.Image: Lua module '" .. name .. "' is not on package.path", 0) end
    end
    t[name] = { source = read_file(path, "Lua module '" .. name .. "' (" .. path .. ")"), chunkname = "@" .. path }
    any = true
  end
  return any and t or nil
end

--- The bootstrap script: idempotent (packages installed only when missing, files rewritten only
--- when different, setup run once per distinct text). extra_lines: plugins' bootstrap lines.
function Image:script(extra_lines)
  -- Temporary names carry the host and the pid: nodes that share a filesystem (a cluster's home
  -- folders) run the script at the same time.
  local L = { "#!/bin/sh", "# skyrun image bootstrap: safe to run again; it only changes what differs.", "set -eu",
              'SKYRUN_STATE="${SKYRUN_STATE:-$HOME/.cache/skyrun}"', 'mkdir -p "$SKYRUN_STATE"',
              'tmp=".skyrun-tmp.$(hostname).$$"' }
  if #self.apt > 0 then
    L[#L + 1] = "# apt packages"
    L[#L + 1] = 'missing=""'
    L[#L + 1] = "for p in " .. table.concat(self.apt, " ") .. "; do dpkg -s \"$p\" >/dev/null 2>&1 || missing=\"$missing $p\"; done"
    L[#L + 1] = 'if [ -n "$missing" ]; then'
    L[#L + 1] = '  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo'
    L[#L + 1] = '  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing'
    L[#L + 1] = "fi"
  end
  local env_keys = sorted_keys(self.env)
  if #env_keys > 0 then
    L[#L + 1] = "# environment (also written to $SKYRUN_STATE/env for the workers)"
    L[#L + 1] = ': > "$SKYRUN_STATE/env$tmp"'
    for _, k in ipairs(env_keys) do
      local line = "export " .. k .. "=" .. shell_quote(self.env[k])
      L[#L + 1] = line
      L[#L + 1] = "echo " .. shell_quote(line) .. ' >> "$SKYRUN_STATE/env$tmp"'
    end
    L[#L + 1] = 'mv "$SKYRUN_STATE/env$tmp" "$SKYRUN_STATE/env"'
  end
  for _, dest in ipairs(sorted_keys(self.files)) do
    local src = self.files[dest]
    local data = read_file(src, "file '" .. src .. "' (for '" .. dest .. "')")
    L[#L + 1] = "# file " .. dest
    L[#L + 1] = "d=" .. shell_quote(dest)
    L[#L + 1] = 'mkdir -p "$(dirname "$d")"'
    L[#L + 1] = 'base64 -d > "$d$tmp" <<\'SKYRUN_EOF\''
    L[#L + 1] = base64(data)
    L[#L + 1] = "SKYRUN_EOF"
    L[#L + 1] = 'if cmp -s "$d$tmp" "$d"; then rm -f "$d$tmp"; else mv "$d$tmp" "$d"; fi'
  end
  local lua = self:_lua_modules()
  if lua then
    L[#L + 1] = "# Lua modules"
    L[#L + 1] = 'mkdir -p "$SKYRUN_STATE/lua"'
    for _, name in ipairs(sorted_keys(lua)) do
      local f = '"$SKYRUN_STATE/lua/' .. name .. '.lua'
      L[#L + 1] = "base64 -d > " .. f .. "$tmp\" <<'SKYRUN_EOF'"
      L[#L + 1] = base64(lua[name].source)
      L[#L + 1] = "SKYRUN_EOF"
      L[#L + 1] = "mv " .. f .. "$tmp\" " .. f .. '"'
    end
  end
  if extra_lines and #extra_lines > 0 then
    L[#L + 1] = "# plugins"
    for _, l in ipairs(extra_lines) do L[#L + 1] = l end
  end
  if #self.setup > 0 then
    local text = table.concat(self.setup, "\n")
    L[#L + 1] = "# setup (runs once per distinct text)"
    L[#L + 1] = 'marker="$SKYRUN_STATE/setup-' .. fnv1a(text) .. '"'
    L[#L + 1] = 'if [ ! -f "$marker" ]; then'
    L[#L + 1] = "  ("
    for _, l in ipairs(self.setup) do L[#L + 1] = "    " .. l end
    L[#L + 1] = '  ) && touch "$marker"'
    L[#L + 1] = "fi"
  end
  return secret.mask(table.concat(L, "\n") .. "\n")
end

-- The local provider's way: files copied here (when different); apt/setup and plugin bootstrap
-- lines run only with opts.modify_host, otherwise a notice says what was skipped.
function Image:apply_local(opts)
  opts = opts or {}
  for dest, src in pairs(self.files) do
    local data = read_file(src, "file '" .. src .. "' (for '" .. dest .. "')")
    local f = io.open(dest, "rb")
    local old = f and f:read("*a")
    if f then f:close() end
    if old ~= data then
      local dir = dest:match("^(.*)/[^/]*$")
      local fs = require "sky.fs"
      local ok, err = pcall(function()
        if dir and dir ~= "" then fs.makedirs(dir) end
        fs.write_atomic(dest, data)
      end)
      if not ok then error("sky.Image: cannot write '" .. dest .. "': " .. tostring(err), 0) end
    end
  end
  local extra = opts.bootstrap or {}
  if #self.apt == 0 and #self.setup == 0 and #extra == 0 then return end
  if not opts.modify_host then
    io.stderr:write("[pool] the image's apt packages, setup commands and plugin bootstrap lines change this machine; ",
      "skipped on the local provider (sky.providers.local_{modify_host = true} runs them)\n")
    return
  end
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "wb"))
  f:write(Image.script(setmetatable({ apt = self.apt, env = {}, files = {}, setup = self.setup, lua = {} }, Image), extra))
  f:close()
  local r = os.execute("sh " .. shell_quote(tmp))
  os.remove(tmp)
  if not (r == 0 or r == true) then error("sky.Image: the bootstrap script failed on this machine (exit " .. tostring(r) .. ")", 0) end
end

function Image:__tostring()
  local n = 0
  for _ in pairs(self.files) do n = n + 1 end
  local nl = 0
  for _ in pairs(self.lua) do nl = nl + 1 end
  return secret.mask(string.format("Image{apt={%s}, env={%s}, files=%d, setup=%d lines, lua=%d}",
    table.concat(self.apt, ","), table.concat(sorted_keys(self.env), ","), n, #self.setup, nl))
end

M.is_image = function(v) return getmetatable(v) == Image end

return M
