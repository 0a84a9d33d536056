-- hub_server: a loopback Hugging Face Hub for tests (tools/hub_server.py), with helpers to build
-- repositories commit by commit and to read which requests it saw.
--   local HubServer = require "hub_server"
--   local hub = HubServer.start { token = "hf_..." }
--   local sha = hub:commit("org/tiny", { ["config.json"] = "{}", ["model.safetensors"] = bytes })
--   -- point the client at hub.endpoint (HF_ENDPOINT or endpoint=)
--   hub:count("GET", "config.json")   -- requests seen
--   hub:stop()

local T = require "testlib"

local S = {}
S.__index = S

local q = T.shell_quote

local function own_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = tonumber(f:read("*a"):match("^(%d+)"))
  f:close()
  return pid
end

local function source_root() return os.getenv("SKYRUN_SOURCE_ROOT") or ".." end

local function sleep(s) os.execute("sleep " .. s) end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- Starts a server on 127.0.0.1 with an ephemeral port. opts: token, page_size, lfs_threshold, lfs_chunk_size,
--- page_link_host ("other": next-page Links point at localhost, another host name).
function S.start(opts)
  opts = opts or {}
  local self = setmetatable({}, S)
  self.dir = T.tmpdir()
  self.root = self.dir .. "/hub"
  self.log_path = self.dir .. "/requests.log"
  self.token = opts.token or "hf_loopbackTESTtoken0123456789abcdef"
  self.commits = 0
  self.heads = {}
  T.exec("mkdir -p " .. q(self.root))
  local port_file = self.dir .. "/port"
  local cmd = string.format(
    "python3 %s --root %s --port-file %s --log %s --token %s --page-size %d --page-link-host %s --lfs-threshold %d" ..
    " --lfs-chunk-size %d --watch-pid %d > %s 2>&1 & echo $! > %s",
    q(source_root() .. "/tools/hub_server.py"), q(self.root), q(port_file), q(self.log_path), q(self.token),
    opts.page_size or 1000, opts.page_link_host or "same", opts.lfs_threshold or 10 * 1024 * 1024,
    opts.lfs_chunk_size or 64 * 1024 * 1024, own_pid(),
    q(self.dir .. "/server.out"),
    q(self.dir .. "/pid"))
  T.exec(cmd)
  for _ = 1, 200 do
    if exists(port_file) then break end
    sleep(0.05)
  end
  if not exists(port_file) then
    error("hub_server did not start: " .. (exists(self.dir .. "/server.out") and T.read_file(self.dir .. "/server.out") or "?"))
  end
  self.pid = tonumber(T.read_file(self.dir .. "/pid"))
  self.port = tonumber(T.read_file(port_file))
  self.endpoint = "http://127.0.0.1:" .. self.port
  return self
end

function S:stop()
  if self.pid then os.execute("kill " .. self.pid .. " 2>/dev/null") end
  self.pid = nil
end

local function kind_dir(repo_type) return (repo_type == "dataset") and "datasets" or "models" end

function S:repo_dir(repo_id, repo_type) return self.root .. "/" .. kind_dir(repo_type) .. "/" .. repo_id end

local function new_sha(n)
  return string.format("%08x%08x%08x%08x%08x", 0x5ca1ab1e, n, (n * 7919) % 0x7fffffff, os.time() % 0x7fffffff,
    math.random(0, 0x7fffffff))
end

--- Adds a commit to a branch: the branch's previous files, with `files` (path -> contents, or false to
--- delete) applied. opts: repo_type ("model"), branch ("main"). Returns the commit sha.
function S:commit(repo_id, files, opts)
  opts = opts or {}
  local branch = opts.branch or "main"
  local dir = self:repo_dir(repo_id, opts.repo_type)
  self.commits = self.commits + 1
  local sha = new_sha(self.commits)
  local cdir = dir .. "/commits/" .. sha
  T.exec("mkdir -p " .. q(cdir) .. " " .. q(dir .. "/refs"))
  local parent = self.heads[dir .. "#" .. branch]
  if parent then T.exec("cp -a " .. q(dir .. "/commits/" .. parent) .. "/. " .. q(cdir)) end
  for path, contents in pairs(files) do
    local full = cdir .. "/" .. path
    if contents == false then
      os.remove(full)
    else
      T.exec("mkdir -p " .. q(full:match("^(.*)/[^/]*$")))
      T.write_file(full, contents)
    end
  end
  self.heads[dir .. "#" .. branch] = sha
  T.write_file(dir .. "/refs/" .. branch, sha)
  return sha
end

--- Makes a repository gated: requests need "Authorization: Bearer <token>".
function S:gate(repo_id, repo_type) T.write_file(self:repo_dir(repo_id, repo_type) .. "/gated", "") end

--- Renames a repository: its old id answers with a relative redirect to the new one.
function S:move(old_id, new_id, repo_type)
  local dir = self:repo_dir(old_id, repo_type)
  T.exec("mkdir -p " .. q(dir))
  T.write_file(dir .. "/moved_to", new_id)
end

--- Faults: { { id=, match=, method=, drop_after=, times=, hang=, hang_seconds=, status=, body_repeat=,
--- times_repeat= }, ... } (see tools/hub_server.py)
function S:set_faults(faults)
  local items = {}
  for _, f in ipairs(faults) do
    local fields = {}
    for k, v in pairs(f) do
      local value = type(v) == "string" and string.format("%q", v) or tostring(v)
      fields[#fields + 1] = string.format("%q: %s", k, value)
    end
    items[#items + 1] = "{" .. table.concat(fields, ", ") .. "}"
  end
  T.write_file(self.root .. "/faults.json", "[" .. table.concat(items, ", ") .. "]")
end

--- Every request seen so far: { method=, path=, query=, range=, auth= } (nil for "-").
function S:requests()
  local out = {}
  if not exists(self.log_path) then return out end
  for line in io.lines(self.log_path) do
    local m, p, qs, r, a = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$")
    if m then
      out[#out + 1] = { method = m, path = p, query = qs ~= "-" and qs or nil, range = r ~= "-" and r or nil,
        auth = a == "auth" }
    end
  end
  return out
end

--- How many requests had this method (nil: any) and a path containing `needle` (plain text).
function S:count(method, needle)
  local n = 0
  for _, r in ipairs(self:requests()) do
    if (not method or r.method == method) and (not needle or r.path:find(needle, 1, true)) then n = n + 1 end
  end
  return n
end

function S:clear_log() os.remove(self.log_path) end

return S
