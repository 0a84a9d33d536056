-- What users see when the Hub says no or cannot be reached: gated and missing repositories and
-- files, connection refused, offline mode from a warm and from a cold cache, the token kept out of
-- every output, and the progress bar drawn only on a terminal. Runs child skyruns with controlled
-- environments (HF_ENDPOINT, HF_HOME, HF_TOKEN, HF_HUB_OFFLINE) as users set them.
local T = require "testlib"
local HubServer = require "hub_server"
local H = require "hub_testing"
local hf = require "huggingface_hub"

local hub = HubServer.start()
local TOKEN = hub.token
local GATED_SHA = hub:commit("org/gated", { ["config.json"] = '{"gated": true}' })
hub:gate("org/gated")
local OPEN_SHA = hub:commit("org/open", { ["config.json"] = '{"open": true}', ["model.safetensors"] = H.bytes(50000, 2) })

local function download_code(repo, file, extra)
  return string.format("print(require('huggingface_hub').hf_hub_download(%q, %q%s))", repo, file,
    extra and (", " .. extra) or "")
end

T.test("a gated repo without a token says to accept the license and set HF_TOKEN", function()
  local home = T.tmpdir()
  local out, err, code = H.run_child(download_code("org/gated", "config.json"), { HF_ENDPOINT = hub.endpoint, HF_HOME = home })
  T.eq(code, 1)
  T.contains(err, "repository 'org/gated' is gated or private: accept its license at " .. hub.endpoint ..
    "/org/gated and set HF_TOKEN (or log in")
  T.contains(err, "HTTP 401, no token was sent")
end)

T.test("a gated repo with a token it does not accept says so (403), without showing the token", function()
  local home = T.tmpdir()
  local bad = "hf_wrongTOKENwrongTOKEN42"
  local out, err, code = H.run_child(download_code("org/gated", "config.json"),
    { HF_ENDPOINT = hub.endpoint, HF_HOME = home, HF_TOKEN = bad })
  T.eq(code, 1)
  T.contains(err, "is gated or private: accept its license at " .. hub.endpoint .. "/org/gated")
  T.contains(err, "HTTP 403, the token sent does not grant access")
  T.not_contains(out .. err, bad)
end)

T.test("a gated repo downloads with HF_TOKEN, and with the token file under HF_HOME", function()
  local home = T.tmpdir()
  local out, err, code = H.run_child(download_code("org/gated", "config.json"),
    { HF_ENDPOINT = hub.endpoint, HF_HOME = home, HF_TOKEN = TOKEN })
  T.eq(code, 0, err)
  T.eq(out, home .. "/hub/models--org--gated/snapshots/" .. GATED_SHA .. "/config.json\n")
  T.not_contains(out .. err, TOKEN)
  local home2 = T.tmpdir()
  T.write_file(home2 .. "/token", TOKEN .. "\n")
  out, err, code = H.run_child(download_code("org/gated", "config.json", "{ force_download = true }"),
    { HF_ENDPOINT = hub.endpoint, HF_HOME = home2 })
  T.eq(code, 0, err)
  T.contains(out, home2 .. "/hub/models--org--gated/snapshots/")
  -- token=false sends none even when one is configured
  out, err, code = H.run_child(download_code("org/gated", "config.json", "{ token = false, force_download = true }"),
    { HF_ENDPOINT = hub.endpoint, HF_HOME = home2 })
  T.eq(code, 1)
  T.contains(err, "no token was sent")
end)

T.test("a gated repo fetched earlier with a token is served from the cache when the token is gone", function()
  local home = T.tmpdir()
  local _, err, code = H.run_child(download_code("org/gated", "config.json"),
    { HF_ENDPOINT = hub.endpoint, HF_HOME = home, HF_TOKEN = TOKEN })
  T.eq(code, 0, err)
  local out
  out, err, code = H.run_child(download_code("org/gated", "config.json"), { HF_ENDPOINT = hub.endpoint, HF_HOME = home })
  T.eq(code, 0, err)
  T.eq(out, home .. "/hub/models--org--gated/snapshots/" .. GATED_SHA .. "/config.json\n")
end)

