-- map results are cached by fingerprint across runs (HF_DATASETS_CACHE): a second run of the same
-- map does not call the function; a changed function, argument or input does.
local T = require "testlib"

local q = T.shell_quote

-- A child script: loads the jsonl, maps with a function whose body is `body`, prints the number of
-- calls (counted through a global, which is not part of the fingerprint) and the result.
local function run(dir, body, extra_opts)
  local script = dir .. "/job.lua"
  T.write_file(script, string.format([[
local datasets = require "datasets"
CALLS = 0
local ds = datasets.load_dataset("json", { data_files = %q, split = "train" })
local m = ds:map(function(b)
  CALLS = CALLS + 1
  local out = {}
  for i, t in ipairs(b.text) do out[i] = %s end
  return { n = out }
end, { batched = true, batch_size = 2 %s })
print("calls=" .. CALLS .. " n=" .. table.concat(m.n, ","))
]], dir .. "/data.jsonl", body, extra_opts or ""))
  local out, err, code = T.sh("env HF_DATASETS_CACHE=" .. q(dir .. "/cache") .. " " .. q(T.skyrun_bin) .. " " .. q(script))
  if code ~= 0 then error("child failed: " .. out .. err) end
  return out
end

T.test("a second run of the same map reuses the cached result", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/data.jsonl", '{"text":"a"}\n{"text":"bb"}\n{"text":"ccc"}\n')
  T.contains(run(dir, "#t"), "calls=2 n=1,2,3")
  T.contains(run(dir, "#t"), "calls=0 n=1,2,3")
  -- a changed function is recomputed, and then cached under its own fingerprint
  T.contains(run(dir, "#t * 10"), "calls=2 n=10,20,30")
  T.contains(run(dir, "#t * 10"), "calls=0 n=10,20,30")
  -- other map arguments are part of the fingerprint
  T.contains(run(dir, "#t", ", remove_columns = { 'text' }"), "calls=2 n=1,2,3")
  -- a changed input file is a new input fingerprint
  T.write_file(dir .. "/data.jsonl", '{"text":"a"}\n{"text":"bb"}\n{"text":"cccc"}\n')
  T.exec("touch -d '2030-01-01' " .. q(dir .. "/data.jsonl"))
  T.contains(run(dir, "#t"), "calls=2 n=1,2,4")
end)

T.test("upvalues are part of the function's fingerprint", function()
  local datasets = require "datasets"
  local function make(k) return function(b) return { y = k } end end
  T.ok(datasets.fingerprint(make(1)) ~= datasets.fingerprint(make(2)))
  T.eq(datasets.fingerprint(make(3)), datasets.fingerprint(make(3)))
  local fmt = string.format
  T.ok(datasets.fingerprint(function() return fmt("%d", 1) end) ~= nil, "a standard library upvalue hashes by name")
  T.eq(datasets.fingerprint(function() return io.stdout end), datasets.fingerprint(function() return io.stdout end))
  local f = io.stdout
  T.eq(datasets.fingerprint(function() return f end), nil, "a file handle cannot be fingerprinted")
end)

T.test("the cache lives in HF_DATASETS_CACHE, else HF_HOME/datasets", function()
  local out = T.sh("env -u HF_DATASETS_CACHE HF_HOME=/x/hf " .. q(T.skyrun_bin) .. " -e " ..
    q('print(require("datasets").cache_dir())'))
  if out == "" then
    local dir = T.tmpdir()
    T.write_file(dir .. "/c.lua", 'print(require("datasets").cache_dir())')
    out = T.sh("env -u HF_DATASETS_CACHE HF_HOME=/x/hf " .. q(T.skyrun_bin) .. " " .. q(dir .. "/c.lua"))
  end
  T.contains(out, "/x/hf/datasets")
end)

T.test("long maps draw a progress bar on a terminal and stay quiet otherwise", function()
  local H = require "hub_testing"
  local code = [[
local datasets = require "datasets"
local t = {}
for i = 1, 30000 do t[i] = "x" end
local ds = datasets.Dataset.from_dict { text = t }
ds:map(function(b) return { n = { #b.text } } end, { batched = true, batch_size = 30000, remove_columns = "text" })
ds:map(function(r) return { n = 1 } end)
print("done")
]]
  local out = H.run_child(code, {}, { tty = true })
  T.contains(out, "Map: 100%|####################| 30000/30000")
  T.contains(out, "examples/s]")
  local plain, err = H.run_child(code, {})
  T.eq(plain, "done\n")
  T.eq(err, "")
  local quiet = H.run_child(code, { HF_DATASETS_DISABLE_PROGRESS_BARS = "1" }, { tty = true })
  T.not_contains(quiet, "Map:")
end)

T.run()
