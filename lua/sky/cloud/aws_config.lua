-- sky.cloud.aws_config: AWS credentials, region and endpoints found as the AWS CLI finds them:
--   1. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (skipped when a profile is
--      named explicitly, as with `aws --profile`)
--   2. the profile (option profile=, else AWS_PROFILE, else "default") in the shared credentials
--      file (AWS_SHARED_CREDENTIALS_FILE, default ~/.aws/credentials)
--   3. the same profile in the config file (AWS_CONFIG_FILE, default ~/.aws/config; sections
--      "[profile name]", and "[default]")
-- Region: region= > AWS_REGION > AWS_DEFAULT_REGION > the profile's `region`. Endpoints:
-- endpoint_url= > AWS_ENDPOINT_URL_<SERVICE> > AWS_ENDPOINT_URL > the profile's endpoint_url >
-- https://<service>.<region>.amazonaws.com. Profiles that get credentials another way
-- (role_arn, credential_process, sso_*) are refused as not supported yet, by name.
-- The keys are registered with sky.secret as driver-only: masked wherever skyrun prints, and never
-- sent to workers (the machines of a pool never hold the account's keys).
local secret = require "sky.secret"

local M = {}

local function home() return os.getenv("HOME") or "" end

-- An environment variable, nil when unset or empty (as the AWS CLI treats them).
local function env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

local read = require("sky.fs").read

--- Parses an INI file as the AWS CLI writes them: { [section] = { key = value } }. Keys and
--- section names are trimmed; "#" and ";" start comments; nested (indented) values are skipped.
function M.parse_ini(text)
  local out, cur = {}, nil
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line:gsub("\r$", "")
    if line:match("^%s*[#;]") or line:match("^%s*$") then
      -- comment or blank
    elseif line:match("^%s*%[") then
      local name = line:match("^%s*%[%s*(.-)%s*%]")
      cur = {}
      if name then out[name] = cur end
    elseif cur and not line:match("^%s") then
      local k, v = line:match("^([^=]-)%s*=%s*(.-)%s*$")
      if k then cur[k:lower()] = v end
    end
  end
  return out
end

local unsupported = { "role_arn", "credential_process", "sso_session", "sso_start_url", "web_identity_token_file",
                      "credential_source" }

--- Resolves credentials, region and endpoints. opts: profile, region, endpoint_url (a string,
--- or a table service -> url). Returns { credentials = {access_key_id, secret_access_key,
--- session_token, source}, region, profile, endpoint(service) }. Raises a plain message naming
--- what was looked at when something is missing.
function M.resolve(opts)
  opts = opts or {}
  local explicit = opts.profile
  local profile = explicit or env("AWS_PROFILE") or "default"
  local cred_path = env("AWS_SHARED_CREDENTIALS_FILE") or (home() .. "/.aws/credentials")
  local conf_path = env("AWS_CONFIG_FILE") or (home() .. "/.aws/config")
  local creds_ini = M.parse_ini(read(cred_path) or "")
  local conf_ini = M.parse_ini(read(conf_path) or "")
  local from_creds = creds_ini[profile]
  local from_conf = conf_ini[profile == "default" and "default" or ("profile " .. profile)] or
    (profile == "default" and conf_ini["profile default"]) or nil
  if explicit and not from_creds and not from_conf then
    error("AWS profile '" .. profile .. "' is in neither " .. cred_path .. " nor " .. conf_path, 0)
  end
  local c
  local env_id, env_key = env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")
  if not explicit and env_id and env_key then
    c = { access_key_id = env_id, secret_access_key = env_key, session_token = env("AWS_SESSION_TOKEN") or env("AWS_SECURITY_TOKEN"),
          source = "the environment (AWS_ACCESS_KEY_ID)" }
  else
    for _, src in ipairs({ { from_creds, cred_path }, { from_conf, conf_path } }) do
      local sec = src[1]
      if not c and sec and sec.aws_access_key_id and sec.aws_secret_access_key then
        c = { access_key_id = sec.aws_access_key_id, secret_access_key = sec.aws_secret_access_key,
              session_token = sec.aws_session_token, source = "profile '" .. profile .. "' in " .. src[2] }
      end
    end
    if not c then
      for _, sec in ipairs({ from_creds or {}, from_conf or {} }) do
        for _, k in ipairs(unsupported) do
          if sec[k] then
            error("not supported yet: AWS profile '" .. profile .. "' gets its credentials through " .. k ..
              "; give keys in the environment or in " .. cred_path, 0)
          end
        end
      end
      error("no AWS credentials found: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set and profile '" .. profile ..
        "' has no aws_access_key_id/aws_secret_access_key in " .. cred_path .. " or " .. conf_path, 0)
    end
  end
  secret.add(c.secret_access_key, { driver_only = true })
  if c.session_token then secret.add(c.session_token, { driver_only = true }) end
  local region = opts.region or env("AWS_REGION") or env("AWS_DEFAULT_REGION") or (from_conf and from_conf.region)
  if region == "" then region = nil end
  local profile_endpoint = from_conf and from_conf.endpoint_url
  local function endpoint(service, default_host)
    local e = opts.endpoint_url
    if type(e) == "table" then e = e[service] end
    e = e or env("AWS_ENDPOINT_URL_" .. service:upper()) or env("AWS_ENDPOINT_URL") or profile_endpoint
    if e and e ~= "" then return (e:gsub("/+$", "")) end
    return "https://" .. default_host
  end
  return { credentials = c, region = region, profile = profile, endpoint = endpoint }
end

return M
