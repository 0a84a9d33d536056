-- Parquet files from apache/parquet-testing (../shared/data/parquet): each one reads with the right
-- values or fails with "not supported yet: <feature> ... column '<name>'"; every file in bad_data/
-- gives a clear error naming the file, never a crash. Values are checked against the statistics in
-- the *.md files, hand-checked values, and (when committed) pyarrow dumps in tests/fixtures/parquet/.
local T = require "testlib"
local core = require "datasets.core"
local datasets = require "datasets"

local shared = os.getenv("SKYRUN_SHARED_DATA") .. "/parquet"
local fixtures = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/fixtures/parquet"

local function read(name) return core.read_parquet(shared .. "/" .. name) end

-- What each file gives: rows read, or the unsupported feature named in the error.
local EXPECT = {
  ["alltypes_dictionary.parquet"] = 2, ["alltypes_plain.parquet"] = 8, ["alltypes_plain.snappy.parquet"] = 2,
  ["binary.parquet"] = 12, ["byte_array_decimal.parquet"] = "not supported yet: DECIMAL values in column 'value'",
  ["byte_stream_split.zstd.parquet"] = 300, ["concatenated_gzip_members.parquet"] = 513,
  ["datapage_v2.snappy.parquet"] = 5, ["delta_binary_packed.parquet"] = 200, ["delta_byte_array.parquet"] = 1000,
  ["delta_encoding_optional_column.parquet"] = 100, ["delta_encoding_required_column.parquet"] = 100,
  ["delta_length_byte_array.parquet"] = 1000, ["dict-page-offset-zero.parquet"] = 39,
  ["fixed_length_byte_array.parquet"] = 1000, ["int32_with_null_pages.parquet"] = 1000,
  ["int96_from_spark.parquet"] = 6, ["large_string_map.brotli.parquet"] = "not supported yet: map columns (column 'arr'",
  ["list_columns.parquet"] = 3, ["lz4_raw_compressed.parquet"] = "not supported yet: LZ4_RAW compression in column 'c0'",
  ["nation.dict-malformed.parquet"] = "column 'name' (row group 1)",
  ["nested_lists.snappy.parquet"] = "not supported yet: nested lists, maps or structs inside lists in column 'a'",
  ["nonnullable.impala.parquet"] = "not supported yet: nested lists, maps or structs inside lists in column 'int_array_array'",
  ["null_list.parquet"] = 1,
  ["nullable.impala.parquet"] = "not supported yet: nested lists, maps or structs inside lists in column 'int_array_Array'",
  ["nulls.snappy.parquet"] = "not supported yet: struct columns (column 'b_struct'",
  ["old_list_structure.parquet"] = "not supported yet: lists of structs in column 'a'",
  ["plain-dict-uncompressed-checksum.parquet"] = 1000,
  ["repeated_no_annotation.parquet"] = "not supported yet: struct columns (column 'phoneNumbers'",
  ["rle-dict-snappy-checksum.parquet"] = 1000, ["rle_boolean_encoding.parquet"] = 68, ["single_nan.parquet"] = 1,
}

