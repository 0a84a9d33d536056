-- load_dataset over local files: json (array, field, lines), jsonl, csv, tsv, text, folders with
-- split names, split slicing; malformed files give errors naming the file and the row or column.
local T = require "testlib"
local datasets = require "datasets"
local core_glob = require("datasets.core").glob

local function load(...)
  return datasets.load_dataset(...)
end

local function setup()
  local dir = T.tmpdir()
  return dir, { cache_dir = dir .. "/cache" }
end

local function with(base, extra)
  local o = {}
  for k, v in pairs(base) do o[k] = v end
  for k, v in pairs(extra) do o[k] = v end
  return o
end

T.test("json lines, json arrays and a field of a json object load as rows", function()
  local dir, c = setup()
  T.write_file(dir .. "/a.jsonl", '{"t":"x","n":1}\n\n{"t":"y","n":2.5,"l":[1,2]}\n')
  T.write_file(dir .. "/b.json", '[{"t":"x"},{"t":"y","n":null}]')
  T.write_file(dir .. "/c.json", '{"version":1,"data":[{"q":"a"},{"q":"b"},{"q":"c"}]}')
  local a = load("json", with(c, { data_files = dir .. "/a.jsonl" }))
  T.eq(#a.train, 2)
  T.eq(a.train[2], { t = "y", n = 2.5, l = { 1, 2 } })
  T.eq(a.train._types, { t = "string", n = "float64", l = "list<int64>" })
  T.eq(load("json", with(c, { data_files = dir .. "/b.json", split = "train" })).t, { "x", "y" })
  T.eq(load("json", with(c, { data_files = dir .. "/c.json", field = "data", split = "train" })).q, { "a", "b", "c" })
end)

T.test("data_files by split, lists and globs give a DatasetDict", function()
  local dir, c = setup()
  T.write_file(dir .. "/tr1.jsonl", '{"x":1}\n')
  T.write_file(dir .. "/tr2.jsonl", '{"x":2}\n{"x":3}\n')
  T.write_file(dir .. "/te.jsonl", '{"x":9}\n')
  local dd = load("json", with(c, { data_files = { train = dir .. "/tr*.jsonl", test = { dir .. "/te.jsonl" } } }))
  T.eq(dd.train.x, { 1, 2, 3 })
  T.eq(dd.test.x, { 9 })
  T.eq(load("json", with(c, { data_files = { train = dir .. "/tr*.jsonl" }, split = "train[1:]" })).x, { 2, 3 })
  T.eq(load("json", with(c, { data_files = dir .. "/tr2.jsonl", split = "train[:50%]" })).x, { 2 })
  T.raises(function() load("json", with(c, { data_files = dir .. "/none*.jsonl" })) end, "no file matches")
  T.raises(function() load("json", with(c, { data_files = dir .. "/te.jsonl", split = "validation" })) end,
    'unknown split "validation"')
end)

T.test("csv and tsv infer int, float, bool and string columns; empty cells are nulls", function()
  local dir, c = setup()
  T.write_file(dir .. "/a.csv", 'id,score,ok,text\n1,0.5,true,"hello, ""world"""\n2,,false,plain\n3,2,true,"multi\nline"\n')
  T.write_file(dir .. "/b.tsv", "a\tb\nx\t1\ny\t2\n")
  local ds = load("csv", with(c, { data_files = dir .. "/a.csv", split = "train" }))
  T.eq(ds._types, { id = "int64", score = "float64", ok = "bool", text = "string" })
  T.eq(ds[1], { id = 1, score = 0.5, ok = true, text = 'hello, "world"' })
  T.eq(ds[2], { id = 2, ok = false, text = "plain" })
  T.eq(ds[3].text, "multi\nline")
  T.eq(load("csv", with(c, { data_files = dir .. "/b.tsv", split = "train" })).b, { 1, 2 })
  T.eq(load(dir .. "/b.tsv", with(c, { split = "train" })).a, { "x", "y" })
end)

T.test("text loads one row per line, or per paragraph or document", function()
  local dir, c = setup()
  T.write_file(dir .. "/t.txt", "first line\n\nthird\r\nlast")
  T.eq(load("text", with(c, { data_files = dir .. "/t.txt", split = "train" })).text, { "first line", "", "third", "last" })
  T.eq(load("text", with(c, { data_files = dir .. "/t.txt", split = "train", sample_by = "paragraph" })).text,
    { "first line", "third\r\nlast" })
  T.eq(#load("text", with(c, { data_files = dir .. "/t.txt", split = "train", sample_by = "document" })), 1)
  local shakespeare = os.getenv("SKYRUN_SHARED_DATA") .. "/text/tinyshakespeare.txt"
  local ds = load("text", with(c, { data_files = shakespeare, split = "train" }))
  T.eq(#ds, 40000)
  T.eq(ds[1].text, "First Citizen:")
end)

T.test("a folder loads with splits named by its files or sub-folders", function()
  local dir, c = setup()
  T.exec("mkdir -p " .. T.shell_quote(dir .. "/repo/data"))
  T.write_file(dir .. "/repo/data/train-00000.jsonl", '{"x":1}\n')
  T.write_file(dir .. "/repo/data/test-00000.jsonl", '{"x":2}\n')
  T.write_file(dir .. "/repo/README.md", "# card\n")
  local dd = load(dir .. "/repo", c)
  T.eq(dd:keys(), { "test", "train" })
  T.eq(dd.test.x, { 2 })
  T.exec("mkdir -p " .. T.shell_quote(dir .. "/plain"))
  T.write_file(dir .. "/plain/stuff.csv", "a\n1\n")
  T.eq(load(dir .. "/plain", c).train.a, { 1 })
end)

T.test("the loaded table is cached and reused until the file changes", function()
  local dir, c = setup()
  T.write_file(dir .. "/a.jsonl", '{"x":1}\n')
  local a = load("json", with(c, { data_files = dir .. "/a.jsonl", split = "train" }))
  local b = load("json", with(c, { data_files = dir .. "/a.jsonl", split = "train" }))
  T.eq(a._fingerprint, b._fingerprint)
  T.write_file(dir .. "/a.jsonl", '{"x":1}\n{"x":2}\n')
  T.exec("touch -d '2031-01-01' " .. T.shell_quote(dir .. "/a.jsonl"))
  local d = load("json", with(c, { data_files = dir .. "/a.jsonl", split = "train" }))
  T.eq(d.x, { 1, 2 })
  -- map results are cached beside the loaded table, in the same cache_dir
  local m = d:map(function(r) return { y = r.x * 2 } end)
  T.eq(m.y, { 2, 4 })
  T.eq(#core_glob(c.cache_dir .. "/skyrun-cache/cache-*"), 1)
end)

T.test("malformed json, jsonl and csv name the file and the row or line", function()
  local dir, c = setup()
  T.write_file(dir .. "/bad.jsonl", '{"x":1}\n{"x":2\n')
  T.write_file(dir .. "/bad.json", '[{"x":1},\n {"x":}]')
  T.write_file(dir .. "/types.jsonl", '{"x":1}\n{"x":"two"}\n')
  T.write_file(dir .. "/notobj.jsonl", '{"x":1}\n[1,2]\n')
  T.write_file(dir .. "/bad.csv", 'a,b\n1,2\n3\n')
  T.write_file(dir .. "/quote.csv", 'a,b\n1,"open\n')
  local function err(file, fmt)
    return T.raises(function() load(fmt or "json", with(c, { data_files = dir .. "/" .. file })) end)
  end
  local e = err("bad.jsonl")
  T.contains(e, "bad.jsonl: invalid JSON at line 2")
  T.contains(err("bad.json"), "bad.json: invalid JSON at line 2, column 7")
  e = err("types.jsonl")
  T.contains(e, "types.jsonl: row 2: column 'x': expected int64, got string")
  T.contains(err("notobj.jsonl"), "notobj.jsonl: row 2: expected a JSON object")
  T.contains(err("bad.csv", "csv"), "bad.csv: row 2 (line 3): expected 2 fields, got 1")
  T.contains(err("quote.csv", "csv"), "quote.csv: row 1 (line 2): unterminated quoted field")
  T.raises(function() load("json", with(c, { data_files = dir .. "/missing.jsonl" })) end, "no file matches")
  T.raises(function() load("json", c) end, "needs data_files=")
  T.raises(function() load("json", with(c, { data_files = dir .. "/bad.jsonl", streaming = true })) end,
    "not supported yet: load_dataset streaming=true")
end)

T.run()
