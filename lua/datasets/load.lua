-- datasets.load: load_dataset as HF resolves it: a builder name ("json", "csv", "text", "parquet")
-- with data_files, a local file or folder, or a Hub dataset repo ("org/name") whose parquet files are
-- found through huggingface_hub. Files are converted once into table folders in the datasets cache,
-- keyed by the files' paths, sizes and times, and memory-mapped from there afterwards.

local sky_core = require "sky.core"
local progress = require "datasets.progress"

local L = {}
local M, core, with_fp

function L.init(mod, native, fp_fn)
  M, core, with_fp = mod, native, fp_fn
end

local FORMATS = {
  json = "json", jsonl = "json", csv = "csv", tsv = "csv", text = "text", txt = "text", parquet = "parquet",
}
local EXT_FORMAT = { json = "json", jsonl = "json", ndjson = "json", csv = "csv", tsv = "csv", txt = "text",
  text = "text", parquet = "parquet" }

local SPLIT_NAMES = {
  train = { "train", "training" },
  validation = { "validation", "valid", "dev", "val" },
  test = { "test", "testing", "eval", "evaluation" },
}
local SPLIT_ORDER = { "train", "validation", "test" }

local function ext_of(path)
  local e = path:lower():match("%.([%w]+)$")
  if e == "gz" or e == "zst" or e == "bz2" then return nil end
  return e
end

local function is_abs(p) return p:sub(1, 1) == "/" end

local function cwd()
  return os.getenv("PWD") or "."
end

local function abs(p)
  if is_abs(p) then return p end
  return cwd() .. "/" .. p
end

