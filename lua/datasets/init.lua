-- datasets: HuggingFace `datasets` in Lua. Dataset objects are native handles over columnar tables
-- (memory-mapped table folders on disk, see src/data/table.hpp); the methods here follow HF's
-- semantics with Lua indexing (ds[1] is the first row, select(1, 10) the first ten rows).
-- map results are cached by fingerprint under $HF_DATASETS_CACHE (default $HF_HOME/datasets).

local core = require "datasets.core"
local sky_core = require "sky.core"
local progress = require "datasets.progress"

local check_options = sky_core.check_options

local M = {}

---@class Dataset
local Dataset = {}
M.Dataset = Dataset

---@class DatasetDict
local DatasetDict = {}
M.DatasetDict = DatasetDict

-- Formats live beside the handles (a handle is a userdata): weak keys, so they go with it.
local formats = setmetatable({}, { __mode = "k" })

-- ---- cache location and fingerprints -------------------------------------------------------------

local function home()
  return os.getenv("HOME") or "/tmp"
end

--- The datasets cache folder: $HF_DATASETS_CACHE, else $HF_HOME/datasets, else
--- $XDG_CACHE_HOME/huggingface/datasets, else ~/.cache/huggingface/datasets.
function M.cache_dir()
  local v = os.getenv("HF_DATASETS_CACHE")
  if v and v ~= "" then return v end
  local hf = os.getenv("HF_HOME")
  if hf and hf ~= "" then return hf .. "/datasets" end
  local xdg = os.getenv("XDG_CACHE_HOME")
  if xdg and xdg ~= "" then return xdg .. "/huggingface/datasets" end
  return home() .. "/.cache/huggingface/datasets"
end

-- Reverse map of the standard library's C functions, so `local fmt = string.format` hashes by name.
local builtin_names
local function builtin_name(f)
  if not builtin_names then
    builtin_names = {}
    for _, lib in ipairs { "string", "table", "math", "io", "os", "bit", "coroutine", "debug", "utf8" } do
      local t = rawget(_G, lib)
      if type(t) == "table" then
        for k, v in pairs(t) do
          if type(v) == "function" then builtin_names[v] = lib .. "." .. k end
        end
      end
    end
    for k, v in pairs(_G) do
      if type(v) == "function" then builtin_names[v] = k end
    end
  end
  return builtin_names[f]
end

local function loaded_module_name(t)
  for name, mod in pairs(package.loaded) do
    if mod == t then return name end
  end
end

