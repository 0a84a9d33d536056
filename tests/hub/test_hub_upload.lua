-- Writing to a loopback Hub through the commit API: login (token file 0600), whoami, create_repo,
-- upload_file and upload_folder (preupload, LFS batch with basic and multipart transfers, the NDJSON
-- commit), then the folder downloaded back by our client, byte for byte. The token never reaches
-- the storage URLs, the log or an error.
local T = require "testlib"
local HubServer = require "hub_server"
local H = require "hub_testing"
local hf = require "huggingface_hub"
local fs = require "sky.fs"

-- LFS from 4 KB, multipart above 6 KB: small files exercise every path.
local hub = HubServer.start { lfs_threshold = 4096, lfs_chunk_size = 6000 }
local W = { endpoint = hub.endpoint, token = hub.token }

local function with(extra)
  local o = { endpoint = hub.endpoint, token = hub.token }
  for k, v in pairs(extra) do o[k] = v end
  return o
end

-- A folder shaped like a saved model: regular files, an LFS file (by size), a multipart LFS
-- file, a nested folder, and what upload_folder never sends (.git/, .cache/huggingface/).
local function model_folder()
  local dir = T.tmpdir() .. "/out"
  local files = {
    ["config.json"] = '{"model_type": "llama", "hidden_size": 8}\n',
    ["tokenizer.json"] = '{"version": "1.0", "model": {"type": "BPE"}}',
    ["big.txt"] = H.bytes(5000, 11),                 -- LFS (size >= 4096), one basic PUT
    ["model.safetensors"] = H.bytes(20000, 12),      -- LFS multipart: 4 parts of 6000
    ["nested/notes.md"] = "# notes\n",
    ["empty.txt"] = "",
  }
  for path, data in pairs(files) do
    local full = dir .. "/" .. path
    fs.makedirs(full:match("^(.*)/[^/]*$"))
    fs.write_atomic(full, data)
  end
  fs.makedirs(dir .. "/.git")
  fs.write_atomic(dir .. "/.git/HEAD", "ref: refs/heads/main\n")
  fs.makedirs(dir .. "/.cache/huggingface")
  fs.write_atomic(dir .. "/.cache/huggingface/x.lock", "")
  return dir, files
end

T.test("login checks the token with whoami and writes the token file with mode 0600", function()
  local home = T.tmpdir()
  local out, err, code = H.run_child(string.format([[
    local hf = require "huggingface_hub"
    local info = hf.login { token = %q }
    print(info.name, hf.whoami().name, hf.settings().has_token)
  ]], hub.token), { HF_HOME = home, HF_ENDPOINT = hub.endpoint })
  T.eq(code, 0, err)
  T.eq(out, "loopback-user\tloopback-user\ttrue\n")
  T.eq(T.read_file(home .. "/token"), hub.token)
  T.eq(fs.stat(home .. "/token").mode, tonumber("600", 8))
  T.not_contains(err, hub.token)
  -- a wrong token is refused, nothing is written, and the token does not appear in the error
  local home2 = T.tmpdir()
  _, err, code = H.run_child([[require("huggingface_hub").login { token = "hf_wrongWRONGwrong" }]],
    { HF_HOME = home2, HF_ENDPOINT = hub.endpoint })
  T.eq(code, 1)
  T.contains(err, "the token was refused by " .. hub.endpoint)
  T.not_contains(err, "hf_wrongWRONGwrong")
  T.eq(fs.stat(home2 .. "/token"), nil)
end)

T.test("create_repo creates once; exist_ok makes a second call fine; writes need a token", function()
  T.eq(hf.create_repo("me/created", W), hub.endpoint .. "/me/created")
  local ok, err = pcall(hf.create_repo, "me/created", W)
  T.ok(not ok)
  T.contains(err, "repository 'me/created' already exists at " .. hub.endpoint .. " (pass exist_ok=true")
  T.eq(hf.create_repo("me/created", with { exist_ok = true }), hub.endpoint .. "/me/created")
  T.eq(hf.list_repo_files("me/created", H.opts(hub, T.tmpdir())), { ".gitattributes" })
  ok, err = pcall(hf.create_repo, "me/other", { endpoint = hub.endpoint, token = false })
  T.ok(not ok)
  T.contains(err, "needs a token with write access")
  ok, err = pcall(hf.create_repo, "me/other", { endpoint = hub.endpoint, token = "hf_badBADbad" })
  T.ok(not ok)
  T.contains(err, "was refused (HTTP 401")
  T.not_contains(err, "hf_badBADbad")
end)

