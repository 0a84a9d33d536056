-- Repository-wide calls against a loopback Hub: list_repo_files (paginated tree API, offline from
-- the recorded listing), snapshot_download with patterns, and resolve_model_folder, the entry of
-- from_pretrained, with sharded safetensors indexes, optional files and local folders.
local T = require "testlib"
local HubServer = require "hub_server"
local H = require "hub_testing"
local hf = require "huggingface_hub"

local hub = HubServer.start { page_size = 2 }  -- small pages: listings follow the Link header

local DS_FILES = {
  ["README.md"] = "# a dataset",
  ["data/train-00000-of-00002.parquet"] = H.bytes(3000, 1),
  ["data/train-00001-of-00002.parquet"] = H.bytes(3000, 2),
  ["data/test-00000-of-00001.parquet"] = H.bytes(1000, 3),
  ["extra/notes.csv"] = "a,b\n1,2\n",
}
local DS_SHA = hub:commit("org/ds", DS_FILES, { repo_type = "dataset" })

local SHARD1, SHARD2 = H.bytes(40000, 4), H.bytes(30000, 5)
local INDEX = [[{"metadata": {"total_size": 70000}, "weight_map": {
  "embed.weight": "model-00001-of-00002.safetensors",
  "layers.0.weight": "model-00001-of-00002.safetensors",
  "head.weight": "model-00002-of-00002.safetensors"}}]]
local SHARDED_SHA = hub:commit("org/sharded", {
  ["config.json"] = '{"model_type": "llama"}',
  ["model.safetensors.index.json"] = INDEX,
  ["model-00001-of-00002.safetensors"] = SHARD1,
  ["model-00002-of-00002.safetensors"] = SHARD2,
  ["tokenizer.json"] = "{}",
  ["unrelated.bin"] = H.bytes(5000, 6),
})
local SINGLE_SHA = hub:commit("org/single", { ["config.json"] = "{}", ["model.safetensors"] = H.bytes(9000, 7) })

local ALL_DS = { "README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00002.parquet",
  "data/train-00001-of-00002.parquet", "extra/notes.csv" }

T.test("list_repo_files lists a dataset repo through every page of the tree API", function()
  local cache = T.tmpdir()
  hub:clear_log()
  T.eq(hf.list_repo_files("org/ds", H.opts(hub, cache, { repo_type = "dataset" })), ALL_DS)
  T.eq(hub:count("GET", "/api/datasets/org/ds/revision/main"), 1)
  T.ok(hub:count("GET", "/api/datasets/org/ds/tree/" .. DS_SHA) >= 3, "the listing came in several pages")
end)