-- Appends a stable description of v to out; false when v cannot be described (then no caching).
local function describe(v, out, seen)
  local t = type(v)
  if t == "nil" or t == "boolean" then
    out[#out + 1] = t .. ":" .. tostring(v)
  elseif t == "number" then
    out[#out + 1] = string.format("n:%.17g", v)
  elseif t == "string" then
    out[#out + 1] = "s" .. #v .. ":" .. v
  elseif t == "table" then
    if seen[v] then
      out[#out + 1] = "ref:" .. seen[v]
      return true
    end
    local mod = loaded_module_name(v)
    if mod then
      out[#out + 1] = "module:" .. mod
      return true
    end
    seen.n = seen.n + 1
    seen[v] = seen.n
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      local ta, tb = type(a), type(b)
      if ta ~= tb then return ta < tb end
      if ta == "number" or ta == "string" then return a < b end
      return tostring(a) < tostring(b)
    end)
    out[#out + 1] = "{"
    for _, k in ipairs(keys) do
      if not describe(k, out, seen) or not describe(v[k], out, seen) then return false end
    end
    out[#out + 1] = "}"
    local mt = getmetatable(v)
    if mt ~= nil and not describe(mt, out, seen) then return false end
  elseif t == "function" then
    if seen[v] then
      out[#out + 1] = "ref:" .. seen[v]
      return true
    end
    seen.n = seen.n + 1
    seen[v] = seen.n
    local ok, code = pcall(string.dump, v, true)
    if not ok then
      local name = builtin_name(v)
      if not name then return false end
      out[#out + 1] = "builtin:" .. name
      return true
    end
    out[#out + 1] = "f" .. #code .. ":" .. code
    local i = 1
    while true do
      local name, val = debug.getupvalue(v, i)
      if not name then break end
      out[#out + 1] = "up:" .. name
      if not describe(val, out, seen) then return false end
      i = i + 1
    end
  elseif t == "userdata" then
    if core.is_dataset(v) then
      local fp = v._fingerprint
      if not fp then return false end
      out[#out + 1] = "dataset:" .. fp
      return true
    end
    local mt = getmetatable(v)
    local f = type(mt) == "table" and rawget(mt, "__fingerprint")
    if type(f) ~= "function" then
      f = nil
      local ok, m = pcall(function() return v.fingerprint end)
      if ok and type(m) == "function" then f = m end
    end
    if not f then
      -- a userdata that can travel to a worker (a codec or reducer registered with sky.wire, e.g.
      -- a tokenizer sent as its files) is described by what it sends
      local okw, wire = pcall(require, "sky.wire")
      if not okw then return false end
      local oke, bytes = pcall(wire.encode, v)
      if not oke or type(bytes) ~= "string" then return false end
      out[#out + 1] = "wire" .. #bytes .. ":" .. bytes
      return true
    end
    local ok, fp = pcall(f, v)
    if not ok or type(fp) ~= "string" then return false end
    out[#out + 1] = "userdata:" .. fp
  else
    return false
  end
  return true
end

--- A hash of the values given (functions by their bytecode and upvalues); nil when one of them
--- cannot be described (a C function not from the standard library, a userdata without a
--- fingerprint): such transforms are recomputed every time, as HF does with unhashable ones.
function M.fingerprint(...)
  local out, seen = {}, { n = 0 }
  for i = 1, select("#", ...) do
    if not describe((select(i, ...)), out, seen) then return nil end
  end
  return core.hash(table.concat(out, "\0"))
end

local function derived_fingerprint(ds, ...)
  local fp = ds._fingerprint
  if not fp then return nil end
  return M.fingerprint(fp, ...)
end

local function with_fp(ds, fp, cache_dir)
  return ds:_set_fingerprint(fp, cache_dir)
end

-- ---- indexing -------------------------------------------------------------------------------------------

local function apply_format(ds, value, is_batch)
  local f = formats[ds]
  if not f then return value end
  return M._format_value(f, value, is_batch, ds._types)
end

core.set_index_handler(function(self, key)
  local m = Dataset[key]
  if m ~= nil then return m end
  local kt = type(key)
  if kt == "number" then
    local n = #self
    if key ~= math.floor(key) or key < 1 or key > n then
      error(string.format("index %s out of range for a dataset of %d rows", tostring(key), n), 2)
    end
    return apply_format(self, self:_row(key - 1), false)
  elseif key == "features" then  -- { column = "int64" | "string" | "list<int64>" ... }
    return self._types
  elseif key == "num_columns" then
    return #self.column_names
  elseif key == "shape" then
    return { #self, #self.column_names }
  elseif kt == "string" then
    for _, name in ipairs(self.column_names) do
      if name == key then return self:_column(key) end
    end
  end
  return nil
end)

local function copy_format(from, to)
  formats[to] = formats[from]
  return to
end

-- ---- construction ---------------------------------------------------------------------------------------------

--- Dataset.from_dict{ col = {values...}, ... } (columns sorted by name unless opts.column_order).
function Dataset.from_dict(columns, opts)
  if type(columns) ~= "table" then error("from_dict expects a table of columns", 2) end
  opts = check_options(opts, { column_order = "table" }, "from_dict")
  return core.from_columns(columns, opts.column_order)
end

--- Dataset.from_list{ {a = 1, b = "x"}, ... }
function Dataset.from_list(rows)
  if type(rows) ~= "table" then error("from_list expects a list of rows", 2) end
  local b = core.new_builder()
  for _, r in ipairs(rows) do b:append_row(r) end
  return b:finish()
end

-- ---- row access -----------------------------------------------------------------------------------------------

--- Rows [i, i + n) (1-based) as a batch: { col = {values...} } with the format applied.
function Dataset:get_batch(i, n)
  local total = #self
  n = math.min(n, total - i + 1)
  return apply_format(self, self:_batch(i - 1, n), true)
end

--- for batch in ds:iter{ batch_size = 32 } do ... end
function Dataset:iter(opts)
  opts = check_options(opts, { batch_size = "integer", drop_last_batch = "boolean" }, "iter")
  local bs = opts.batch_size or 1
  local n, i = #self, 1
  return function()
    if i > n or (opts.drop_last_batch and i + bs - 1 > n) then return nil end
    local b = self:get_batch(i, bs)
    i = i + bs
    return b
  end
end

--- { col = {every value} }
function Dataset:to_dict()
  return self:_batch(0, #self)
end

function Dataset:to_list()
  local rows = {}
  for i = 1, #self do rows[i] = self:_row(i - 1) end
  return rows
end

-- ---- selection ---------------------------------------------------------------------------------------------------

--- ds:select(i, j) rows i..j (1-based, inclusive) or ds:select{ indices } (1-based).
function Dataset:select(i, j)
  local n = #self
  if type(i) == "table" then
    local fp = derived_fingerprint(self, "select", i)
    return copy_format(self, with_fp(self:_take(i), fp))
  end
  if type(i) ~= "number" then error("select expects (first, last) or a list of indices", 2) end
  j = j or n
  if i < 1 or j > n or i ~= math.floor(i) or j ~= math.floor(j) then
    error(string.format("select(%s, %s) out of range for a dataset of %d rows", tostring(i), tostring(j), n), 2)
  end
  if j < i then j = i - 1 end
  local fp = derived_fingerprint(self, "select_range", i, j)
  return copy_format(self, with_fp(self:_range(i - 1, j - i + 1), fp))
end

--- ds:shuffle{ seed = 42 } (a permutation; no seed: a random one)
function Dataset:shuffle(opts)
  if type(opts) == "number" then opts = { seed = opts } end  -- shuffle(42), as HF's positional seed
  opts = check_options(opts, { seed = "integer", generator = "any", keep_in_memory = "boolean",
    load_from_cache_file = "boolean" }, "shuffle")
  local seed = opts.seed
  local fp
  if seed then
    fp = derived_fingerprint(self, "shuffle", seed)
  else
    seed = math.floor((sky_core.monotonic() * 1e6) % 2 ^ 31)
  end
  return copy_format(self, with_fp(self:_shuffle(seed), fp))
end

--- ds:train_test_split{ test_size = 0.1, seed = 42 } -> DatasetDict{ train, test }
function Dataset:train_test_split(opts)
  if type(opts) == "number" then opts = { test_size = opts } end  -- train_test_split(0.1)
  opts = check_options(opts, { test_size = "number", train_size = "number", seed = "integer", shuffle = "boolean",
    stratify_by_column = "string" }, "train_test_split")
  if opts.stratify_by_column then error("not supported yet: train_test_split stratify_by_column", 2) end
  local n = #self
  local function count(v, what)
    if v == nil then return nil end
    if v < 0 then error(what .. " must not be negative", 3) end
    if v < 1 or (v == 1 and math.floor(v) ~= v) then return v end
    if v ~= math.floor(v) then error(what .. " must be a fraction below 1 or a whole number of rows", 3) end
    return v
  end
  local ts, tr = count(opts.test_size, "test_size"), count(opts.train_size, "train_size")
  local n_test, n_train
  if ts and ts < 1 then n_test = math.ceil(ts * n) elseif ts then n_test = ts end
  if tr and tr < 1 then n_train = math.floor(tr * n) elseif tr then n_train = tr end
  if not n_test and not n_train then n_test = math.ceil(0.25 * n) end
  n_test = n_test or (n - n_train)
  n_train = n_train or (n - n_test)
  if n_test + n_train > n or n_test < 1 and n > 0 and ts and ts > 0 then
    error(string.format("train_test_split: test %d + train %d rows do not fit in %d", n_test, n_train, n), 2)
  end
  if n_train == 0 and n > 0 then
    error(string.format("train_test_split: with %d rows and test_size=%s the train split would be empty", n,
      tostring(opts.test_size)), 2)
  end
  local src = self
  local seed = opts.seed
  if opts.shuffle ~= false then
    src = self:shuffle { seed = seed }
  end
  local test = src:select(1, n_test)
  local train = n_train > 0 and src:select(n_test + 1, n_test + n_train) or src:select(1, 0)
  return M.DatasetDict.new { train = train, test = test }
end

-- ---- columns ----------------------------------------------------------------------------------------------------

local function name_list(v, what)
  if type(v) == "string" then return { v } end
  if type(v) ~= "table" then error(what .. " expects a column name or a list of names", 3) end
  return v
end

local function check_columns(ds, names, what)
  local have = {}
  for _, n in ipairs(ds.column_names) do have[n] = true end
  for _, n in ipairs(names) do
    if not have[n] then
      error(string.format("%s: no column named '%s' (columns: %s)", what, tostring(n),
        table.concat(ds.column_names, ", ")), 3)
    end
  end
end

function Dataset:rename_column(old, new)
  check_columns(self, { old }, "rename_column")
  local names, renamed = self.column_names, {}
  for i, n in ipairs(names) do
    if n == new and n ~= old then error("rename_column: column '" .. new .. "' already exists", 2) end
    renamed[i] = n == old and new or n
  end
  return copy_format(self, with_fp(self:_columns(names, renamed), derived_fingerprint(self, "rename", old, new)))
end

function Dataset:rename_columns(mapping)
  local ds = self
  local keys = {}
  for k in pairs(mapping) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do ds = ds:rename_column(k, mapping[k]) end
  return ds
end

function Dataset:remove_columns(names)
  names = name_list(names, "remove_columns")
  check_columns(self, names, "remove_columns")
  local drop, keep = {}, {}
  for _, n in ipairs(names) do drop[n] = true end
  for _, n in ipairs(self.column_names) do
    if not drop[n] then keep[#keep + 1] = n end
  end
  return copy_format(self, with_fp(self:_columns(keep), derived_fingerprint(self, "remove", names)))
end

function Dataset:select_columns(names)
  names = name_list(names, "select_columns")
  check_columns(self, names, "select_columns")
  return copy_format(self, with_fp(self:_columns(names), derived_fingerprint(self, "select_columns", names)))
end

function Dataset:add_column(name, values)
  if type(name) ~= "string" then error("add_column expects a column name", 2) end
  if type(values) ~= "table" then error("add_column expects a list of values", 2) end
  return copy_format(self, with_fp(self:_add_column(name, values), derived_fingerprint(self, "add_column", name, values)))
end

-- ---- map and filter -----------------------------------------------------------------------------------------------

local MAP_OPTS = { batched = "boolean", batch_size = "integer", remove_columns = "string|table",
  num_proc = "integer", with_indices = "boolean", input_columns = "string|table", load_from_cache_file = "boolean",
  desc = "string", fn_kwargs = "table", keep_in_memory = "boolean", writer_batch_size = "integer",
  new_fingerprint = "string", cache_file_name = "string" }

local FLUSH_ROWS, FLUSH_BYTES = 100000, 64 * 1024 * 1024

local function call_fn(fn, arg, opts, idx)
  if opts.input_columns then
    local args = {}
    for i, c in ipairs(opts.input_columns) do args[i] = arg[c] end
    if opts.with_indices then args[#args + 1] = idx end
    return fn(unpack(args, 1, #opts.input_columns + (opts.with_indices and 1 or 0)))
  end
  if opts.with_indices then return fn(arg, idx) end
  return fn(arg)
end

local function index_list(start, n)  -- 0-based indices of a batch, as HF passes them
  local t = {}
  for k = 1, n do t[k] = start + k - 1 end
  return t
end

-- Runs fn over rows [first, first + count) of ds into builder `b`; `flush(upto)` is called with the
-- first row not yet written whenever the builder grows large. `bar` counts rows.
local function map_rows(ds, fn, opts, first, count, b, flush, bar)
  local batched, bs = opts.batched, opts.batch_size
  local cols = opts.input_columns
  local last = first + count
  local start = first
  while start < last do
    local m = batched and math.min(bs, last - start) or math.min(1000, last - start)
    if batched then
      local batch = ds:_batch(start, m, cols)
      local out = call_fn(fn, batch, opts, opts.with_indices and index_list(start, m))
      if out == nil then out = {} end
      if type(out) ~= "table" then
        error(string.format("the map function must return a table of columns or nil (got %s)", type(out)), 0)
      end
      b:append_batch(out)
    else
      for i = start, start + m - 1 do
        local row = cols and ds:_batch(i, 1, cols) or ds:_row(i)
        if cols then for k, v in pairs(row) do row[k] = v[1] end end
        local out = call_fn(fn, row, opts, i)
        if out == nil then out = {} end
        if type(out) ~= "table" then
          error(string.format("the map function must return a table or nil (got %s)", type(out)), 0)
        end
        b:append_row(out)
      end
    end
    start = start + m
    if bar then bar:update(m) end
    if b.rows >= FLUSH_ROWS or b.bytes >= FLUSH_BYTES then flush(start) end
  end
end

-- Beside the input's own cache files (load_dataset's cache_dir), as HF keeps cache-<fp>.arrow.
local function map_cache_path(ds, fp)
  return (ds._cache_dir or M.cache_dir()) .. "/skyrun-cache/cache-" .. fp
end

M._calls = { map_computed = 0, map_cached = 0 }

-- One shard of a num_proc map, run in a worker thread's own state (src/data/parallel_map.cpp):
-- the rows of ds through fn, merged over ds's columns, in memory.
function M._map_shard(ds, fn, o, remove)
  local chunks, pending = {}, 0
  local b = core.new_builder()
  local function flush(upto)
    local out = b:finish()
    chunks[#chunks + 1] = ds:_range(pending, upto - pending):_merge(out, remove)
    ds:_release_pages()  -- kept columns stay readable: pages come back from the file on demand
    pending = upto
  end
  map_rows(ds, fn, o, 0, #ds, b, flush, nil)
  flush(#ds)
  return #chunks == 1 and chunks[1] or core.concat(chunks)
end

--- ds:map(fn, { batched=, batch_size=1000, remove_columns=, num_proc=, with_indices=, input_columns= })
--- fn gets a row table (or, batched, a table of column arrays) and returns the new or changed
--- columns. Results are cached by fingerprint when the input has one and fn can be fingerprinted.
function Dataset:map(fn, opts)
  if type(fn) ~= "function" then
    if fn == nil then fn = function() return {} end else error("map expects a function", 2) end
  end
  opts = check_options(opts, MAP_OPTS, "map")
  if opts.fn_kwargs then error("not supported yet: map fn_kwargs (close over the values instead)", 2) end
  local o = {
    batched = opts.batched or false,
    batch_size = opts.batch_size,
    with_indices = opts.with_indices,
    input_columns = opts.input_columns and name_list(opts.input_columns, "input_columns"),
  }
  local n = #self
  -- HF's default is 1000; batch_size <= 0 (HF's None) means the whole dataset as one batch
  if o.batch_size == nil then o.batch_size = 1000 end
  if o.batch_size <= 0 then o.batch_size = math.max(n, 1) end
  local remove = opts.remove_columns and name_list(opts.remove_columns, "remove_columns") or {}
  check_columns(self, remove, "map remove_columns")
  if o.input_columns then check_columns(self, o.input_columns, "map input_columns") end

  local fp = opts.new_fingerprint
  if not fp and self._fingerprint then
    fp = M.fingerprint(self._fingerprint, "map", fn, o.batched, o.batch_size, remove, o.with_indices or false,
      o.input_columns or false)
  end
  local cache_path = opts.cache_file_name or (fp and map_cache_path(self, fp))
  if cache_path and opts.load_from_cache_file ~= false and opts.keep_in_memory ~= true
      and core.table_exists(cache_path) then
    M._calls.map_cached = M._calls.map_cached + 1
    return copy_format(self, with_fp(core.load_table(cache_path), fp, self._cache_dir))
  end
  M._calls.map_computed = M._calls.map_computed + 1

  local num_proc = opts.num_proc or 1
  if num_proc > 1 and n > 1 then
    local shards = core.parallel_map(self, fn, o, remove, num_proc)
    local out
    if cache_path and opts.keep_in_memory ~= true then
      local w = core.new_writer(cache_path)
      for _, shard in ipairs(shards) do w:append(shard) end
      w:finish(nil, true)  -- a cache entry: another process (a rank) may have made it first
      out = core.load_table(cache_path)
    else
      out = core.concat(shards)
      fp = nil
    end
    return copy_format(self, with_fp(out, fp, self._cache_dir))
  end

  local writer = cache_path and opts.keep_in_memory ~= true and core.new_writer(cache_path) or nil
  local chunks = {}
  local b = core.new_builder()
  local pending = 0
  local function flush(upto)
    local out = b:finish()
    local merged = self:_range(pending, upto - pending):_merge(out, remove)
    if writer then
      writer:append(merged)
      self:_release_pages()  -- what was read is on its way to disk: keep the scan's memory flat
    else
      chunks[#chunks + 1] = merged
    end
    pending = upto
  end
  local bar = progress.new(opts.desc or "Map", n)
  map_rows(self, fn, o, 0, n, b, flush, bar)
  flush(n)
  bar:close()
  local result
  if writer then
    writer:finish(nil, true)  -- a cache entry: another process (a rank) may have made it first
    result = core.load_table(cache_path)
  else
    result = #chunks == 1 and chunks[1] or core.concat(chunks)
  end
  return copy_format(self, with_fp(result, writer and fp or nil, self._cache_dir))
end

--- ds:filter(fn, { batched=, batch_size=, with_indices=, input_columns= }): rows where fn is true.
function Dataset:filter(fn, opts)
  if type(fn) ~= "function" then error("filter expects a function", 2) end
  opts = check_options(opts, { batched = "boolean", batch_size = "integer", with_indices = "boolean",
    input_columns = "string|table", num_proc = "integer", load_from_cache_file = "boolean", desc = "string",
    keep_in_memory = "boolean", fn_kwargs = "table" }, "filter")
  if opts.fn_kwargs then error("not supported yet: filter fn_kwargs (close over the values instead)", 2) end
  local o = { batched = opts.batched, with_indices = opts.with_indices,
    input_columns = opts.input_columns and name_list(opts.input_columns, "input_columns") }
  local n = #self
  local bs = opts.batch_size or 1000
  if bs <= 0 then bs = math.max(n, 1) end
  local keep = {}
  local bar = progress.new(opts.desc or "Filter", n)
  local start = 0
  while start < n do
    local m = math.min(bs, n - start)
    if o.batched then
      local mask = call_fn(fn, self:_batch(start, m, o.input_columns), o, o.with_indices and index_list(start, m))
      if type(mask) ~= "table" then
        error(string.format("a batched filter function must return a list of booleans (got %s)", type(mask)), 2)
      end
      for k = 1, m do
        if mask[k] then keep[#keep + 1] = start + k end
      end
    else
      for i = start, start + m - 1 do
        local row
        if o.input_columns then
          row = self:_batch(i, 1, o.input_columns)
          for k, v in pairs(row) do row[k] = v[1] end
        else
          row = self:_row(i)
        end
        if call_fn(fn, row, o, i) then keep[#keep + 1] = i + 1 end
      end
    end
    start = start + m
    bar:update(m)
  end
  bar:close()
  local fp = derived_fingerprint(self, "filter", fn, o.batched or false, bs, o.with_indices or false,
    o.input_columns or false)
  return copy_format(self, with_fp(self:_take(keep), fp))
end

-- ---- formats ---------------------------------------------------------------------------------------------------

--- with_format("torch"|"numpy"|nil, { columns= }): rows and batches come out as tensors (via the
--- `torch` module when present), otherwise as Lua arrays tagged { format = "torch" } in a metatable
--- the collators read.
function Dataset:with_format(kind, opts)
  opts = check_options(opts, { columns = "table", output_all_columns = "boolean" }, "with_format")
  local ds = self:_set_fingerprint(self._fingerprint)
  if kind == nil or kind == "python" or kind == "lua" then
    formats[ds] = nil
  elseif kind == "torch" or kind == "numpy" or kind == "pt" then
    formats[ds] = { type = kind == "pt" and "torch" or kind, columns = opts.columns,
      output_all_columns = opts.output_all_columns }
  else
    error("not supported yet: format '" .. tostring(kind) .. "'", 2)
  end
  return ds
end


function Dataset:format()
  local f = formats[self]
  return f and f.type or nil
end

M.format_tag = { __name = "datasets.formatted" }

-- Converts a row (or a batch) for format f: selected columns of numbers, bools or lists of them
-- become tensors (int64 for integer columns, float32 for floats, as HF's torch formatter does)
-- when the torch module is available, else stay Lua arrays; the result is tagged with M.format_tag.
local TORCH_DTYPE = { int64 = "int64", float64 = "float32", bool = "bool", ["list<int64>"] = "int64",
  ["list<float64>"] = "float32", ["list<bool>"] = "bool" }

function M._format_value(f, value, is_batch, types)
  local out = {}
  local torch
  if f.type == "torch" then
    local ok, t = pcall(require, "torch")
    if ok and type(t) == "table" and type(t.tensor) == "function" then torch = t end
  end
  local selected
  if f.columns then
    selected = {}
    for _, c in ipairs(f.columns) do selected[c] = true end
  end
  for k, v in pairs(value) do
    if not selected or selected[k] then
      local t = types and types[k]
      local dtype = t and TORCH_DTYPE[t]  -- ragged lists fail in torch.tensor and stay Lua arrays
      if torch and dtype and (type(v) == "table" or type(v) == "number" or type(v) == "boolean") then
        local okc, tv = pcall(torch.tensor, v, { dtype = dtype })
        out[k] = okc and tv or v
      else
        out[k] = v
      end
    elseif f.output_all_columns then
      out[k] = v
    end
  end
  return setmetatable(out, M.format_tag)
end

-- ---- saving -------------------------------------------------------------------------------------------------------

function Dataset:to_json(path, opts)
  opts = check_options(opts, { lines = "boolean", orient = "string" }, "to_json")
  self:_to_json(path, opts.lines ~= false)
  return path
end

function Dataset:to_parquet(path, opts)
  opts = check_options(opts, { compression = "string", row_group_size = "integer" }, "to_parquet")
  self:_to_parquet(path, opts.compression or "snappy", opts.row_group_size)
  return path
end

function Dataset:save_to_disk(dir)
  self:_save(dir, '{"fingerprint":"' .. (self._fingerprint or "") .. '"}')
end

function M.load_from_disk(dir)
  local ds, meta = core.load_table(dir)
  local fp = meta:match('"fingerprint":"(%x+)"')
  return with_fp(ds, fp)
end

function M.concatenate_datasets(list)
  if type(list) ~= "table" or #list == 0 then error("concatenate_datasets expects a list of datasets", 2) end
  local fps = {}
  for i, d in ipairs(list) do
    if not core.is_dataset(d) then error("concatenate_datasets: item " .. i .. " is not a Dataset", 2) end
    fps[i] = d._fingerprint or false
  end
  local ok, res = pcall(core.concat, list)
  if not ok then error(res, 2) end
  local fp
  for _, f in ipairs(fps) do if not f then fp = false end end
  if fp ~= false then fp = M.fingerprint("concat", fps) end
  return with_fp(res, fp or nil)
end

-- ---- DatasetDict ---------------------------------------------------------------------------------------------------

local DD_mt = {}
DD_mt.__index = function(self, k)
  return DatasetDict[k]
end
DD_mt.__tostring = function(self)
  local parts = {}
  for _, k in ipairs(self:keys()) do parts[#parts + 1] = "    " .. k .. ": " .. tostring(rawget(self, k)) end
  return "DatasetDict({\n" .. table.concat(parts, "\n") .. "\n})"
end

function DatasetDict.new(splits)
  return setmetatable(splits or {}, DD_mt)
end

function DatasetDict:keys()
  local ks = {}
  for k in pairs(self) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end

local function dd_apply(name)
  DatasetDict[name] = function(self, ...)
    local out = {}
    for _, k in ipairs(self:keys()) do out[k] = self[k][name](self[k], ...) end
    return DatasetDict.new(out)
  end
end
for _, name in ipairs { "map", "filter", "shuffle", "select_columns", "remove_columns", "rename_column",
  "rename_columns", "with_format" } do
  dd_apply(name)
end

function DatasetDict:column_names()
  local out = {}
  for _, k in ipairs(self:keys()) do out[k] = self[k].column_names end
  return out
end

function DatasetDict:num_rows()
  local out = {}
  for _, k in ipairs(self:keys()) do out[k] = #self[k] end
  return out
end

-- ---- load_dataset ---------------------------------------------------------------------------------------------------

local loader = require "datasets.load"
loader.init(M, core, with_fp)
M.load_dataset = loader.load_dataset

return M
