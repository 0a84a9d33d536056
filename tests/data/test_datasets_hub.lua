-- load_dataset("org/name") against the loopback Hub: parquet files found through the hub client,
-- split and config names resolved as HF does, the refs/convert/parquet branch for script repos.
local T = require "testlib"
local HubServer = require "hub_server"
local H = require "hub_testing"
local datasets = require "datasets"

local hub = HubServer.start {}

local function parquet_bytes(rows)
  local dir = T.tmpdir()
  datasets.Dataset.from_list(rows):to_parquet(dir .. "/x.parquet")
  return T.read_file(dir .. "/x.parquet")
end

local function child(code)
  local home = T.tmpdir()
  local out, err, rc = H.run_child("local datasets = require 'datasets'\n" .. code,
    { HF_HOME = home, HF_ENDPOINT = hub.endpoint })
  return out, err, rc
end

hub:commit("org/plain", {
  ["README.md"] = "---\nlicense: mit\n---\n",
  ["data/train-00000-of-00002.parquet"] = parquet_bytes { { text = "a", label = 0 }, { text = "b", label = 1 } },
  ["data/train-00001-of-00002.parquet"] = parquet_bytes { { text = "c", label = 1 } },
  ["data/test-00000-of-00001.parquet"] = parquet_bytes { { text = "t", label = 0 } },
}, { repo_type = "dataset" })

hub:commit("org/configs", {
  ["en/train/0000.parquet"] = parquet_bytes { { w = "hello" } },
  ["fr/train/0000.parquet"] = parquet_bytes { { w = "bonjour" }, { w = "salut" } },
  ["fr/validation/0000.parquet"] = parquet_bytes { { w = "allo" } },
}, { repo_type = "dataset" })

hub:commit("org/jsonl", {
  ["train.jsonl"] = '{"x":1}\n{"x":2}\n',
  ["validation.jsonl"] = '{"x":3}\n',
}, { repo_type = "dataset" })

hub:commit("org/script", { ["script.py"] = "# a loading script\n" }, { repo_type = "dataset" })
T.exec("mkdir -p " .. T.shell_quote(hub:repo_dir("org/script", "dataset") .. "/refs/refs/convert"))
hub:commit("org/script", { ["default/train/0000.parquet"] = parquet_bytes { { s = "converted" } } },
  { repo_type = "dataset", branch = "refs/convert/parquet" })

T.test("a repo's data/ parquet shards load as the train and test splits", function()
  local out, err, rc = child [[
local dd = datasets.load_dataset("org/plain")
print(table.concat(dd:keys(), ","), #dd.train, #dd.test, table.concat(dd.train.text, ""), dd.test[1].text)
local tr = datasets.load_dataset("org/plain", nil, { split = "train" })
print(#tr, tr[3].label)
]]
  T.eq(rc, 0, err)
  T.contains(out, "test,train\t3\t1\tabc\tt")
  T.contains(out, "3\t1")
end)

T.test("configs come from top-level folders; a missing or unknown config is named", function()
  local out, err, rc = child [[
local fr = datasets.load_dataset("org/configs", "fr")
print(table.concat(fr:keys(), ","), table.concat(fr.train.w, ","), fr.validation[1].w)
print(datasets.load_dataset("org/configs", "en", { split = "train" })[1].w)
print(select(2, pcall(datasets.load_dataset, "org/configs")))
print(select(2, pcall(datasets.load_dataset, "org/configs", "de")))
]]
  T.eq(rc, 0, err)
  T.contains(out, "train,validation\tbonjour,salut\tallo")
  T.contains(out, "hello")
  T.contains(out, "config name is missing for org/configs; pick one among the available configs: en, fr")
  T.contains(out, "unknown config 'de' for org/configs (available: en, fr)")
end)

T.test("json lines files at the top level are splits by their names", function()
  local out, err, rc = child [[
local dd = datasets.load_dataset("org/jsonl")
print(table.concat(dd:keys(), ","), table.concat(dd.train.x, ","), dd.validation[1].x)
]]
  T.eq(rc, 0, err)
  T.contains(out, "train,validation\t1,2\t3")
end)

T.test("a script repo falls back to the refs/convert/parquet branch", function()
  local out, err, rc = child [[
print(datasets.load_dataset("org/script", nil, { split = "train" })[1].s)
]]
  T.eq(rc, 0, out .. err)
  T.contains(out, "converted")
end)

T.test("an unknown repo gives the hub's error", function()
  local out, err, rc = child [[
print(select(2, pcall(datasets.load_dataset, "org/nope")))
]]
  T.eq(rc, 0, err)
  T.contains(out, "load_dataset: ")
  T.contains(out, "org/nope")
end)

T.run()
