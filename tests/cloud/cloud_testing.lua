-- Helpers of the cloud tests: jobs run as their own skyrun process with an environment taken from
-- a file (so no secret is on a command line), in the foreground or the background; searches for
-- secrets in outputs and command lines; for AWS, an EC2 stand-in with an account and a HOME with
-- ~/.aws files as the AWS CLI reads them.
local T = require "testlib"
local Standin = require "cloud_standin"

local M = {}
local q = T.shell_quote

M.here = (os.getenv("SKYRUN_SOURCE_ROOT") or "..") .. "/tests/cloud"

-- Test credentials: shaped like the real ones, and unique per run so that a leak is found by searching.
function M.secret_like(n)
  local t = {}
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
  for i = 1, n do
    local k = math.random(1, #chars)
    t[i] = chars:sub(k, k)
  end
  return table.concat(t)
end

--- An account: { access_key_id, secret_access_key, session_token, hf_token }.
function M.account()
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
  return { access_key_id = "AKIA" .. M.secret_like(16):upper(), secret_access_key = M.secret_like(40),
           session_token = "IQoJb3JpZ2luX2VjE" .. M.secret_like(60), hf_token = "hf_" .. M.secret_like(34) }
end

--- Starts an EC2 stand-in for account a (its session token required). opts.deny: actions refused;
--- opts.preinstalled: machines hold this skyrun already (no upload).
function M.standin(a, opts)
  opts = opts or {}
  local flags = { region = "us-east-1" }
  if opts.deny then flags.deny = opts.deny end
  if opts.preinstalled then flags["preinstalled-skyrun"] = true end
  return Standin.start("ec2", { credentials = { { access_key_id = a.access_key_id, secret_access_key = a.secret_access_key,
    session_token = a.session_token } }, flags = flags })
end

--- A HOME with ~/.aws/credentials (the keys, in profile `profile`, default "default") and
--- ~/.aws/config (region, and the stand-in as endpoint_url). Returns the env table for jobs.
function M.home(a, standin, opts)
  opts = opts or {}
  local home = T.tmpdir()
  T.exec("mkdir -p " .. q(home .. "/.aws"))
  local profile = opts.profile or "default"
  T.write_file(home .. "/.aws/credentials", string.format(
    "[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\naws_session_token = %s\n",
    profile, a.access_key_id, a.secret_access_key, a.session_token))
  T.write_file(home .. "/.aws/config", string.format("[%s]\nregion = us-east-1\nendpoint_url = %s\n",
    profile == "default" and "default" or ("profile " .. profile), standin.endpoint))
  return { HOME = home, HF_TOKEN = a.hf_token, AWS_PROFILE = profile ~= "default" and profile or nil,
           AWS_ACCESS_KEY_ID = "", AWS_SECRET_ACCESS_KEY = "", AWS_SESSION_TOKEN = "", AWS_REGION = "",
           AWS_DEFAULT_REGION = "", AWS_ENDPOINT_URL = "", AWS_CONFIG_FILE = "", AWS_SHARED_CREDENTIALS_FILE = "",
           XDG_STATE_HOME = "" }
end

--- Writes env (name -> value) to a file a shell sources; returns its path.
function M.env_file(env)
  local dir = T.tmpdir()
  local lines = {}
  for k, v in pairs(env) do lines[#lines + 1] = "export " .. k .. "=" .. q(v) end
  T.write_file(dir .. "/env", table.concat(lines, "\n") .. "\n")
  return dir .. "/env"
end

--- Runs `skyrun args...` with env; returns stdout, stderr, code.
function M.skyrun(env, args, opts)
  local parts = { q(T.skyrun_bin) }
  for _, x in ipairs(args) do parts[#parts + 1] = q(x) end
  return T.sh(". " .. q(M.env_file(env)) .. " && " .. table.concat(parts, " "), opts)
end

--- Writes a job (Lua source) into a folder and returns its path.
function M.job(source)
  local dir = T.tmpdir()
  T.write_file(dir .. "/job.lua", source)
  return dir .. "/job.lua"
end

--- Fails when any secret of the account appears in text (the fields named *key*, *token*, except
--- the access key id, which is not a secret).
function M.no_secrets(a, text, what)
  for k, v in pairs(a) do
    if k ~= "access_key_id" and (k:find("key") or k:find("token")) then
      T.not_contains(text, v, (what or "output") .. " holds the " .. k)
    end
  end
end

--- A config file for jobs/cloud_job.lua (Lua source returning the table t).
function M.config(t)
  local dir = T.tmpdir()
  local function lua(v)
    if type(v) == "table" then
      local parts = {}
      for k, x in pairs(v) do
        local key = type(k) == "number" and "" or ("[" .. string.format("%q", k) .. "] = ")
        parts[#parts + 1] = key .. lua(x)
      end
      return "{ " .. table.concat(parts, ", ") .. " }"
    end
    return type(v) == "string" and string.format("%q", v) or tostring(v)
  end
  T.write_file(dir .. "/config.lua", "return " .. lua(t) .. "\n")
  return dir .. "/config.lua"
end

--- Starts `skyrun jobs/cloud_job.lua <config of t>` in the background with env. Returns its pid,
--- output() -> stdout, stderr so far, wait_for(needle, seconds) -> stdout once it holds needle,
--- and wait_exit(seconds) -> true once the process is gone.
function M.background(env, t)
  local dir = T.tmpdir()
  T.exec(". " .. q(M.env_file(env)) .. " && " .. q(T.skyrun_bin) .. " " .. q(M.here .. "/jobs/cloud_job.lua") .. " " ..
    q(M.config(t)) .. " > " .. q(dir .. "/out") .. " 2> " .. q(dir .. "/err") .. " & echo $! > " .. q(dir .. "/pid"))
  local pid = tonumber(T.read_file(dir .. "/pid"))
  local function read(p)
    local f = io.open(p, "rb")
    if not f then return "" end
    local d = f:read("*a")
    f:close()
    return d
  end
  local function output() return read(dir .. "/out"), read(dir .. "/err") end
  local sleep = require("sky.pool.core").sleep
  local function wait_for(needle, seconds)
    for _ = 1, math.floor((seconds or 30) / 0.1) do
      local o = output()
      if o:find(needle, 1, true) then return o end
      sleep(0.1)
    end
    local o, e = output()
    error("no '" .. needle .. "' in the job's output: " .. o .. e)
  end
  local function wait_exit(seconds)
    for _ = 1, math.floor((seconds or 30) / 0.1) do
      if os.execute("kill -0 " .. pid .. " 2>/dev/null") ~= 0 then return true end
      sleep(0.1)
    end
    return false
  end
  return pid, output, wait_for, wait_exit
end

--- Fails when a secret of the account is on the command line of any process of this machine
--- (the driver, its workers, and every process of the stand-in's machines).
function M.no_secrets_in_command_lines(a)
  local out = T.sh("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '")
  M.no_secrets(a, out, "a process's command line")
end

--- Fails when the stand-in has an instance that is not terminated (after waiting up to `seconds`).
--- The ids of the instances a stand-in has launched so far, as a set.
function M.instance_ids(standin)
  local ids = {}
  for _, i in ipairs(standin:instances()) do ids[i.id] = true end
  return ids
end

function M.nothing_running(standin, seconds)
  local left = standin:wait_all_ended(seconds or 10)
  local ids = {}
  for _, i in ipairs(left) do ids[#ids + 1] = i.id .. " (" .. i.state .. ")" end
  T.eq(ids, {}, "instances left running")
end

return M