local function list_parquet(dir)
  local out = {}
  for _, p in ipairs(core.glob(dir .. "/*.parquet")) do out[#out + 1] = p:match("[^/]+$") end
  return out
end

T.test("every parquet-testing file reads or names the unsupported feature and column", function()
  local files = list_parquet(shared)
  T.ok(#files >= 30, "the parquet-testing files are there")
  for _, name in ipairs(files) do
    local want = EXPECT[name]
    T.ok(want ~= nil, "an expectation for " .. name)
    local ok, res = pcall(read, name)
    if type(want) == "number" then
      T.ok(ok, name .. ": " .. tostring(res))
      T.eq(#res, want, name)
    else
      T.ok(not ok, name .. " should fail")
      T.contains(res, want, name)
      T.contains(res, name, name .. " names the file")
    end
  end
end)

T.test("every bad_data file gives a clear error naming the file", function()
  local names = list_parquet(shared .. "/bad_data")
  T.ok(#names >= 8)
  for _, name in ipairs(names) do
    local ok, res = pcall(core.read_parquet, shared .. "/bad_data/" .. name)
    if name == "ARROW-GH-43605.parquet" then
      -- a 0-bit-wide dictionary index run is valid (every index 0): it reads, as arrow now does
      T.ok(ok, tostring(res))
    else
      T.ok(not ok, name .. " should fail")
      T.contains(res, name)
    end
  end
  T.contains(select(2, pcall(core.read_parquet, shared .. "/bad_data/ARROW-GH-45185.parquet")),
    "repetition levels start inside a list")
  T.contains(select(2, pcall(core.read_parquet, shared .. "/bad_data/ARROW-RS-GH-6229-DICTHEADER.parquet")),
    "dictionary page with a negative number of values")
  T.contains(select(2, pcall(core.read_parquet, shared .. "/bad_data/PARQUET-1481.parquet")), "corrupt")
end)

T.test("hand-checked values: page v2, plain, int96, lists, nulls, byte_stream_split", function()
  local v2 = read("datapage_v2.snappy.parquet")
  T.eq(v2:_batch(0, 5), { a = { "abc", "abc", "abc", nil, "abc" }, b = { 1, 2, 3, 4, 5 }, c = { 2, 3, 4, 5, 2 },
    d = { true, true, true, false, true }, e = { { 1, 2, 3 }, nil, nil, { 1, 2, 3 }, { 1, 2 } } })
  local plain = read("alltypes_plain.parquet")
  T.eq(plain.id, { 4, 5, 6, 7, 2, 3, 0, 1 })
  T.eq(plain.bool_col, { true, false, true, false, true, false, true, false })
  T.eq(plain[2].float_col, 1.100000023841858)
  T.eq(plain[2].double_col, 10.1)
  T.eq(plain[1].date_string_col, "03/01/09")
  T.eq(plain[1].timestamp_col, 1235865600000000000)
  T.eq(read("alltypes_plain.snappy.parquet").id, { 6, 7 })
  T.eq(read("alltypes_dictionary.parquet").id, { 0, 1 })
  -- int96 Spark timestamps become int64 nanoseconds (values from int96_from_spark.md, in µs)
  local ts = read("int96_from_spark.parquet").a
  T.eq(ts[1], 1704141296123456 * 1000)
  T.eq(ts[2], 1704070800000000 * 1000)
  T.eq(ts[4], 1735599600000000 * 1000)
  T.eq(ts[5], nil)
  local lists = read("list_columns.parquet")
  T.eq(lists._types, { int64_list = "list<int64>", utf8_list = "list<string>" })
  T.eq(lists[1], { int64_list = { 1, 2, 3 }, utf8_list = { "abc", "efg", "hij" } })
  T.eq(lists[2].int64_list, { nil, 1 })
  T.eq(read("null_list.parquet")[1], { emptylist = {} })
  T.eq(read("single_nan.parquet")[1], {})
  local bss = read("byte_stream_split.zstd.parquet")
  T.near(bss[1].f32, 1.7640524, 1e-6)
  T.near(bss[1].f64, -1.3065268517353166, 1e-15)
  T.eq(read("delta_length_byte_array.parquet")[1].FRUIT, "apple_banana_mango0")
  T.eq(read("concatenated_gzip_members.parquet").long_col[513], 513)
end)

-- "name: TYPE ... ST:[min: a, max: b, num_nulls: n]" lines of the parquet-cli dumps in the .md files
local function md_stats(md)
  local out = {}
  for line in T.read_file(shared .. "/" .. md):gmatch("[^\n]+") do
    local name, min, max, nulls = line:match("^([%w_]+):[%s:]+%u+ .-ST:%[min: (.-), max: (.-), num_nulls: (%d+)%]")
    if name then out[#out + 1] = { name = name, min = min, max = max, nulls = tonumber(nulls) } end
    local n2 = line:match("^([%w_]+):[%s:]+%u+ .-ST:%[num_nulls: (%d+), min/max not defined%]")
    if n2 then out[#out + 1] = { name = n2, nulls = tonumber(line:match("num_nulls: (%d+)")) } end
  end
  return out
end

local function check_stats(file, md)
  local ds = read(file)
  local stats = md_stats(md)
  T.ok(#stats > 5, md .. " has statistics")
  for _, st in ipairs(stats) do
    local col = st.name
    if not ds[1] or ds._types[col] == nil then col = col .. ":" end  -- a file whose names end in ':'
    local values = ds:_column(col)
    local n, lo, hi = 0, nil, nil
    for i = 1, #ds do
      local v = values[i]
      if v == nil then n = n + 1
      else
        if lo == nil or v < lo then lo = v end
        if hi == nil or v > hi then hi = v end
      end
    end
    T.eq(n, st.nulls, file .. " " .. col .. " nulls")
    if st.min then
      T.eq(tostring(lo), tostring(type(lo) == "number" and tonumber(st.min) or st.min), file .. " " .. col .. " min")
      T.eq(tostring(hi), tostring(type(hi) == "number" and tonumber(st.max) or st.max), file .. " " .. col .. " max")
    end
  end
end

T.test("delta-encoded columns match the statistics parquet-mr wrote", function()
  check_stats("delta_byte_array.parquet", "delta_byte_array.md")
  check_stats("delta_encoding_optional_column.parquet", "delta_encoding_optional_column.md")
  check_stats("delta_encoding_required_column.parquet", "delta_encoding_required_column.md")
end)

T.test("int32 pages of nulls keep the null count and range of int32_with_null_pages.md", function()
  local v = read("int32_with_null_pages.parquet").int32_field
  local n, lo, hi = 0, math.huge, -math.huge
  for i = 1, 1000 do
    if v[i] == nil then n = n + 1 else lo, hi = math.min(lo, v[i]), math.max(hi, v[i]) end
  end
  T.eq(n, 275)
  T.eq(lo, -2136906554)
  T.eq(hi, 2145722375)
end)

T.test("the parquet writer round-trips every column type through the reader", function()
  local dir = T.tmpdir()
  local ds = datasets.Dataset.from_list {
    { i = 1, f = 0.5, b = true, s = "x", li = { 1, 2 }, ls = { "p" } },
    { i = -7, b = false, s = "", li = {}, ls = { "q", "rr" } },
    { f = 2.25, s = "zzz" },
  }
  for _, comp in ipairs { "snappy", "zstd", "gzip", "none" } do
    local path = dir .. "/t-" .. comp .. ".parquet"
    ds:to_parquet(path, { compression = comp, row_group_size = 2 })
    local back = core.read_parquet(path)
    T.eq(back:to_list(), ds:to_list(), comp)
  end
  T.raises(function() ds:to_parquet(dir .. "/x.parquet", { compression = "lzo" }) end, "not supported yet")
  local loaded = datasets.load_dataset("parquet", { data_files = dir .. "/t-snappy.parquet", split = "train",
    cache_dir = dir .. "/cache" })
  T.eq(loaded:to_list(), ds:to_list())
end)

T.test("many row groups (decoded two at a time) read back in order, in memory and into a table folder", function()
  local dir = T.tmpdir()
  local rows = {}
  for i = 1, 300 do
    local r = { i = i, s = string.rep(string.char(97 + i % 26), i % 13) }
    if i % 5 ~= 0 then r.f = i / 4 end
    if i % 7 ~= 0 then r.li = {} for k = 1, i % 4 do r.li[k] = i * 10 + k end end
    if i % 11 ~= 0 then r.ls = { tostring(i), "x" } end
    rows[i] = r
  end
  local ds = datasets.Dataset.from_list(rows)
  local want = ds:to_list()
  for _, comp in ipairs { "snappy", "none" } do
    local path = dir .. "/many-" .. comp .. ".parquet"
    ds:to_parquet(path, { compression = comp, row_group_size = 7 })
    T.eq(core.read_parquet(path):to_list(), want, comp .. " in memory")
    T.eq(core.read_parquet(path, dir .. "/table-" .. comp):to_list(), want, comp .. " table folder")
  end
end)

T.test("column chunks over 1 MB are written as several pages and read back", function()
  local dir = T.tmpdir()
  local rows = {}
  for i = 1, 5000 do
    local r = { i = i, s = string.rep(string.char(65 + i % 26), 200 + i % 300) }
    if i % 9 == 0 then r.s = nil end
    if i % 4 ~= 0 then r.li = { i, i + 1, i + 2 } end
    r.ls = { string.rep("q", 300), tostring(i) }
    rows[i] = r
  end
  local ds = datasets.Dataset.from_list(rows)
  local path = dir .. "/pages.parquet"
  ds:to_parquet(path, { compression = "zstd", row_group_size = 4000 })
  T.eq(core.read_parquet(path):to_list(), ds:to_list())
  T.eq(core.read_parquet(path, dir .. "/table"):to_list(), ds:to_list())
  -- a table file larger than the writer's 8 MB window and 1 MB staging buffer
  local big = {}
  for i = 1, 12 do big[i] = { s = string.rep(string.char(64 + i), 1000000 + i) } end
  ds = datasets.Dataset.from_list(big)
  ds:to_parquet(path, { compression = "snappy", row_group_size = 5 })
  local back = core.read_parquet(path, dir .. "/big")
  T.eq(#back, 12)
  for i = 1, 12 do T.ok(back[i].s == big[i].s, "row " .. i) end
end)

T.test("load_dataset('parquet', {columns=}) reads only those columns, in that order, and caches by them", function()
  local dir = T.tmpdir()
  local ds = datasets.Dataset.from_dict({ a = { 1, 2, 3 }, b = { "x", "y", "z" }, c = { 0.5, 1.5, 2.5 } },
    { column_order = { "a", "b", "c" } })
  ds:to_parquet(dir .. "/abc.parquet", { row_group_size = 2 })
  local function load(columns)
    return datasets.load_dataset("parquet", { data_files = dir .. "/abc.parquet", split = "train", columns = columns,
      cache_dir = dir .. "/cache" })
  end
  local got = load { "c", "a" }
  T.eq(got.column_names, { "c", "a" })
  T.eq(got:to_list(), { { c = 0.5, a = 1 }, { c = 1.5, a = 2 }, { c = 2.5, a = 3 } })
  T.ok(type(got._fingerprint) == "string", "a fingerprint")
  T.eq(load({ "c", "a" })._fingerprint, got._fingerprint, "the same columns: the same cached table")
  local b = load { "b" }
  T.eq(b.column_names, { "b" })
  T.ok(b._fingerprint ~= got._fingerprint, "other columns: another table")
  T.eq(load().column_names, { "a", "b", "c" })
  T.raises(function() load { "a", "nope" } end, "abc.parquet: no column 'nope' (its columns: a, b, c)")
end)

-- Inputs the fuzzer (src/data/fuzz_parquet.cpp) found crashing the reader, with the error each gives.
local FUZZ = {
  ["byte-array-lengths-past-page.parquet"] = "column 'name' (row group 1) of ",
  ["empty-uncompressed-page.parquet"] = "column 'smallint_col' (row group 1) of ",
}
T.test("files the fuzzer found give clear errors, in memory and into a table folder", function()
  local dir = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/data/fuzz"
  for name, want in pairs(FUZZ) do
    for _, out in ipairs { false, T.tmpdir() .. "/t" } do
      local ok, err = pcall(core.read_parquet, dir .. "/" .. name, out or nil)
      T.ok(not ok, name .. " should fail")
      T.contains(err, want .. dir .. "/" .. name, name)
    end
  end
end)

-- A small JSON decoder for the pyarrow dumps (numbers as Lua numbers).
local function json_decode(s)
  local pos = 1
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value
  local function str()
    local out, i = {}, pos + 1
    while true do
      local c = s:sub(i, i)
      if c == '"' then pos = i + 1 return table.concat(out) end
      if c == "\\" then
        local e = s:sub(i + 1, i + 1)
        if e == "u" then
          local cp = tonumber(s:sub(i + 2, i + 5), 16)
          i = i + 6
          if cp >= 0xD800 and cp < 0xDC00 then
            local lo = tonumber(s:sub(i + 2, i + 5), 16)
            cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
            i = i + 6
          end
          if cp < 0x80 then out[#out + 1] = string.char(cp)
          elseif cp < 0x800 then out[#out + 1] = string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64)
          elseif cp < 0x10000 then
            out[#out + 1] = string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
          else
            out[#out + 1] = string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
              0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
          end
        else
          out[#out + 1] = ({ n = "\n", t = "\t", r = "\r", b = "\b", f = "\f" })[e] or e
          i = i + 2
        end
      else
        out[#out + 1] = c
        i = i + 1
      end
    end
  end
  function value()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1
      ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1 return t end
      while true do
        ws()
        local k = str()
        ws()
        pos = pos + 1
        t[k] = value()
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return t end
      end
    elseif c == "[" then
      local t, n = {}, 0
      pos = pos + 1
      ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1 return t end
      while true do
        n = n + 1
        t[n] = value()
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return t end
      end
    elseif c == '"' then
      return str()
    elseif s:sub(pos, pos + 3) == "null" then pos = pos + 4 return nil
    elseif s:sub(pos, pos + 3) == "true" then pos = pos + 4 return true
    elseif s:sub(pos, pos + 4) == "false" then pos = pos + 5 return false
    else
      local num = s:match("^-?[%d%.eE+%-]+", pos)
      pos = pos + #num
      return tonumber(num)
    end
  end
  return value()
end

local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end

local function same(ours, ref)
  if type(ref) == "table" and ref.hex then return type(ours) == "string" and hex(ours) == ref.hex end
  if type(ref) == "table" and ref.float then
    if ref.float == "nan" then return ours ~= ours end
    return ours == (ref.float:find("-") and -math.huge or math.huge)
  end
  if type(ref) == "table" and (ref.time or ref.decimal or ref.repr) then return true end  -- shown differently
  if type(ref) == "number" and type(ours) == "number" then
    return ours == ref or math.abs(ours - ref) <= 1e-12 * math.max(1, math.abs(ref))
  end
  if type(ref) == "table" and type(ours) == "table" then
    local n = 0
    for k in pairs(ref) do n = math.max(n, k) end
    for k in pairs(ours) do n = math.max(n, k) end
    for k = 1, n do if not same(ours[k], ref[k]) then return false end end
    return true
  end
  return ours == ref
end

T.test("values match pyarrow's dumps in tests/fixtures/parquet", function()
  local dumps = core.glob(fixtures .. "/*.json")
  T.ok(#dumps > 20, "pyarrow dumps missing from tests/fixtures/parquet (tools/device/fixtures.sh parquet)")
  local compared = 0
  for _, path in ipairs(dumps) do
    local ref = json_decode(T.read_file(path))
    local name = ref.file
    local ok, ds = pcall(read, name)
    if ref.error == nil and ok then
      T.eq(#ds, ref.num_rows, name .. " rows")
      for _, col in ipairs(ref.columns) do
        local values = ds:_column(col.name)
        for i = 1, math.min(#ds, #col.values > 0 and 400 or 0) do
          if col.values[i] ~= nil or values[i] ~= nil then
            if not same(values[i], col.values[i]) then
              error(string.format("%s column %s row %d: ours %s, pyarrow %s", name, col.name, i,
                require("sky.inspect")(values[i]), require("sky.inspect")(col.values[i])))
            end
          end
        end
        compared = compared + 1
      end
    end
  end
  T.ok(compared > 20, "columns compared: " .. compared)
end)

T.run()
