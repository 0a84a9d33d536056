-- Helpers of the AWS tests: an EC2 stand-in with an account, a HOME with ~/.aws files as the AWS
-- CLI reads them, and jobs run as their own skyrun process with that environment (taken from a
-- file, so no secret is on a command line).
local T = require "testlib"
local Standin = require "cloud_standin"

local M = {}
local q = T.shell_quote

M.here = (os.getenv("SKYRUN_SOURCE_ROOT") or "..") .. "/tests/cloud"

-- Test credentials: shaped like AWS's, and unique per run so that a leak is found by searching.
local function secret_like(n)
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
  return { access_key_id = "AKIA" .. secret_like(16):upper(), secret_access_key = secret_like(40),
           session_token = "IQoJb3JpZ2luX2VjE" .. secret_like(60), hf_token = "hf_" .. secret_like(34) }
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

--- Fails when any of the account's secrets appears in text.
function M.no_secrets(a, text, what)
  for _, k in ipairs({ "secret_access_key", "session_token", "hf_token" }) do
    T.not_contains(text, a[k], (what or "output") .. " holds the " .. k)
  end
end

--- Fails when a secret of the account is on the command line of any process of this machine
--- (the driver, its workers, and every process of the stand-in's machines).
function M.no_secrets_in_command_lines(a)
  local out = T.sh("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '")
  M.no_secrets(a, out, "a process's command line")
end

--- Fails when the stand-in has an instance that is not terminated (after waiting up to `seconds`).
function M.nothing_running(standin, seconds)
  local left = standin:wait_all_ended(seconds or 10)
  local ids = {}
  for _, i in ipairs(left) do ids[#ids + 1] = i.id .. " (" .. i.state .. ")" end
  T.eq(ids, {}, "instances left running")
end

return M
