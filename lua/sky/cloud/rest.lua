-- sky.cloud.rest: JSON over HTTPS for the clouds with REST/GraphQL APIs (RunPod, Lambda, Vast.ai):
-- bearer-token requests through libcurl, retried with backoff on 429 and 5xx answers and on
-- broken connections, JSON both ways. Errors are plain ("RunPod POST /pods: 400: <message>") and
-- never carry the key (it travels in a header; sky.secret masks it anyway).
local core = require "sky.cloud.core"
local json = require "transformers.train_core"
local secret = require "sky.secret"

local M = {}

local Client = {}
Client.__index = Client

--- A client. opts: name ("RunPod"), base (URL without a trailing /), key (bearer token),
--- max_attempts (6), backoff (seconds, 0.25), sleep, timeout (60), error_message(decoded body, status)
--- -> text (the API's own error field).
function M.client(opts)
  secret.add(opts.key, { driver_only = true })
  return setmetatable({ name = opts.name, base = opts.base:gsub("/+$", ""), key = opts.key,
    max_attempts = opts.max_attempts or 6, backoff = opts.backoff or 0.25, timeout = opts.timeout or 60,
    sleep = opts.sleep or require("sky.pool.core").sleep, error_message = opts.error_message }, Client)
end

--- An API key from the environment variable `var` (or the first readable file of `files`), or a
--- plain error naming where it was looked for. The key is registered as a secret.
function M.api_key(var, files, provider)
  local v = os.getenv(var)
  if v and v ~= "" then return secret.add(v, { driver_only = true }) end
  for _, path in ipairs(files or {}) do
    local f = io.open((path:gsub("^~", os.getenv("HOME") or "~")), "rb")
    if f then
      local text = (f:read("*a") or ""):match("^%s*(.-)%s*$")
      f:close()
      if text ~= "" then return secret.add(text, { driver_only = true }) end
    end
  end
  error("no " .. provider .. " API key: set " .. var .. (#(files or {}) > 0 and (" or write it to " .. table.concat(files, " or ")) or ""), 0)
end

--- The client of a cloud driver for `base`, made on first use and kept in driver._clients: the
--- key comes from environment variable `var` (or `files`, see api_key), read once per driver.
--- opts: name (for messages), var, files, provider (for the missing-key message), error_message.
function M.for_driver(driver, base, opts)
  driver._clients = driver._clients or {}
  local c = driver._clients[base]
  if not c then
    driver._key = driver._key or M.api_key(opts.var, opts.files, opts.provider)
    c = M.client { name = opts.name, base = base, key = driver._key, error_message = opts.error_message }
    driver._clients[base] = c
  end
  return c
end

--- A request; body (a table) goes as JSON. Returns the decoded answer (nil for an empty body)
--- and the status. Raises {status=, message=, body=} (an error table with __tostring) for
--- answers >= 400 after the retries; opts.ok_statuses lists statuses that are not errors.
function Client:request(method, path, body, opts)
  opts = opts or {}
  local url = self.base .. path
  local payload = body ~= nil and json.json_encode(body) or nil
  local attempt = 0
  while true do
    attempt = attempt + 1
    local headers = { Authorization = "Bearer " .. self.key, Accept = "application/json", Expect = "" }
    if payload then headers["Content-Type"] = "application/json" end
    local ok, r = pcall(core.http, { method = method, url = url, headers = headers, body = payload, timeout = self.timeout })
    local retry, status, decoded, msg
    if not ok then
      if tostring(r):find("interrupted!", 1, true) then error(r, 0) end
      retry, status, msg = true, 0, tostring(r)
    else
      status = r.status
      if r.body ~= "" then
        local okd, v = pcall(json.json_decode, r.body, self.name .. " " .. method .. " " .. path)
        decoded = okd and v or nil
      end
      if status < 400 or (opts.ok_statuses and opts.ok_statuses[status]) then return decoded, status end
      retry = status == 429 or status >= 500
      msg = decoded and self.error_message and self.error_message(decoded, status) or (r.body or ""):sub(1, 300)
    end
    if not retry or attempt >= self.max_attempts then
      error(setmetatable({ status = status, body = decoded, message = secret.mask(self.name .. " " .. method .. " " .. path ..
        ": " .. (status > 0 and (status .. ": ") or "") .. tostring(msg) .. (retry and (" (after " .. attempt .. " attempts)") or "")) },
        { __tostring = function(e) return e.message end }), 0)
    end
    self.sleep(math.min(20, self.backoff * 2 ^ attempt) * (0.5 + math.random() / 2))
  end
end

--- GET of one resource: its decoded answer, or nil when the API answers 404.
function Client:get_optional(path)
  local ok, v = pcall(self.request, self, "GET", path)
  if ok then return v end
  if type(v) == "table" and v.status == 404 then return nil end
  error(v, 0)
end

return M