T.test("list_repo_files records the listing where huggingface_hub keeps it and answers offline from it", function()
  local home = T.tmpdir()
  local cache = home .. "/hub"
  hf.list_repo_files("org/ds", H.opts(hub, cache, { repo_type = "dataset" }))
  local tree = T.read_file(cache .. "/datasets--org--ds/trees/" .. DS_SHA .. ".json")
  T.contains(tree, '"format_version": 1')
  T.contains(tree, '"data/test-00000-of-00001.parquet": {')
  T.contains(tree, '"lfs_sha256": "' .. H.sha256(DS_FILES["data/test-00000-of-00001.parquet"]) .. '"')
  T.contains(tree, '"blob_id": "' .. H.git_blob_sha1("# a dataset") .. '"')
  T.eq(T.read_file(cache .. "/datasets--org--ds/refs/main"), DS_SHA)
  hub:clear_log()
  local out, err, code = H.run_child(
    "for _, f in ipairs(require('huggingface_hub').list_repo_files('org/ds', { repo_type = 'dataset' })) do print(f) end",
    { HF_HOME = home, HF_ENDPOINT = hub.endpoint, HF_HUB_OFFLINE = "1" })
  T.eq(code, 0, err)
  T.eq(out, table.concat(ALL_DS, "\n") .. "\n")
  T.eq(#hub:requests(), 0)
  -- a revision never listed is named as missing
  _, err, code = H.run_child("require('huggingface_hub').list_repo_files('org/ds', { repo_type = 'dataset', revision = 'v2' })",
    { HF_HOME = home, HF_ENDPOINT = hub.endpoint, HF_HUB_OFFLINE = "1" })
  T.eq(code, 1)
  T.contains(err, "offline mode is on (HF_HUB_OFFLINE=1), and the file list of 'org/ds' (revision 'v2') is not in the cache")
  T.contains(err, "missing " .. cache .. "/datasets--org--ds/refs/v2")
end)

T.test("snapshot_download fetches the files the patterns allow and returns the snapshot folder", function()
  local cache = T.tmpdir()
  local folder = hf.snapshot_download("org/ds", H.opts(hub, cache, { repo_type = "dataset",
    allow_patterns = { "data/train-*", "*.md" }, ignore_patterns = "*00001-of-00002*" }))
  T.eq(folder, cache .. "/datasets--org--ds/snapshots/" .. DS_SHA)
  T.eq(H.ls(folder), { "README.md", "data" })
  T.eq(H.ls(folder .. "/data"), { "train-00000-of-00002.parquet" })
  T.ok(T.read_file(folder .. "/data/train-00000-of-00002.parquet") == DS_FILES["data/train-00000-of-00002.parquet"])
  -- a folder pattern ending in '/' takes everything under it
  hf.snapshot_download("org/ds", H.opts(hub, cache, { repo_type = "dataset", allow_patterns = "data/" }))
  T.eq(H.ls(folder .. "/data"), { "test-00000-of-00001.parquet", "train-00000-of-00002.parquet",
    "train-00001-of-00002.parquet" })
end)

T.test("snapshot_download offline returns a complete cached snapshot and names the files an incomplete one lacks", function()
  local home = T.tmpdir()
  local cache = home .. "/hub"
  hf.snapshot_download("org/ds", H.opts(hub, cache, { repo_type = "dataset", allow_patterns = "data/*" }))
  local env = { HF_HOME = home, HF_ENDPOINT = hub.endpoint, HF_HUB_OFFLINE = "1" }
  local out, err, code = H.run_child(
    "print(require('huggingface_hub').snapshot_download('org/ds', { repo_type = 'dataset', allow_patterns = 'data/*' }))", env)
  T.eq(code, 0, err)
  T.eq(out, cache .. "/datasets--org--ds/snapshots/" .. DS_SHA .. "\n")
  _, err, code = H.run_child("require('huggingface_hub').snapshot_download('org/ds', { repo_type = 'dataset' })", env)
  T.eq(code, 1)
  T.contains(err, "the snapshot of 'org/ds' (revision 'main') in the cache is incomplete: 2 file(s) missing (README.md, extra/notes.csv)")
end)

T.test("resolve_model_folder downloads a sharded checkpoint: the index and every shard it names", function()
  local cache = T.tmpdir()
  hub:clear_log()
  local folder, files = hf.resolve_model_folder("org/sharded",
    { "config.json", "model.safetensors", { "generation_config.json", optional = true } }, H.opts(hub, cache))
  T.eq(folder, cache .. "/models--org--sharded/snapshots/" .. SHARDED_SHA)
  T.eq(files, { "config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors" })
  T.ok(T.read_file(folder .. "/model-00001-of-00002.safetensors") == SHARD1)
  T.ok(T.read_file(folder .. "/model-00002-of-00002.safetensors") == SHARD2)
  T.eq(H.exists(folder .. "/unrelated.bin"), false)
  T.eq(H.exists(folder .. "/generation_config.json"), false)
  -- every file came from the commit main pointed at when the first one resolved
  for _, r in ipairs(hub:requests()) do
    if r.method == "HEAD" and r.path ~= "/org/sharded/resolve/main/config.json" then
      T.contains(r.path, "/org/sharded/resolve/" .. SHARDED_SHA .. "/")
    end
  end
  -- all cached at that commit: a second resolution by commit makes no request
  hub:clear_log()
  local again = hf.resolve_model_folder("org/sharded", { "config.json", "model.safetensors" },
    H.opts(hub, cache, { revision = SHARDED_SHA }))
  T.eq(again, folder)
  T.eq(#hub:requests(), 0)
end)

T.test("resolve_model_folder takes model.safetensors itself when the repo has it", function()
  local cache = T.tmpdir()
  local folder, files = hf.resolve_model_folder("org/single", { "config.json", "model.safetensors" }, H.opts(hub, cache))
  T.eq(folder, cache .. "/models--org--single/snapshots/" .. SINGLE_SHA)
  T.eq(files, { "config.json", "model.safetensors" })
end)

T.test("resolve_model_folder names a required file the repo lacks, and its index", function()
  local cache = T.tmpdir()
  T.raises(function() hf.resolve_model_folder("org/single", { "config.json", "adapter_model.safetensors" }, H.opts(hub, cache)) end,
    "file 'adapter_model.safetensors' not found in 'org/single' at revision 'main' " ..
    "(nor 'adapter_model.safetensors.index.json')")
  T.raises(function() hf.resolve_model_folder("org/single", { "config.json", "vocab.txt" }, H.opts(hub, cache)) end,
    "file 'vocab.txt' not found in 'org/single' at revision 'main'")
  T.raises(function() hf.resolve_model_folder("org/single", { "tokenizer.json" }, H.opts(hub, cache)) end,
    "file 'tokenizer.json' not found in 'org/single' at revision 'main'")
  T.raises(function()
    hf.resolve_model_folder("org/single", { { "a.json", optional = true }, { "b.json", optional = true } }, H.opts(hub, cache))
  end, "none of 'a.json', 'b.json' found in 'org/single' at revision 'main'")
end)

T.test("resolve_model_folder offline resolves a sharded checkpoint from the cache", function()
  local home = T.tmpdir()
  hf.resolve_model_folder("org/sharded", { "config.json", "model.safetensors" }, H.opts(hub, home .. "/hub"))
  hub:clear_log()
  local out, err, code = H.run_child([[
    local folder, files = require("huggingface_hub").resolve_model_folder("org/sharded",
      { "config.json", "model.safetensors", { "tokenizer_config.json", optional = true } })
    print(folder) print(table.concat(files, " "))]], { HF_HOME = home, HF_ENDPOINT = hub.endpoint, HF_HUB_OFFLINE = "1" })
  T.eq(code, 0, err)
  T.eq(out, home .. "/hub/models--org--sharded/snapshots/" .. SHARDED_SHA .. "\n" ..
    "config.json model.safetensors.index.json model-00001-of-00002.safetensors model-00002-of-00002.safetensors\n")
  T.eq(#hub:requests(), 0)
end)

T.test("resolve_model_folder returns a local folder as it is and checks its files", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/config.json", "{}")
  T.write_file(dir .. "/model.safetensors.index.json", INDEX)
  T.write_file(dir .. "/model-00001-of-00002.safetensors", SHARD1)
  hub:clear_log()
  T.raises(function() hf.resolve_model_folder(dir, { "config.json", "model.safetensors" }) end,
    "shard 'model-00002-of-00002.safetensors' named by 'model.safetensors.index.json' is missing from the local folder '" .. dir .. "'")
  T.write_file(dir .. "/model-00002-of-00002.safetensors", SHARD2)
  local folder, files = hf.resolve_model_folder(dir, { "config.json", "model.safetensors", { "tokenizer.json", optional = true } })
  T.eq(folder, dir)
  T.eq(files, { "config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors" })
  T.raises(function() hf.resolve_model_folder(dir, { "tokenizer.json" }) end,
    "file 'tokenizer.json' not found in the local folder '" .. dir .. "'")
  T.raises(function() hf.resolve_model_folder("./no/such/folder", { "config.json" }) end,
    "'./no/such/folder' is neither a local folder nor a repo id on the Hub")
  T.eq(#hub:requests(), 0)
end)

T.test("download_options picks the hub options out of a from_pretrained option table", function()
  T.eq(hf.download_options { revision = "v2", token = false, num_labels = 2, cache_dir = "/c", torch_dtype = "bf16" },
    { revision = "v2", token = false, cache_dir = "/c" })
  T.eq(hf.download_options(nil), {})
  T.eq(hf.DOWNLOAD_OPTIONS.revision, "string")
  T.eq(hf.DOWNLOAD_OPTIONS.force_download, "boolean")
end)

T.test("a shard name escaping the snapshot folder is refused", function()
  local cache = T.tmpdir()
  hub:commit("org/evil", { ["model.safetensors.index.json"] = '{"weight_map": {"w": "../../../../etc/passwd"}}' })
  T.raises(function() hf.resolve_model_folder("org/evil", { "model.safetensors" }, H.opts(hub, cache)) end,
    "invalid filename '../../../../etc/passwd'")
end)

T.test("the token follows tree pages on the endpoint's host but not a next-page Link to another host", function()
  local token = "hf_pagination_TEST_token_0123456789"
  local other = HubServer.start { page_size = 2, page_link_host = "other", token = token }
  other:commit("org/ds", DS_FILES, { repo_type = "dataset" })
  T.eq(hf.list_repo_files("org/ds", H.opts(other, T.tmpdir(), { repo_type = "dataset", token = token })), ALL_DS)
  local first, later = 0, 0
  for _, r in ipairs(other:requests()) do
    if r.path:find("/tree/", 1, true) then
      if r.query and r.query:find("cursor=", 1, true) then  -- pages 2 and 3: the Link names localhost
        later = later + 1
        T.eq(r.auth, false, "Authorization sent to the other host for " .. r.query)
      else
        first = first + 1
        T.eq(r.auth, true, "Authorization sent to the endpoint for the first page")
      end
    end
  end
  T.eq(first, 1)
  T.ok(later >= 2, "the listing came in several pages")
  other:stop()
  -- on the endpoint's own host every page carries it
  hub:clear_log()
  hf.list_repo_files("org/ds", H.opts(hub, T.tmpdir(), { repo_type = "dataset", token = token }))
  for _, r in ipairs(hub:requests()) do T.eq(r.auth, true, "Authorization for " .. r.path) end
end)

T.run()