-- Expands a data_files entry (a path, a folder, a glob) to the sorted list of files.
local function expand(pattern, base)
  local p = pattern
  if base and not is_abs(p) then p = base .. "/" .. p end
  local st = core.stat(p)
  if st and st.dir then
    local out = {}
    for _, rel in ipairs(core.list_files(p)) do
      if not rel:match("^%.") and not rel:match("/%.") then out[#out + 1] = p .. "/" .. rel end
    end
    return out
  end
  if st then return { p } end
  if p:find("[%*%?%[]") then
    -- "**" means any depth, as HF's fsspec globs: expand a few levels
    if p:find("%*%*") then
      local out, seen = {}, {}
      for depth = 0, 4 do
        local q = p:gsub("%*%*/?", string.rep("*/", depth))
        for _, f in ipairs(core.glob(q)) do
          local fs = core.stat(f)
          if fs and not fs.dir and not seen[f] then
            seen[f] = true
            out[#out + 1] = f
          end
        end
      end
      table.sort(out)
      return out
    end
    local out = {}
    for _, f in ipairs(core.glob(p)) do
      local fs = core.stat(f)
      if fs and not fs.dir then out[#out + 1] = f end
    end
    return out
  end
  return {}
end

local function file_list(v, base, what)
  local list = type(v) == "string" and { v } or v
  if type(list) ~= "table" then error(what .. " must be a path or a list of paths", 4) end
  local out = {}
  for _, pat in ipairs(list) do
    local files = expand(pat, base)
    if #files == 0 then error("load_dataset: no file matches '" .. pat .. "'" .. (base and (" in " .. base) or ""), 4) end
    for _, f in ipairs(files) do out[#out + 1] = f end
  end
  return out
end

-- data_files as given (string, list, or {split = string|list}) -> { split = {files} }
local function normalize_data_files(df, base)
  if type(df) == "string" or (type(df) == "table" and #df > 0) then
    return { train = file_list(df, base, "data_files") }
  end
  if type(df) ~= "table" then error("data_files must be a path, a list of paths or a table {split = paths}", 3) end
  local out = {}
  for split, v in pairs(df) do out[split] = file_list(v, base, "data_files['" .. tostring(split) .. "']") end
  return out
end

-- Which split a relative path belongs to, by HF's naming conventions (folder or file name).
local function split_of(rel)
  local lower = rel:lower()
  for _, split in ipairs(SPLIT_ORDER) do
    for _, key in ipairs(SPLIT_NAMES[split]) do
      -- a folder named after the split, or a file name with the split as a word ("train-00000.parquet")
      if lower:match("^" .. key .. "/") or lower:match("/" .. key .. "/")
          or lower:match("^" .. key .. "[%-_%.%d]") or lower:match("/" .. key .. "[%-_%.%d]")
          or lower:match("[%-_]" .. key .. "[%-_%.%d]") then
        return split
      end
    end
  end
end
L.split_of = split_of

-- The data files of a folder's file list grouped by split ("train" for everything when no name says).
function L.infer_splits(rels)
  local by, any = {}, false
  for _, rel in ipairs(rels) do
    local s = split_of(rel)
    if s then
      any = true
      by[s] = by[s] or {}
      table.insert(by[s], rel)
    end
  end
  if not any then return { train = rels } end
  return by
end

local function data_rels(files)
  local out, fmt = {}, nil
  local counts = {}
  for _, rel in ipairs(files) do
    local base = rel:match("[^/]+$")
    local e = ext_of(rel)
    if e and EXT_FORMAT[e] and not base:match("^%.") and base:lower() ~= "readme.md" then
      counts[EXT_FORMAT[e]] = (counts[EXT_FORMAT[e]] or 0) + 1
    end
  end
  -- the most common data format wins, as HF's module inference does
  local best = 0
  for f, c in pairs(counts) do
    if c > best or (c == best and f < fmt) then fmt, best = f, c end
  end
  if not fmt then return out, nil end
  for _, rel in ipairs(files) do
    local e = ext_of(rel)
    if e and EXT_FORMAT[e] == fmt then out[#out + 1] = rel end
  end
  return out, fmt
end
L.data_rels = data_rels

local READ_OPTS = {
  json = { field = "string" },
  csv = { sep = "string", delimiter = "string" },
  text = { sample_by = "string", keep_linebreaks = "boolean" },
  parquet = { columns = "table" },
}

local function read_one(fmt, path, o, writer)
  local ok, res
  if fmt == "json" then
    ok, res = pcall(core.read_json, path, o.field)
  elseif fmt == "csv" then
    local sep = o.sep or o.delimiter or (path:lower():match("%.tsv$") and "\t") or ","
    ok, res = pcall(core.read_csv, path, sep)
  elseif fmt == "text" then
    ok, res = pcall(core.read_text, path, o.sample_by, o.keep_linebreaks)
  elseif fmt == "parquet" then
    ok, res = pcall(core.read_parquet_into, writer, path, o.columns)  -- the others are not decoded
    if ok then return nil end
  end
  if not ok then error(res, 0) end
  if o.columns then res = res:select_columns(o.columns) end
  return res
end

-- Reads the files of one split into a table folder (once) and maps it.
local function load_split(fmt, files, o, split, cache_dir, hashed_paths)
  local parts = { fmt, split }
  for k, v in pairs(o) do
    local s = tostring(v)
    if type(v) == "table" then  -- a list (columns=): its items, not its address
      local items = {}
      for i, x in ipairs(v) do items[i] = tostring(x) end
      s = table.concat(items, "\0")
    end
    parts[#parts + 1] = k .. "=" .. s
  end
  table.sort(parts, function(a, b) return a < b end)
  for i, f in ipairs(files) do
    local st = core.stat(f)
    if not st then error("load_dataset: cannot read " .. f, 0) end
    parts[#parts + 1] = (hashed_paths and hashed_paths[i] or abs(f)) .. ":" .. st.size .. ":" .. string.format("%.6f", st.mtime)
  end
  local fp = core.hash(table.concat(parts, "\0"))
  local dir = cache_dir .. "/" .. fmt .. "/default-" .. fp:sub(1, 16) .. "/" .. fp .. "/" .. split
  if core.table_exists(dir) then return with_fp((core.load_table(dir)), fp, cache_dir) end
  local writer = core.new_writer(dir)
  local bar = progress.new("Generating " .. split .. " split", #files, 2)
  for _, f in ipairs(files) do
    local ds = read_one(fmt, f, o, writer)
    if ds then writer:append(ds) end
    bar:update(1)
  end
  bar:close()
  -- ranks of one job may build the same cache entry at once: the first one finished is kept
  writer:finish('{"fingerprint":"' .. fp .. '"}', true)
  return with_fp((core.load_table(dir)), fp, cache_dir)
end
L.load_split = load_split

local LOAD_OPTS = { data_files = "string|table", data_dir = "string", split = "string", cache_dir = "string",
  streaming = "boolean", revision = "string", token = "any", download_mode = "string", features = "any",
  keep_in_memory = "boolean", num_proc = "integer", trust_remote_code = "boolean", endpoint = "string",
  -- reader options
  field = "string", sep = "string", delimiter = "string", sample_by = "string", keep_linebreaks = "boolean",
  columns = "table" }

-- "train[:100]", "train[10%:]", "train+test": HF's split syntax over the loaded splits.
local function pick_split(dd, spec)
  local out = {}
  for part in spec:gmatch("[^+]+") do
    part = part:match("^%s*(.-)%s*$")
    local name, slice = part:match("^([%w_%-%.]+)%[(.*)%]$")
    name = name or part
    local ds = rawget(dd, name)
    if not ds then
      error(string.format("load_dataset: unknown split \"%s\" (available: %s)", name, table.concat(dd:keys(), ", ")), 0)
    end
    if slice then
      local n = #ds
      local a, b = slice:match("^(.-):(.-)$")
      if not a then error("load_dataset: bad split slice '" .. part .. "'", 0) end
      local function pos(s, def)
        if s == "" then return def end
        local pct = s:match("^(%-?%d+)%%$")
        local v = pct and math.floor(tonumber(pct) * n / 100 + 0.5) or tonumber(s)
        if not v then error("load_dataset: bad split slice '" .. part .. "'", 0) end
        if v < 0 then v = n + v end
        return math.max(0, math.min(n, v))
      end
      local i, j = pos(a, 0), pos(b, n)
      ds = j > i and ds:select(i + 1, j) or ds:select(1, 0)
    end
    out[#out + 1] = ds
  end
  if #out == 1 then return out[1] end
  return M.concatenate_datasets(out)
end

--- load_dataset(path_or_format [, config] [, opts]) -> DatasetDict, or a Dataset with opts.split.
function L.load_dataset(path, name, opts)
  if type(name) == "table" and opts == nil then name, opts = nil, name end
  if type(path) ~= "string" then error("load_dataset expects a format, a path or a Hub dataset id", 2) end
  opts = sky_core.check_options(opts, LOAD_OPTS, "load_dataset")
  if opts.streaming then error("not supported yet: load_dataset streaming=true", 2) end
  if opts.features then error("not supported yet: load_dataset features=", 2) end
  local cache_dir = opts.cache_dir or M.cache_dir()
  local fmt = FORMATS[path]
  local ro = {}
  local splits, f
  if fmt then
    for k in pairs(READ_OPTS[fmt]) do ro[k] = opts[k] end
    if opts.data_files then
      splits = normalize_data_files(opts.data_files, opts.data_dir)
    elseif opts.data_dir then
      local files = expand(opts.data_dir)
      local rels = {}
      for _, p in ipairs(files) do rels[#rels + 1] = p:sub(#opts.data_dir + 2) end
      splits = {}
      for s, list in pairs(L.infer_splits(rels)) do
        splits[s] = {}
        for _, r in ipairs(list) do table.insert(splits[s], opts.data_dir .. "/" .. r) end
      end
    else
      error("load_dataset('" .. path .. "') needs data_files= (a path, a list, or {train = ..., test = ...})", 2)
    end
  else
    local st = core.stat(path)
    if st and not st.dir then
      f = EXT_FORMAT[ext_of(path) or ""]
      if not f then error("load_dataset: cannot tell the format of " .. path .. " from its extension", 2) end
      fmt, splits = f, { train = { path } }
    elseif st and st.dir then
      local base = opts.data_dir and (path .. "/" .. opts.data_dir) or path
      if opts.data_files then
        local all = normalize_data_files(opts.data_files, base)
        splits = all
        for _, list in pairs(all) do
          for _, p in ipairs(list) do fmt = fmt or EXT_FORMAT[ext_of(p) or ""] end
        end
      else
        local rels, found = data_rels(core.list_files(base))
        if not found then error("load_dataset: no data files (json, jsonl, csv, tsv, txt, parquet) in " .. base, 2) end
        fmt = found
        splits = {}
        for s, list in pairs(L.infer_splits(rels)) do
          splits[s] = {}
          for _, r in ipairs(list) do table.insert(splits[s], base .. "/" .. r) end
        end
      end
      if not fmt then error("load_dataset: cannot tell the format of the data files in " .. path, 2) end
    else
      if not path:match("^[%w_%-%.]+/[%w_%-%.]+$") and not path:match("^[%w_%-%.]+$") then
        error("load_dataset: no such file or folder: " .. path, 2)
      end
      local hub = require "datasets.hub"
      local res = hub.load(path, name, opts, cache_dir)
      if opts.split then return pick_split(res, opts.split) end
      return res
    end
    if FORMATS[fmt] then
      for k in pairs(READ_OPTS[fmt]) do ro[k] = opts[k] end
    end
  end
  local dd = M.DatasetDict.new()
  for split, files in pairs(splits) do
    if not opts.split or opts.split:find(split, 1, true) then
      dd[split] = load_split(fmt, files, ro, split, cache_dir)
    end
  end
  if opts.split then return pick_split(dd, opts.split) end
  return dd
end

return L