T.test("upload_folder commits a folder that downloads back byte-identical", function()
  local dir, files = model_folder()
  hf.create_repo("me/model", W)
  hub:clear_log()
  local info = hf.upload_folder(with { folder_path = dir, repo_id = "me/model" })
  T.ok(info.oid:match("^%x+$"), info.oid)
  T.eq(info.commit_url, hub.endpoint .. "/me/model/commit/" .. info.oid)
  T.eq(info.url, hub.endpoint .. "/me/model/tree/main/")
  table.sort(info.lfs_uploaded)
  T.eq(info.lfs_uploaded, { "big.txt", "model.safetensors" })
  -- the Hub's protocol: one preupload, one LFS batch, a basic PUT, 4 parts and a completion, 2
  -- verifies, one commit; the storage URLs got no token
  T.eq(hub:count("POST", "/api/models/me/model/preupload/main"), 1)
  T.eq(hub:count("POST", "/me/model.git/info/lfs/objects/batch"), 1)
  T.eq(hub:count("PUT", "/part/"), 4)
  T.eq(hub:count("PUT", "/lfs-storage/"), 5)
  T.eq(hub:count("POST", "/lfs-storage/"), 1)
  T.eq(hub:count("POST", "/lfs-verify/"), 2)
  T.eq(hub:count("POST", "/api/models/me/model/commit/main"), 1)
  for _, r in ipairs(hub:requests()) do
    if r.path:find("/lfs-storage/", 1, true) then T.ok(not r.auth, "no token to storage: " .. r.path) end
  end
  T.not_contains(T.read_file(hub.log_path), hub.token)
  -- download back with our client: every file, nothing from .git or .cache
  local cache = T.tmpdir()
  local snap = hf.snapshot_download("me/model", H.opts(hub, cache, { token = hub.token }))
  local want = { ".gitattributes" }
  for path in pairs(files) do want[#want + 1] = path end
  table.sort(want)
  T.eq(hf.list_repo_files("me/model", H.opts(hub, cache, { token = hub.token })), want)
  for path, data in pairs(files) do
    T.ok(T.read_file(snap .. "/" .. path) == data, path .. " came back byte-identical")
  end
  -- a second upload of the same folder sends no LFS bytes (the Hub has them) and makes a new commit
  hub:clear_log()
  local again = hf.upload_folder(with { folder_path = dir, repo_id = "me/model", commit_message = "again" })
  T.eq(again.lfs_uploaded, {})
  T.eq(hub:count("PUT", nil), 0)
  T.ok(again.oid ~= info.oid)
end)

T.test("upload_folder: path_in_repo, allow/ignore patterns, delete_patterns; upload_file", function()
  local dir = model_folder()
  hf.create_repo("me/parts", W)
  hf.upload_folder(with { folder_path = dir, repo_id = "me/parts", path_in_repo = "sub",
    allow_patterns = { "*.json", "nested/*" }, ignore_patterns = "tokenizer*" })
  local cache = T.tmpdir()
  T.eq(hf.list_repo_files("me/parts", H.opts(hub, cache, { token = hub.token })),
    { ".gitattributes", "sub/config.json", "sub/nested/notes.md" })
  -- delete_patterns: files under path_in_repo that match and are not uploaded again go
  local dir2 = T.tmpdir()
  fs.write_atomic(dir2 .. "/config.json", "{}")
  hf.upload_folder(with { folder_path = dir2, repo_id = "me/parts", path_in_repo = "sub", delete_patterns = "*" })
  T.eq(hf.list_repo_files("me/parts", H.opts(hub, T.tmpdir(), { token = hub.token })), { ".gitattributes", "sub/config.json" })
  local info = hf.upload_file(with { path_or_fileobj = dir .. "/big.txt", path_in_repo = "one/big.txt", repo_id = "me/parts" })
  T.eq(info.url, hub.endpoint .. "/me/parts/blob/main/one/big.txt")
  local got = hf.hf_hub_download("me/parts", "one/big.txt", H.opts(hub, T.tmpdir(), { token = hub.token }))
  T.ok(T.read_file(got) == T.read_file(dir .. "/big.txt"))
  -- refused paths and missing repositories name what is wrong
  local ok, err = pcall(hf.upload_file, with { path_or_fileobj = dir .. "/big.txt", path_in_repo = "../x", repo_id = "me/parts" })
  T.ok(not ok)
  T.contains(err, "invalid path_in_repo '../x'")
  ok, err = pcall(hf.upload_file, with { path_or_fileobj = dir .. "/big.txt", path_in_repo = "x", repo_id = "me/absent" })
  T.ok(not ok)
  T.contains(err, "repository 'me/absent' not found at " .. hub.endpoint .. ": create it first")
  ok, err = pcall(hf.upload_file, with { path_or_fileobj = dir .. "/nope", path_in_repo = "x", repo_id = "me/parts" })
  T.ok(not ok)
  T.contains(err, "is not a file")
  ok, err = pcall(hf.upload_folder, with { folder_path = dir, repo_id = "me/parts", create_pr = true })
  T.ok(not ok)
  T.contains(err, "not supported yet: create_pr")
end)

T.test("a failed commit (the Hub refuses it) leaves the branch where it was", function()
  local dir = model_folder()
  hf.create_repo("me/fail", W)
  local before = hf.list_repo_files("me/fail", H.opts(hub, T.tmpdir(), { token = hub.token }))
  hub:set_faults { { id = "c", match = "/commit/", method = "POST", status = 400 } }
  local ok, err = pcall(hf.upload_folder, with { folder_path = dir, repo_id = "me/fail" })
  hub:set_faults {}
  T.ok(not ok)
  T.contains(err, "the commit of 'me/fail' at " .. hub.endpoint .. " failed (HTTP 400")
  T.eq(hf.list_repo_files("me/fail", H.opts(hub, T.tmpdir(), { token = hub.token })), before)
end)

T.run()
