-- cloud_standin: starts a loopback cloud stand-in (tools/ec2_server.py, runpod_server.py, ...) with
-- its machines (tests/lib/cloud_hosts.lua), and reads what it saw.
--   local Standin = require "cloud_standin"
--   local s = Standin.start("ec2", { credentials = { {access_key_id=, secret_access_key=} } })
--   s.endpoint                    -- "http://10.77.x.1:port" (the machines reach it there too)
--   s:faults { {action = "RunInstances", code = "InsufficientInstanceCapacity", times = 1} }
--   s:instances()                 -- every instance, as the stand-in sees it
--   s:running()                   -- those not terminated
--   s:requests("RunInstances")    -- logged requests of one action (bodies included)
--   s:wait_all_ended(seconds)     -- true when no instance is left running
--   s:stop()
local T = require "testlib"
local json = require "transformers.train_core"
local http = require("sky.cloud.core").http

local M = {}
local S = {}
S.__index = S

local q = T.shell_quote

local own_pid = require("sky.pool.core").getpid
local source_root = os.getenv("SKYRUN_SOURCE_ROOT") or ".."

local function exists(path) return require("sky.fs").stat(path) ~= nil end

--- kind: "ec2", "runpod", "lambda", "vastai". opts: flags (command-line flags, flag -> value or
--- true; credentials and API keys go in files), credentials (ec2). flags["preinstalled-skyrun"]:
--- machines whose image holds this skyrun already (no upload; tests of faults, not of bootstrap).
function M.start(kind, opts)
  opts = opts or {}
  local self = setmetatable({ kind = kind }, S)
  self.dir = T.tmpdir()
  self.log_path = self.dir .. "/requests.jsonl"
  T.write_file(self.log_path, "")
  local port_file = self.dir .. "/port"
  local flags = {}
  if opts.credentials then
    T.write_file(self.dir .. "/credentials.json", json.json_encode(opts.credentials))
    flags[#flags + 1] = "--credentials " .. q(self.dir .. "/credentials.json")
  end
  for k, v in pairs(opts.flags or {}) do flags[#flags + 1] = "--" .. k .. (v == true and "" or (" " .. q(v))) end
  local hosts_cmd = string.format("LUA_PATH=%s %s %s", q(source_root .. "/tests/lib/?.lua;;"), q(T.skyrun_bin),
    q(source_root .. "/tests/lib/cloud_hosts.lua"))
  T.exec(string.format("python3 %s --state-dir %s --port-file %s --log %s --hosts-cmd %s --watch-pid %d %s > %s 2>&1 & echo $! > %s",
    q(source_root .. "/tools/" .. kind .. "_server.py"), q(self.dir), q(port_file), q(self.log_path), q(hosts_cmd),
    own_pid(), table.concat(flags, " "), q(self.dir .. "/server.out"), q(self.dir .. "/pid")))
  for _ = 1, 400 do
    if exists(port_file) then break end
    require("sky.pool.core").sleep(0.05)
  end
  if not exists(port_file) then
    error(kind .. " stand-in did not start: " .. (exists(self.dir .. "/server.out") and T.read_file(self.dir .. "/server.out") or "?"))
  end
  self.pid = tonumber(T.read_file(self.dir .. "/pid"))
  local host, port = T.read_file(port_file):match("^(%S+) (%d+)")
  self.host, self.port = host, tonumber(port)
  self.endpoint = "http://" .. host .. ":" .. port
  return self
end

--- Replaces the fault list (tools/cloud_standin.py describes the fields).
function S:faults(list)
  T.write_file(self.dir .. "/faults.json.tmp", json.json_encode(list))
  os.rename(self.dir .. "/faults.json.tmp", self.dir .. "/faults.json")
end

function S:instances()
  local r = http { url = self.endpoint .. "/_standin/instances", timeout = 10 }
  return json.json_decode(r.body, "stand-in instances")
end

function S:running()
  local out = {}
  for _, i in ipairs(self:instances()) do
    if i.state ~= "terminated" then out[#out + 1] = i end
  end
  return out
end

--- Waits until no instance is left that is not terminated; returns the ones left (empty: all ended).
function S:wait_all_ended(seconds)
  local sleep = require("sky.pool.core").sleep
  local deadline = require("sky.core").monotonic() + (seconds or 10)
  while true do
    local left = self:running()
    if #left == 0 or require("sky.core").monotonic() > deadline then return left end
    sleep(0.1)
  end
end

function S:interrupt(id)
  http { method = "POST", url = self.endpoint .. "/_standin/interrupt?id=" .. id, body = "", timeout = 10 }
end

--- Logged requests (decoded JSON lines); with action, only those.
function S:requests(action)
  local out = {}
  for line in T.read_file(self.log_path):gmatch("[^\n]+") do
    local r = json.json_decode(line, "request log")
    if not action or r.action == action then out[#out + 1] = r end
  end
  return out
end

--- Everything the stand-in received and printed, as one text (to look for secrets).
function S:all_text()
  local r = http { url = self.endpoint .. "/_standin/instances", timeout = 10 }
  return T.read_file(self.log_path) .. (exists(self.dir .. "/server.out") and T.read_file(self.dir .. "/server.out") or "") ..
    r.body  -- the instances, with their decoded start scripts (user data)
end

function S:output() return exists(self.dir .. "/server.out") and T.read_file(self.dir .. "/server.out") or "" end

function S:stop()
  if self.pid then os.execute("kill " .. self.pid .. " 2>/dev/null") end
  self.pid = nil
end

return M
