-- The Dataset object: construction, indexing, selection, shuffle, columns, map/filter semantics,
-- train_test_split, concatenation and the table folder round trip.
local T = require "testlib"
local datasets = require "datasets"
local Dataset = datasets.Dataset

local function small()
  return Dataset.from_dict({ text = { "a", "bb", "ccc", "dddd", "eeeee" }, label = { 0, 1, 0, 1, 1 } },
    { column_order = { "text", "label" } })
end

T.test("a dataset has a length, 1-based rows and column names", function()
  local ds = small()
  T.eq(#ds, 5)
  T.eq(ds.num_rows, 5)
  T.eq(ds.column_names, { "text", "label" })
  T.eq(ds[1], { text = "a", label = 0 })
  T.eq(ds[5], { text = "eeeee", label = 1 })
  T.eq(ds.text, { "a", "bb", "ccc", "dddd", "eeeee" })
  T.raises(function() return ds[6] end, "out of range")
  T.raises(function() return ds[0] end, "out of range")
  T.contains(tostring(ds), "num_rows: 5")
  T.eq(ds.features, { text = "string", label = "int64" })
  T.eq(ds.shape, { 5, 2 })
  T.eq(ds.num_columns, 2)
end)

T.test("typed columns keep ints, floats, bools, strings, lists and nulls", function()
  local ds = Dataset.from_list {
    { i = 1, f = 1.5, b = true, s = "x", li = { 1, 2 }, ls = { "p", "q" } },
    { i = 2, f = 2, b = false, s = "y", li = {}, ls = { "r" } },
    { i = 3, b = true, li = { 3 } },
  }
  T.eq(ds._types, { i = "int64", f = "float64", b = "bool", s = "string", li = "list<int64>", ls = "list<string>" })
  T.eq(ds[2], { i = 2, f = 2.0, b = false, s = "y", li = {}, ls = { "r" } })
  T.eq(ds[3], { i = 3, b = true, li = { 3 } })
  T.eq(ds.f, { 1.5, 2.0 })  -- the null is a hole
  T.raises(function() Dataset.from_list { { a = 1 }, { a = "x" } } end, "column 'a': expected int64, got string")
  T.raises(function() Dataset.from_list { { a = { k = 1 } } } end, "not supported yet: tables with keys")
end)

T.test("select takes a 1-based inclusive range or a list of indices", function()
  local ds = small()
  T.eq(ds:select(2, 3).text, { "bb", "ccc" })
  T.eq(ds:select { 5, 1, 5 }.text, { "eeeee", "a", "eeeee" })
  T.eq(#ds:select(1, 0), 0)
  T.raises(function() ds:select(1, 6) end, "out of range")
  T.raises(function() ds:select { 7 } end, "out of range")
  -- a selection of a selection composes
  T.eq(ds:select(2, 5):select { 4, 1 }.text, { "eeeee", "bb" })
end)

T.test("shuffle with a seed is a reproducible permutation", function()
  local ds = small()
  local a, b = ds:shuffle { seed = 42 }, ds:shuffle { seed = 42 }
  T.eq(a.text, b.text)
  local sorted = a.text
  table.sort(sorted)
  T.eq(sorted, ds.text)
  T.ok(T.deep_eq(ds:shuffle { seed = 1 }.text, ds:shuffle { seed = 1 }.text))
end)

T.test("columns are renamed, removed, added and selected", function()
  local ds = small()
  T.eq(ds:rename_column("label", "labels").column_names, { "text", "labels" })
  T.eq(ds:remove_columns("text").column_names, { "label" })
  T.eq(ds:remove_columns { "text", "label" }.column_names, {})
  local added = ds:select(2, 3):add_column("n", { 10, 20 })
  T.eq(added[2], { text = "ccc", label = 0, n = 20 })
  T.raises(function() ds:rename_column("nope", "x") end, "no column named 'nope'")
  T.raises(function() ds:add_column("n", { 1 }) end, "1 values for a dataset of 5 rows")
  T.eq(ds:select_columns { "label" }[1], { label = 0 })
end)

T.test("map per row merges the returned columns over the row", function()
  local ds = small()
  local m = ds:map(function(r) return { text = r.text:upper(), n = #r.text } end)
  T.eq(m.column_names, { "text", "label", "n" })
  T.eq(m[3], { text = "CCC", label = 0, n = 3 })
  local idx = ds:map(function(r, i) return { i = i } end, { with_indices = true })
  T.eq(idx.i, { 0, 1, 2, 3, 4 })
end)

T.test("batched map gets column arrays and may change the row count when inputs are removed", function()
  local ds = small()
  local sizes = {}
  local m = ds:map(function(b)
    sizes[#sizes + 1] = #b.text
    local n = {}
    for i, t in ipairs(b.text) do n[i] = #t end
    return { n = n }
  end, { batched = true, batch_size = 2 })
  T.eq(sizes, { 2, 2, 1 })
  T.eq(m.n, { 1, 2, 3, 4, 5 })
  local doubled = ds:map(function(b)
    local out = {}
    for _, t in ipairs(b.text) do out[#out + 1] = t; out[#out + 1] = t end
    return { text = out }
  end, { batched = true, remove_columns = { "text", "label" } })
  T.eq(#doubled, 10)
  T.raises(function()
    ds:map(function(b) return { x = { 1 } } end, { batched = true })
  end, "remove the input columns")
  T.raises(function() ds:map(function(b) return { x = 1 } end, { batched = true }) end, "must return lists")
  T.raises(function() ds:map(function() end, { batchsize = 2 }) end, "did you mean 'batch_size'")
end)

T.test("map with num_proc runs shards in worker states and keeps the row order", function()
  local t = {}
  for i = 1, 5000 do t[i] = string.rep("x", i % 37) end
  local ds = Dataset.from_dict { text = t }:shuffle { seed = 3 }
  local scale = 10
  local function lens(b)
    local out = {}
    for i, s in ipairs(b.text) do out[i] = #s * scale end
    return { n = out }
  end
  local one = ds:map(lens, { batched = true, batch_size = 100 })
  local three = ds:map(lens, { batched = true, batch_size = 100, num_proc = 3 })
  T.eq(three.n, one.n)
  T.eq(three.text, one.text)
  local rows = ds:select(1, 10):map(function(r) return { up = r.text:upper() } end, { num_proc = 2 })
  T.eq(rows.up[10], ds[10].text:upper())
  T.raises(function() ds:map(function(b) error("boom in shard") end, { batched = true, num_proc = 2 }) end,
    "map worker 0 of 2 failed: ")
  local f = io.stdout
  T.raises(function() ds:map(function(b) return { x = f } end, { batched = true, num_proc = 2 }) end,
    "map with num_proc: cannot send")
end)

T.test("filter keeps the rows where the function is true, batched or not", function()
  local ds = small()
  T.eq(ds:filter(function(r) return r.label == 1 end).text, { "bb", "dddd", "eeeee" })
  local f = ds:filter(function(b)
    local keep = {}
    for i, t in ipairs(b.text) do keep[i] = #t > 2 end
    return keep
  end, { batched = true, batch_size = 2 })
  T.eq(f.text, { "ccc", "dddd", "eeeee" })
  T.eq(#ds:filter(function() return false end), 0)
end)

T.test("train_test_split splits a shuffled permutation like HF", function()
  local ds = Dataset.from_dict { x = (function() local t = {} for i = 1, 100 do t[i] = i end return t end)() }
  local dd = ds:train_test_split { test_size = 0.1, seed = 42 }
  T.eq(#dd.train, 90)
  T.eq(#dd.test, 10)
  local seen = {}
  for _, v in ipairs(dd.train.x) do seen[v] = true end
  for _, v in ipairs(dd.test.x) do T.ok(not seen[v], "a row in both splits") seen[v] = true end
  local n = 0
  for _ in pairs(seen) do n = n + 1 end
  T.eq(n, 100)
  T.eq(dd:num_rows(), { train = 90, test = 10 })
  T.eq(#ds:train_test_split { test_size = 25 }.test, 25)
  T.eq(ds:train_test_split { test_size = 0.1, seed = 42 }.test.x, dd.test.x)
  T.eq(#ds:train_test_split(0.2).test, 20)
  T.eq(ds:shuffle(7).x, ds:shuffle { seed = 7 }.x)
end)

T.test("concatenate_datasets stacks rows with the same columns", function()
  local a, b = small(), small():select(1, 2)
  local c = datasets.concatenate_datasets { a, b }
  T.eq(#c, 7)
  T.eq(c[7], { text = "bb", label = 1 })
  T.raises(function() datasets.concatenate_datasets { a, a:remove_columns("label") } end, "different columns")
end)

T.test("a dataset saved to disk maps back with the same rows", function()
  local dir = T.tmpdir()
  local ds = Dataset.from_list { { s = "x", l = { 1, 2 } }, { l = { 3 } }, { s = "zz", l = {} } }
  ds:save_to_disk(dir .. "/saved")
  local back = datasets.load_from_disk(dir .. "/saved")
  T.eq(back:to_list(), ds:to_list())
  T.eq(back._types, { s = "string", l = "list<int64>" })
  -- a truncated buffer file is an error naming the file, not a crash
  T.exec("truncate -s 1 " .. T.shell_quote(dir .. "/saved/c1.o.bin"))
  T.raises(function() datasets.load_from_disk(dir .. "/saved") end, "c1.o.bin")
end)

T.test("to_json writes JSON lines that load back", function()
  local dir = T.tmpdir()
  local ds = small()
  ds:to_json(dir .. "/out.jsonl")
  T.eq(T.read_file(dir .. "/out.jsonl"):match("^[^\n]+"), '{"text":"a","label":0}')
  local back = datasets.load_dataset("json", { data_files = dir .. "/out.jsonl", split = "train", cache_dir = dir .. "/c" })
  T.eq(back:to_list(), ds:to_list())
end)

T.test("with_format('torch') gives tensors (int64 ids, float32 floats) and keeps strings", function()
  local ds = Dataset.from_list { { ids = { 1, 2, 3 }, label = 1, score = 0.5, text = "a" },
    { ids = { 4, 5, 6 }, label = 0, score = 1.5, text = "b" } }
  local t = ds:with_format("torch")
  T.eq(t:format(), "torch")
  T.eq(ds:format(), nil)
  local row, batch = t[1], t:get_batch(1, 2)
  T.ok(getmetatable(row) == datasets.format_tag)
  T.eq(row.text, "a")
  local ok, torch = pcall(require, "torch")
  if ok and type(torch) == "table" and torch.tensor then
    T.eq(row.ids.dtype, "int64")
    T.eq(row.ids:tolist(), { 1, 2, 3 })
    T.eq(row.score.dtype, "float32")
    T.eq(batch.ids:tolist(), { { 1, 2, 3 }, { 4, 5, 6 } })
    T.eq(batch.label:tolist(), { 1, 0 })
    T.eq(batch.text, { "a", "b" })
  else
    T.eq(row.ids, { 1, 2, 3 })  -- no torch in this build: tagged Lua arrays
  end
  local only = ds:with_format("torch", { columns = { "label" } })[2]
  T.eq(only.text, nil)
  T.raises(function() ds:with_format("arrow") end, "not supported yet: format 'arrow'")
end)

T.run()
