-- hf_hub_download against a loopback Hub: the cache layout huggingface_hub writes, cache hits,
-- ETag changes, revisions, optional files, resume after a dropped connection, forced downloads.
local T = require "testlib"
local HubServer = require "hub_server"
local H = require "hub_testing"
local hf = require "huggingface_hub"

local hub = HubServer.start()
local CONFIG = '{"model_type": "bert", "hidden_size": 32}'
local WEIGHTS = H.bytes(300 * 1024, 11)  -- an LFS file (by extension): served from the CDN host
local SHA1 = hub:commit("org/tiny", { ["config.json"] = CONFIG, ["model.safetensors"] = WEIGHTS,
  ["nested/deeper/vocab.txt"] = "[PAD]\n[UNK]\n" })

T.test("a download lands in blobs/, snapshots/<commit>/ and refs/main exactly as huggingface_hub lays them out", function()
  local cache = T.tmpdir()
  local path = hf.hf_hub_download("org/tiny", "config.json", H.opts(hub, cache))
  local repo = cache .. "/models--org--tiny"
  T.eq(path, repo .. "/snapshots/" .. SHA1 .. "/config.json")
  T.eq(T.read_file(path), CONFIG)
  -- refs/main holds the bare commit hash (no newline), as _cache_commit_hash_for_specific_revision writes it
  T.eq(T.read_file(repo .. "/refs/main"), SHA1)
  -- the pointer is a relative symlink to the blob named by the git blob sha1 (the ETag of a regular file)
  local etag = H.git_blob_sha1(CONFIG)
  T.ok(H.is_symlink(path), "snapshot entry is a symlink")
  T.eq(H.readlink(path), "../../blobs/" .. etag)
  T.eq(H.ls(repo .. "/blobs"), { etag })
  -- an LFS file is named by its sha256 (X-Linked-Etag), a nested path links with one more "../" per folder
  local wpath = hf.hf_hub_download("org/tiny", "model.safetensors", H.opts(hub, cache))
  T.eq(H.readlink(wpath), "../../blobs/" .. H.sha256(WEIGHTS))
  T.eq(T.read_file(wpath), WEIGHTS)
  local vpath = hf.hf_hub_download("org/tiny", "nested/deeper/vocab.txt", H.opts(hub, cache))
  T.eq(H.readlink(vpath), "../../../../blobs/" .. H.git_blob_sha1("[PAD]\n[UNK]\n"))
  T.eq(H.ls(repo), { "blobs", "refs", "snapshots" })
  T.contains(T.read_file(cache .. "/CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55")
  -- one lock file per blob, where huggingface_hub's WeakFileLock keeps them
  local locks = { etag .. ".lock", H.git_blob_sha1("[PAD]\n[UNK]\n") .. ".lock", H.sha256(WEIGHTS) .. ".lock" }
  table.sort(locks)
  T.eq(H.ls(cache .. "/.locks/models--org--tiny"), locks)
end)

T.test("the token never goes to the CDN host an LFS file redirects to", function()
  local cache = T.tmpdir()
  hub:clear_log()
  hf.hf_hub_download("org/tiny", "model.safetensors", H.opts(hub, cache, { token = "hf_anything_at_all_123" }))
  local saw_cdn = false
  for _, r in ipairs(hub:requests()) do
    if r.path:find("/cdn/", 1, true) then
      saw_cdn = true
      T.eq(r.auth, false, "Authorization sent to the CDN")
    else
      T.eq(r.auth, true, "Authorization sent to the Hub for " .. r.path)
    end
  end
  T.ok(saw_cdn, "the download went through the CDN redirect")
end)

T.test("a second download of the same revision asks only for metadata (HEAD), fetching no bytes", function()
  local cache = T.tmpdir()
  hf.hf_hub_download("org/tiny", "config.json", H.opts(hub, cache))
  hf.hf_hub_download("org/tiny", "model.safetensors", H.opts(hub, cache))
  hub:clear_log()
  local p1 = hf.hf_hub_download("org/tiny", "config.json", H.opts(hub, cache))
  local p2 = hf.hf_hub_download("org/tiny", "model.safetensors", H.opts(hub, cache))
  T.eq(T.read_file(p1), CONFIG)
  T.eq(T.read_file(p2), WEIGHTS)
  T.eq(hub:count("GET"), 0, "GET requests on a warm cache")
  T.eq(hub:count("HEAD"), 2, "HEAD requests on a warm cache")
end)

T.test("a commit hash already cached is served without any request", function()
  local cache = T.tmpdir()
  hf.hf_hub_download("org/tiny", "config.json", H.opts(hub, cache))
  hub:clear_log()
  local p = hf.hf_hub_download("org/tiny", "config.json", H.opts(hub, cache, { revision = SHA1 }))
  T.eq(p, cache .. "/models--org--tiny/snapshots/" .. SHA1 .. "/config.json")
  T.eq(#hub:requests(), 0)
end)

T.test("a changed ETag on a new commit downloads the new blob and keeps the old snapshot", function()
  local cache = T.tmpdir()
  hub:commit("org/moving", { ["config.json"] = '{"v": 1}' })
  local old = hf.hf_hub_download("org/moving", "config.json", H.opts(hub, cache))
  local sha2 = hub:commit("org/moving", { ["config.json"] = '{"v": 2}' })
  hub:clear_log()
  local new = hf.hf_hub_download("org/moving", "config.json", H.opts(hub, cache))
  T.eq(hub:count("GET", "config.json"), 1, "the new version is fetched")
  T.eq(T.read_file(new), '{"v": 2}')
  T.eq(T.read_file(old), '{"v": 1}')
  T.ok(old ~= new)
  T.eq(T.read_file(cache .. "/models--org--moving/refs/main"), sha2)
  T.eq(#H.ls(cache .. "/models--org--moving/blobs"), 2)
end)

T.test("a branch revision and a commit revision resolve to their own snapshots", function()
  local cache = T.tmpdir()
  local main_sha = hub:commit("org/branches", { ["config.json"] = "main" })
  local v2_sha = hub:commit("org/branches", { ["config.json"] = "v2" }, { branch = "v2" })
  local p_main = hf.hf_hub_download("org/branches", "config.json", H.opts(hub, cache))
  local p_v2 = hf.hf_hub_download("org/branches", "config.json", H.opts(hub, cache, { revision = "v2" }))
  T.eq(T.read_file(p_main), "main")
  T.eq(T.read_file(p_v2), "v2")
  T.eq(T.read_file(cache .. "/models--org--branches/refs/v2"), v2_sha)
  local p_commit = hf.hf_hub_download("org/branches", "config.json", H.opts(hub, cache, { revision = main_sha }))
  T.eq(p_commit, p_main)
  -- a commit revision writes no ref of its own
  T.eq(H.ls(cache .. "/models--org--branches/refs"), { "main", "v2" })
  local err = T.raises(function()
    hf.hf_hub_download("org/branches", "config.json", H.opts(hub, cache, { revision = "v9" }))
  end)
  T.contains(err, "revision 'v9' not found in 'org/branches' at " .. hub.endpoint)
end)

T.test("an optional file the repo lacks gives nil and is recorded in .no_exist", function()
  local cache = T.tmpdir()
  local p = hf.hf_hub_download("org/tiny", "tokenizer_config.json", H.opts(hub, cache, { optional = true }))
  T.eq(p, nil)
  T.ok(H.exists(cache .. "/models--org--tiny/.no_exist/" .. SHA1 .. "/tokenizer_config.json"))
  -- at that commit the absence is known: no request needed
  hub:clear_log()
  T.eq(hf.hf_hub_download("org/tiny", "tokenizer_config.json", H.opts(hub, cache, { optional = true, revision = SHA1 })), nil)
  T.eq(#hub:requests(), 0)
  T.raises(function() hf.hf_hub_download("org/tiny", "tokenizer_config.json", H.opts(hub, cache)) end,
    "file 'tokenizer_config.json' not found in 'org/tiny' at revision 'main'")
end)

T.test("a dropped connection mid-body resumes with a Range request from where it stopped", function()
  local cache = T.tmpdir()
  local big = H.bytes(1024 * 1024, 3)
  hub:commit("org/resume", { ["model.safetensors"] = big })
  hub:set_faults { { id = "drop-once", match = "/cdn/", method = "GET", drop_after = 400000, times = 1 } }
  hub:clear_log()
  local p = hf.hf_hub_download("org/resume", "model.safetensors", H.opts(hub, cache))
  hub:set_faults {}
  T.ok(T.read_file(p) == big, "the resumed file is byte-identical")
  local ranges = {}
  for _, r in ipairs(hub:requests()) do
    if r.method == "GET" and r.path:find("/cdn/", 1, true) then ranges[#ranges + 1] = r.range or "none" end
  end
  T.eq(ranges, { "none", "bytes=400000-" })
  T.eq(H.ls(cache .. "/models--org--resume/blobs"), { H.sha256(big) }, "no .incomplete left behind")
end)

T.test("a server answering a resume with the whole file (200) has it written from the start", function()
  local cache = T.tmpdir()
  local big = H.bytes(700 * 1024, 13)
  hub:commit("org/norange", { ["model.safetensors"] = big })
  hub:set_faults { { id = "drop", match = "/cdn/", method = "GET", drop_after = 250000, times = 1 },
    { id = "no-range", match = "/cdn/", method = "GET", ignore_range = true, times = 1 } }
  hub:clear_log()
  local p = hf.hf_hub_download("org/norange", "model.safetensors", H.opts(hub, cache))
  hub:set_faults {}
  T.ok(T.read_file(p) == big, "the file is byte-identical")
  T.eq(hub:count("GET", "/cdn/"), 2)
end)

-- Starts a child skyrun downloading `repo`'s model.safetensors while the server stalls after
-- `stall_at` bytes; returns once the .incomplete file holds them. Returns the child's pid (skyrun
-- itself), its output file, the file its exit code lands in, and the .incomplete path.
local function start_stalled_download(repo, cache, data, stall_at)
  local incomplete = cache .. "/" .. hf.repo_folder_name(repo) .. "/blobs/" .. H.sha256(data) .. ".incomplete"
  hub:set_faults { { id = repo, match = "/cdn/", method = "GET", drop_after = stall_at, hang = true,
    hang_seconds = 30, times = 1 } }
  local dir = T.tmpdir()
  T.write_file(dir .. "/child.lua", string.format(
    "require('huggingface_hub').hf_hub_download(%q, 'model.safetensors', { endpoint = %q, cache_dir = %q, token = false })",
    repo, hub.endpoint, cache))
  local q = T.shell_quote
  T.exec(string.format("(%s %s > %s 2>&1; echo $? > %s) & echo $! > %s", q(T.skyrun_bin), q(dir .. "/child.lua"),
    q(dir .. "/out"), q(dir .. "/code"), q(dir .. "/pid")))
  for _ = 1, 200 do
    if (H.file_size(incomplete) or 0) >= stall_at then break end
    os.execute("sleep 0.05")
  end
  -- the background subshell waits for skyrun: its only child
  local pid = tonumber((T.sh("pgrep -P " .. tonumber(T.read_file(dir .. "/pid")))):match("%d+"))
  return pid, dir .. "/out", dir .. "/code", incomplete
end

T.test("a download killed mid-way leaves blobs/<etag>.incomplete that the next process resumes", function()
  local cache = T.tmpdir()
  local big = H.bytes(1024 * 1024, 5)
  hub:commit("org/killed", { ["model.safetensors"] = big })
  local pid, _, _, incomplete = start_stalled_download("org/killed", cache, big, 300000)
  os.execute("kill -9 " .. pid)
  T.eq(H.file_size(incomplete), 300000, "the partial download stays on disk")
  hub:set_faults {}
  hub:clear_log()
  local p = hf.hf_hub_download("org/killed", "model.safetensors", H.opts(hub, cache))
  T.ok(T.read_file(p) == big, "the resumed file is byte-identical")
  local gets = {}
  for _, r in ipairs(hub:requests()) do
    if r.method == "GET" then gets[#gets + 1] = r.range or "none" end
  end
  T.eq(gets, { "bytes=300000-" })
  T.eq(H.exists(incomplete), false)
end)

T.test("Ctrl-C stops a stalled download at once and keeps the partial file for later", function()
  local cache = T.tmpdir()
  local big = H.bytes(600 * 1024, 9)
  hub:commit("org/stalled", { ["model.safetensors"] = big })
  local pid, out, code_file, incomplete = start_stalled_download("org/stalled", cache, big, 100000)
  os.execute("kill -INT " .. pid)
  local code
  for _ = 1, 200 do  -- 10 s at most, well below the 30 s stall
    local f = io.open(code_file)
    code = f and tonumber(f:read("*a"))
    if f then f:close() end
    if code then break end
    os.execute("sleep 0.05")
  end
  hub:set_faults {}
  T.eq(code, 1, "skyrun ended after Ctrl-C")
  T.contains(T.read_file(out), "interrupted")
  T.eq(H.file_size(incomplete), 100000)
end)

T.test("force_download fetches the bytes again", function()
  local cache = T.tmpdir()
  hf.hf_hub_download("org/tiny", "config.json", H.opts(hub, cache))
  hub:clear_log()
  local p = hf.hf_hub_download("org/tiny", "config.json", H.opts(hub, cache, { force_download = true }))
  T.eq(T.read_file(p), CONFIG)
  T.eq(hub:count("GET", "config.json"), 1)
end)

T.test("a renamed repository is followed through the Hub's relative redirect", function()
  local cache = T.tmpdir()
  hub:commit("neworg/renamed", { ["config.json"] = "renamed" })
  hub:move("oldorg/renamed", "neworg/renamed")
  local p = hf.hf_hub_download("oldorg/renamed", "config.json", H.opts(hub, cache))
  T.eq(T.read_file(p), "renamed")
  T.contains(p, "/models--oldorg--renamed/snapshots/")
end)

T.test("a dataset repo lives under datasets--org--name and resolves under /datasets/", function()
  local cache = T.tmpdir()
  hub:commit("org/ds", { ["data/train-00000-of-00001.parquet"] = H.bytes(2000, 1) }, { repo_type = "dataset" })
  hub:clear_log()
  local p = hf.hf_hub_download("org/ds", "data/train-00000-of-00001.parquet", H.opts(hub, cache, { repo_type = "dataset" }))
  T.contains(p, cache .. "/datasets--org--ds/snapshots/")
  T.eq(hub:requests()[1].path, "/datasets/org/ds/resolve/main/data/train-00000-of-00001.parquet")
end)

T.test("bad repo ids, file names and options are refused before any request", function()
  local cache = T.tmpdir()
  hub:clear_log()
  T.raises(function() hf.hf_hub_download("org/x", "../../etc/passwd", H.opts(hub, cache)) end,
    "invalid filename '../../etc/passwd': it cannot contain a '..' path segment")
  T.raises(function() hf.hf_hub_download("org/x", "/etc/passwd", H.opts(hub, cache)) end, "cannot be an absolute path")
  T.raises(function() hf.hf_hub_download("a/b/c", "x", H.opts(hub, cache)) end, "invalid repo id 'a/b/c'")
  T.raises(function() hf.hf_hub_download("org/x--y", "x", H.opts(hub, cache)) end, "'--' and '..' are not allowed")
  T.raises(function() hf.hf_hub_download("org/x", "x", H.opts(hub, cache, { repo_type = "modle" })) end,
    "invalid repo_type 'modle'")
  local err = T.raises(function() hf.hf_hub_download("org/x", "x", { revison = "main" }) end,
    "unknown option 'revison' to 'hf_hub_download' (did you mean 'revision'?)")
  T.contains(err, "test_hub_download.lua:")
  T.eq(#hub:requests(), 0)
end)

T.test("try_to_load_from_cache answers from the cache alone", function()
  local cache = T.tmpdir()
  T.eq(hf.try_to_load_from_cache("org/tiny", "config.json", { cache_dir = cache }), nil)
  local p = hf.hf_hub_download("org/tiny", "config.json", H.opts(hub, cache))
  hub:clear_log()
  T.eq(hf.try_to_load_from_cache("org/tiny", "config.json", { cache_dir = cache }), p)
  T.eq(#hub:requests(), 0)
end)

T.run()  -- the server exits with this process (--watch-pid)