T.test("a Hub answering 503 is asked again after a pause when the cache cannot answer", function()
  local cache = T.tmpdir()
  hub:set_faults { { id = "503", match = "/org/open/resolve/main/config.json", method = "HEAD", status = 503, times = 1 } }
  hub:clear_log()
  local p = hf.hf_hub_download("org/open", "config.json", H.opts(hub, cache))
  hub:set_faults {}
  T.eq(T.read_file(p), '{"open": true}')
  T.eq(hub:count("HEAD", "config.json"), 2)
end)

T.test("a CDN refusing the download is named as the file server, and the next call gets a new link", function()
  local cache = T.tmpdir()
  hub:set_faults { { id = "cdn403", match = "/cdn/", method = "GET", status = 403, times = 1 } }
  T.raises(function() hf.hf_hub_download("org/open", "model.safetensors", H.opts(hub, cache)) end,
    "the file server http://localhost:" .. hub.port .. " answered HTTP 403 for 'model.safetensors' of 'org/open'")
  local p = hf.hf_hub_download("org/open", "model.safetensors", H.opts(hub, cache))
  hub:set_faults {}
  T.eq(H.file_size(p), 50000)
end)

T.test("the token appears in no output or error of any call", function()
  local home = T.tmpdir()
  local code = [[
    local hf = require "huggingface_hub"
    local function try(f, ...) local ok, e = pcall(f, ...); print(ok, e) end
    try(hf.hf_hub_download, "org/gated", "config.json")
    try(hf.hf_hub_download, "org/gated", "missing.json")
    try(hf.hf_hub_download, "org/nope", "config.json")
    try(hf.list_repo_files, "org/gated")
    try(hf.snapshot_download, "org/gated")
    try(hf.resolve_model_folder, "org/gated", { "config.json", { "tokenizer.json", optional = true } })
    for k, v in pairs(hf.settings()) do print(k, v) end
  ]]
  local out, err = H.run_child(code, { HF_ENDPOINT = hub.endpoint, HF_HOME = home, HF_TOKEN = TOKEN })
  T.contains(out, "file 'missing.json' not found in 'org/gated' at revision 'main'")
  T.contains(out, "has_token\ttrue")
  T.not_contains(out .. err, TOKEN)
  T.not_contains(out .. err, TOKEN:sub(4, 20))
end)

T.test("a missing repository and a missing file are named", function()
  local cache = T.tmpdir()
  T.raises(function() hf.hf_hub_download("org/nope", "config.json", H.opts(hub, cache, { token = TOKEN })) end,
    "repository 'org/nope' not found at " .. hub.endpoint)
  local err = T.raises(function() hf.hf_hub_download("org/nope", "config.json", H.opts(hub, cache)) end,
    "repository 'org/nope' not found at " .. hub.endpoint)
  T.contains(err, "if it is private or gated")
  T.raises(function() hf.hf_hub_download("org/open", "nope.bin", H.opts(hub, cache)) end,
    "file 'nope.bin' not found in 'org/open' at revision 'main'")
  T.raises(function() hf.hf_hub_download("org/open", "x.json", H.opts(hub, cache, { repo_type = "dataset" })) end,
    "repository 'org/open' not found at " .. hub.endpoint .. " (repo_type 'dataset')")
end)

T.test("connection refused says the endpoint is unreachable and names what the cache lacks", function()
  local home = T.tmpdir()
  local dead = "http://127.0.0.1:9"  -- discard port: nothing listens on loopback
  local out, err, code = H.run_child(download_code("org/open", "config.json"), { HF_ENDPOINT = dead, HF_HOME = home })
  T.eq(code, 1)
  T.contains(err, "cannot reach the Hub at " .. dead)
  T.contains(err, "'config.json' of 'org/open' (revision 'main') is not in the cache at " .. home .. "/hub")
  T.contains(err, "missing " .. home .. "/hub/models--org--open (nothing of this repository is cached)")
end)

