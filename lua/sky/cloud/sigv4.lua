-- sky.cloud.sigv4: AWS Signature Version 4 (docs.aws.amazon.com/IAM/latest/UserGuide/
-- reference_sigv-create-signed-request.html): the canonical request, the string to sign, the
-- derived key and the Authorization header. The secret key is used only inside sign(); nothing
-- here prints or returns it.
local core = require "sky.cloud.core"

local M = {}

--- RFC 3986 percent-encoding as SigV4 wants it: A-Z a-z 0-9 - _ . ~ stay.
function M.uri_encode(s, keep_slash)
  return (tostring(s):gsub("[^%w%-_%.~" .. (keep_slash and "/" or "") .. "]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

local function trim(v) return (tostring(v):gsub("^%s+", ""):gsub("%s+$", ""):gsub("%s+", " ")) end

--- The canonical query string of a table name -> value (or an already-encoded string).
function M.canonical_query(query)
  if query == nil or query == "" then return "" end
  if type(query) == "string" then
    local pairs_ = {}
    for part in query:gmatch("[^&]+") do
      local k, v = part:match("^([^=]*)=?(.*)$")
      pairs_[#pairs_ + 1] = { k, v }
    end
    table.sort(pairs_, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
    local out = {}
    for i, p in ipairs(pairs_) do out[i] = p[1] .. "=" .. p[2] end
    return table.concat(out, "&")
  end
  local keys = {}
  for k in pairs(query) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for i, k in ipairs(keys) do out[i] = M.uri_encode(k) .. "=" .. M.uri_encode(query[k]) end
  return table.concat(out, "&")
end

--- Signs a request in place. req = {method, host, path, query (string, already encoded),
--- headers (name -> value; Host and X-Amz-Date are added), body}; creds = {access_key_id,
--- secret_access_key, session_token}; scope = {region, service}; t = os.time() (default now).
--- Returns req.headers.
function M.sign(req, creds, scope, t)
  t = t or os.time()
  local amz_date = os.date("!%Y%m%dT%H%M%SZ", t)
  local date = amz_date:sub(1, 8)
  local headers = req.headers
  headers["Host"] = req.host
  headers["X-Amz-Date"] = amz_date
  if creds.session_token then headers["X-Amz-Security-Token"] = creds.session_token end
  local names, lower = {}, {}
  for k, v in pairs(headers) do
    local l = k:lower()
    if l ~= "authorization" and l ~= "user-agent" and l ~= "expect" then
      names[#names + 1] = l
      lower[l] = trim(v)
    end
  end
  table.sort(names)
  local canon_headers = {}
  for i, l in ipairs(names) do canon_headers[i] = l .. ":" .. lower[l] .. "\n" end
  local signed = table.concat(names, ";")
  local payload_hash = core.sha256_hex(req.body or "")
  local canonical = table.concat({
    req.method, M.uri_encode(req.path or "/", true), M.canonical_query(req.query), table.concat(canon_headers), signed,
    payload_hash }, "\n")
  local credential_scope = date .. "/" .. scope.region .. "/" .. scope.service .. "/aws4_request"
  local to_sign = "AWS4-HMAC-SHA256\n" .. amz_date .. "\n" .. credential_scope .. "\n" .. core.sha256_hex(canonical)
  local key = core.hmac_sha256("AWS4" .. creds.secret_access_key, date)
  key = core.hmac_sha256(key, scope.region)
  key = core.hmac_sha256(key, scope.service)
  key = core.hmac_sha256(key, "aws4_request")
  local signature = core.hmac_sha256(key, to_sign):gsub(".", function(c) return string.format("%02x", c:byte()) end)
  headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=" .. creds.access_key_id .. "/" .. credential_scope ..
    ", SignedHeaders=" .. signed .. ", Signature=" .. signature
  return headers
end

return M
