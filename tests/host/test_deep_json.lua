-- Every JSON reader refuses nesting deeper than 128 levels (serde_json's limit) with an error that
-- names the file, instead of overflowing the stack in the recursive parser: config.json,
-- safetensors headers and indexes, tokenizer.json and tokenizer_config.json, datasets json/jsonl,
-- trainer_state.json, a cached dataset's table.json and a Hub tree listing.
local T = require "testlib"
local transformers = require "transformers"
local datasets = require "datasets"
local tcore = require "transformers.train_core"
local hf = require "huggingface_hub"
local HubServer = require "hub_server"
local H = require "hub_testing"

local DEEP = 1000000  -- far past any stack: this crashed every reader before the limit
local function nest(n, open, close) return string.rep(open or "[", n) .. string.rep(close or "]", n) end
local TOO_DEEP = "nesting deeper than 128 levels"

T.test("128 levels parse, 129 and a million are refused naming the text", function()
  T.eq(#tcore.json_decode(nest(128), "x.json"), 1)
  T.raises(function() tcore.json_decode(nest(129), "x/trainer_state.json") end,
    "x/trainer_state.json: invalid JSON at offset 129: " .. TOO_DEEP)
  T.raises(function() tcore.json_decode(nest(DEEP), "x/trainer_state.json") end, TOO_DEEP)
  T.raises(function() tcore.json_decode(string.rep('{"a":', DEEP) .. "1" .. string.rep("}", DEEP), "obj.json") end,
    "obj.json: invalid JSON at offset " .. (128 * 5 + 1) .. ": " .. TOO_DEEP)
end)

T.test("JSON text read for chat templates (jinja.core.json) nested too deep is a JSONDecodeError", function()
  local jinja = require "jinja.core"
  T.eq(jinja.json(nest(128)):kind(), "list")
  T.raises(function() jinja.json(nest(DEEP)) end, TOO_DEEP)
end)

T.test("config.json and tokenizer files nested too deep are errors naming the file", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/config.json", '{"model_type": "gpt2", "x": ' .. nest(DEEP) .. "}")
  local err = T.raises(function() transformers.AutoConfig.from_pretrained(dir) end, TOO_DEEP)
  T.contains(err, "config.json")
  local tdir = T.tmpdir()
  T.write_file(tdir .. "/tokenizer.json", '{"model": ' .. nest(DEEP, "{\"a\":", "}") .. "}")
  err = T.raises(function() transformers.AutoTokenizer.from_pretrained(tdir) end, TOO_DEEP)
  T.contains(err, "tokenizer.json")
  local cdir = T.tmpdir()
  T.write_file(cdir .. "/tokenizer.json", T.read_file(os.getenv("SKYRUN_SHARED_DATA") .. "/tokenizers/gpt2.json"))
  T.write_file(cdir .. "/tokenizer_config.json", nest(DEEP))
  err = T.raises(function() transformers.AutoTokenizer.from_pretrained(cdir) end, TOO_DEEP)
  T.contains(err, "tokenizer_config.json")
end)

T.test("a safetensors header and a sharded index nested too deep are errors naming the file", function()
  local nn = require "skyrun.nn"
  local dir = T.tmpdir()
  local header = '{"w": ' .. nest(200) .. "}"
  local n = #header
  local le = string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256, 0, 0, 0, 0, 0)
  T.write_file(dir .. "/model.safetensors", le .. header)
  local err = T.raises(function() nn.safetensors_header(dir .. "/model.safetensors") end, TOO_DEEP)
  T.contains(err, "model.safetensors")
  local sdir = T.tmpdir()
  T.write_file(sdir .. "/config.json", T.read_file((os.getenv("SKYRUN_SOURCE_ROOT") or "..") ..
    "/tests/fixtures/models/gpt2/config.json"))
  T.write_file(sdir .. "/model.safetensors.index.json", '{"weight_map": ' .. nest(DEEP, "{\"a\":", "}") .. "}")
  err = T.raises(function() transformers.AutoModelForCausalLM.from_pretrained(sdir) end, TOO_DEEP)
  T.contains(err, "model.safetensors.index.json")
end)

T.test("datasets json and jsonl files nested too deep are errors naming the file and line", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/rows.json", '[{"a": ' .. nest(DEEP) .. "}]")
  local err = T.raises(function()
    datasets.load_dataset("json", { data_files = dir .. "/rows.json", split = "train", cache_dir = dir .. "/c" })
  end, TOO_DEEP)
  T.contains(err, dir .. "/rows.json")
  T.write_file(dir .. "/rows.jsonl", '{"a": 1}\n{"a": ' .. nest(DEEP) .. "}\n")
  err = T.raises(function()
    datasets.load_dataset("json", { data_files = dir .. "/rows.jsonl", split = "train", cache_dir = dir .. "/c2" })
  end, TOO_DEEP)
  T.contains(err, dir .. "/rows.jsonl: invalid JSON at line 2")
end)

T.test("a cached dataset's table.json nested too deep is an error naming it", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/rows.jsonl", '{"a": 1}\n')
  local ds = datasets.load_dataset("json", { data_files = dir .. "/rows.jsonl", split = "train", cache_dir = dir .. "/c" })
  T.eq(#ds, 1)
  local out = T.sh("find " .. T.shell_quote(dir .. "/c") .. " -name table.json")
  local table_json = out:match("[^\n]+")
  T.ok(table_json, "the cache holds a table.json")
  T.write_file(table_json, nest(DEEP))
  local err = T.raises(function()
    datasets.load_dataset("json", { data_files = dir .. "/rows.jsonl", split = "train", cache_dir = dir .. "/c" })
  end, TOO_DEEP)
  T.contains(err, "table.json")
end)

T.test("a Hub tree listing of 600 KB of brackets is an error naming the Hub and the repo", function()
  local hub = HubServer.start()
  local sha = hub:commit("org/deep", { ["README.md"] = "x" })
  hub:set_faults { { match = "/tree/", body_repeat = "[]", times_repeat = 300000, times = 10 } }
  local err = T.raises(function() hf.list_repo_files("org/deep", H.opts(hub, T.tmpdir())) end, TOO_DEEP)
  T.contains(err, "the Hub at " .. hub.endpoint .. " sent invalid JSON for the file list of 'org/deep'")
  T.ok(sha)
  hub:stop()
end)

T.run()