T.test("an unreachable Hub falls back to a warm cache", function()
  local home = T.tmpdir()
  local _, err, code = H.run_child(download_code("org/open", "config.json"), { HF_ENDPOINT = hub.endpoint, HF_HOME = home })
  T.eq(code, 0, err)
  local out
  out, err, code = H.run_child(download_code("org/open", "config.json"), { HF_ENDPOINT = "http://127.0.0.1:9", HF_HOME = home })
  T.eq(code, 0, err)
  T.eq(out, home .. "/hub/models--org--open/snapshots/" .. OPEN_SHA .. "/config.json\n")
  -- a file of the same commit that was never fetched is named exactly
  out, err, code = H.run_child(download_code("org/open", "model.safetensors"), { HF_ENDPOINT = "http://127.0.0.1:9", HF_HOME = home })
  T.eq(code, 1)
  T.contains(err, "missing " .. home .. "/hub/models--org--open/snapshots/" .. OPEN_SHA .. "/model.safetensors")
end)

T.test("HF_HUB_OFFLINE=1 serves a warm cache without a single request", function()
  local home = T.tmpdir()
  local env = { HF_ENDPOINT = hub.endpoint, HF_HOME = home }
  local _, err, code = H.run_child(download_code("org/open", "config.json") .. download_code("org/open", "model.safetensors"), env)
  T.eq(code, 0, err)
  hub:clear_log()
  env.HF_HUB_OFFLINE = "1"
  local out
  out, err, code = H.run_child(download_code("org/open", "config.json") .. download_code("org/open", "model.safetensors") ..
    download_code("org/open", "tokenizer.json", "{ optional = true }"), env)
  T.eq(code, 0, err)
  T.eq(out, home .. "/hub/models--org--open/snapshots/" .. OPEN_SHA .. "/config.json\n" ..
    home .. "/hub/models--org--open/snapshots/" .. OPEN_SHA .. "/model.safetensors\nnil\n")
  T.eq(#hub:requests(), 0)
end)

T.test("HF_HUB_OFFLINE=1 with a cold cache says offline and names what is missing", function()
  local home = T.tmpdir()
  hub:clear_log()
  local _, err, code = H.run_child(download_code("org/open", "config.json"),
    { HF_ENDPOINT = hub.endpoint, HF_HOME = home, HF_HUB_OFFLINE = "1" })
  T.eq(code, 1)
  T.contains(err, "offline mode is on (HF_HUB_OFFLINE=1), and 'config.json' of 'org/open' (revision 'main') is not in the cache")
  T.contains(err, "missing " .. home .. "/hub/models--org--open")
  -- the repo is cached but the revision is not: the missing ref is named
  local cache = home .. "/hub"
  hf.hf_hub_download("org/open", "config.json", H.opts(hub, cache))
  _, err, code = H.run_child(download_code("org/open", "config.json", "{ revision = 'v1' }"),
    { HF_ENDPOINT = hub.endpoint, HF_HOME = home, HF_HUB_OFFLINE = "1" })
  T.eq(code, 1)
  T.contains(err, "missing " .. cache .. "/models--org--open/refs/v1 (the commit of revision 'v1' is unknown)")
  -- local_files_only does the same for one call
  T.raises(function() hf.hf_hub_download("org/open", "model.safetensors", H.opts(hub, cache, { local_files_only = true })) end,
    "local_files_only=true forbids network access, and 'model.safetensors' of 'org/open'")
  T.eq(hub:count(nil, "/org/open/"), 2, "only the warming download (HEAD, GET) reached the server")
end)

T.test("a cache laid out by Python's huggingface_hub is served offline", function()
  -- Built by hand the way file_download.py writes it: blob by etag, relative symlink, bare ref.
  local home = T.tmpdir()
  local repo = home .. "/hub/models--pyorg--pymodel"
  local commit = "0123456789abcdef0123456789abcdef01234567"
  local blob = "7cb18dc9bafbfcf74629a4b760af1b160957a83e"
  T.exec(string.format("mkdir -p %s/blobs %s/snapshots/%s %s/refs", repo, repo, commit, repo))
  T.write_file(repo .. "/blobs/" .. blob, '{"from": "python"}')
  T.exec(string.format("ln -s ../../blobs/%s %s/snapshots/%s/config.json", blob, repo, commit))
  T.write_file(repo .. "/refs/main", commit)
  local out, err, code = H.run_child(download_code("pyorg/pymodel", "config.json") ..
    "print(io.open(require('huggingface_hub').hf_hub_download('pyorg/pymodel', 'config.json')):read('*a'))",
    { HF_HOME = home, HF_HUB_OFFLINE = "1" })
  T.eq(code, 0, err)
  T.eq(out, repo .. "/snapshots/" .. commit .. "/config.json\n" .. '{"from": "python"}\n')
end)

T.test("HF_HUB_CACHE wins over HF_HOME, and HF_HOME over the default", function()
  local home, cache = T.tmpdir(), T.tmpdir()
  local out = H.run_child("local s = require('huggingface_hub').settings(); print(s.cache_dir); print(s.token_path)",
    { HF_HOME = home, HF_HUB_CACHE = cache })
  T.eq(out, cache .. "\n" .. home .. "/token\n")
  out = H.run_child("print(require('huggingface_hub').settings().cache_dir)", { HF_HOME = home })
  T.eq(out, home .. "/hub\n")
  out = H.run_child("print(require('huggingface_hub').settings().endpoint)", { HF_ENDPOINT = "http://x.test:1/" })
  T.eq(out, "http://x.test:1\n")
end)

T.test("the progress bar stays quiet when stderr is not a terminal and draws on one", function()
  local home = T.tmpdir()
  local env = { HF_ENDPOINT = hub.endpoint, HF_HOME = home }
  local out, err, code = H.run_child(download_code("org/open", "model.safetensors"), env)
  T.eq(code, 0, err)
  T.eq(err, "")
  local home2 = T.tmpdir()
  local tty = H.run_child(download_code("org/open", "model.safetensors"), { HF_ENDPOINT = hub.endpoint, HF_HOME = home2 },
    { tty = true })
  T.contains(tty, "model.safetensors: 100%|")
  T.contains(tty, "50.0k/50.0k [")
  T.contains(tty, "B/s]")
  local home3 = T.tmpdir()
  tty = H.run_child(download_code("org/open", "model.safetensors"),
    { HF_ENDPOINT = hub.endpoint, HF_HOME = home3, HF_HUB_DISABLE_PROGRESS_BARS = "1" }, { tty = true })
  T.not_contains(tty, "100%|")
end)

T.test("a symbolic link planted in the cache at a blob being written is refused, its target untouched", function()
  local cache = T.tmpdir()
  local weights = H.bytes(50000, 2)
  local etag = H.sha256(weights)
  local blobs = cache .. "/models--org--open/blobs"
  T.exec("mkdir -p " .. T.shell_quote(blobs))
  local victim = T.tmpdir() .. "/victim"
  T.write_file(victim, "precious contents")
  T.exec("ln -s " .. T.shell_quote(victim) .. " " .. T.shell_quote(blobs .. "/" .. etag .. ".incomplete"))
  T.raises(function() hf.hf_hub_download("org/open", "model.safetensors", H.opts(hub, cache)) end,
    "cannot create '" .. blobs .. "/" .. etag .. ".incomplete': it is a symbolic link, which is refused here")
  T.eq(T.read_file(victim), "precious contents")
  -- the lock file too
  os.remove(blobs .. "/" .. etag .. ".incomplete")
  local locks = cache .. "/.locks/models--org--open"
  T.exec("mkdir -p " .. T.shell_quote(locks))
  local elsewhere = T.tmpdir() .. "/not-a-lock"
  os.remove(locks .. "/" .. etag .. ".lock")  -- the lock the first attempt made
  T.exec("ln -s " .. T.shell_quote(elsewhere) .. " " .. T.shell_quote(locks .. "/" .. etag .. ".lock"))
  T.raises(function() hf.hf_hub_download("org/open", "model.safetensors", H.opts(hub, cache)) end,
    "cannot open the lock file '" .. locks .. "/" .. etag .. ".lock': it is a symbolic link")
  T.eq(H.exists(elsewhere), false, "the lock's link target was not created")
  -- with the links gone, the download works
  os.remove(locks .. "/" .. etag .. ".lock")
  T.eq(T.read_file(hf.hf_hub_download("org/open", "model.safetensors", H.opts(hub, cache))), weights)
end)

T.run()
