-- datasets.hub: load_dataset("org/name" [, config]) from a Hub dataset repo. The repo's files are
-- listed through huggingface_hub; data files (parquet preferred, else the most common of json/csv/
-- text) are grouped into configs and splits as HF does:
--   data/train-00000-of-00001.parquet, train.jsonl, train/part-0.parquet   -> config "default"
--   <config>/train/0000.parquet, <config>/train-00000.parquet              -> config "<config>"
-- and when the main revision has none (a script-based repo), the refs/convert/parquet branch the
-- Hub's converter writes (<config>/<split>/0000.parquet) is used. Files are downloaded into the hub
-- cache and read once into the datasets cache.

local hub = require "huggingface_hub"

local H = {}

local function hub_opts(opts, revision)
  return { repo_type = "dataset", revision = revision or opts.revision, token = opts.token, endpoint = opts.endpoint }
end

-- Data files of a listing, relative paths, with their format.
local function data_files(files)
  local load = require "datasets.load"
  local parquet = {}
  for _, f in ipairs(files) do
    if f:lower():match("%.parquet$") then parquet[#parquet + 1] = f end
  end
  if #parquet > 0 then return parquet, "parquet" end
  return load.data_rels(files)
end

-- { config = { rel paths } }: files under a top-level folder whose next level names a split belong to
-- that folder's config; the rest (data/, top-level split files) to "default".
local function group_configs(rels)
  local load = require "datasets.load"
  local configs = {}
  for _, rel in ipairs(rels) do
    local top, rest = rel:match("^([^/]+)/(.+)$")
    local config = "default"
    if top and top ~= "data" and not load.split_of(top .. "/") and load.split_of(rest) then config = top end
    configs[config] = configs[config] or {}
    table.insert(configs[config], rel)
  end
  return configs
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end

function H.load(repo_id, config, opts, cache_dir)
  local load = require "datasets.load"
  local datasets = require "datasets"
  local revision = opts.revision
  local ok, files = pcall(hub.list_repo_files, repo_id, hub_opts(opts, revision))
  if not ok then error("load_dataset: " .. tostring(files), 0) end
  local rels, fmt = data_files(files)
  if #rels == 0 and not revision then
    local ok2, conv = pcall(hub.list_repo_files, repo_id, hub_opts(opts, "refs/convert/parquet"))
    if ok2 then
      rels, fmt = data_files(conv)
      revision = "refs/convert/parquet"
    end
  end
  if #rels == 0 then
    error(string.format("load_dataset: the dataset repo %s has no data files (parquet, json, jsonl, csv, tsv, txt)",
      repo_id), 0)
  end
  if opts.data_dir then
    local keep = {}
    for _, r in ipairs(rels) do
      if r:sub(1, #opts.data_dir + 1) == opts.data_dir .. "/" then keep[#keep + 1] = r end
    end
    rels = keep
  end
  local configs = group_configs(rels)
  local names = sorted_keys(configs)
  local chosen = config
  if not chosen then
    if configs.default then chosen = "default"
    elseif #names == 1 then chosen = names[1]
    else
      error(string.format("load_dataset: config name is missing for %s; pick one among the available configs: %s",
        repo_id, table.concat(names, ", ")), 0)
    end
  end
  local list = configs[chosen]
  if not list then
    error(string.format("load_dataset: unknown config '%s' for %s (available: %s)", tostring(chosen), repo_id,
      table.concat(names, ", ")), 0)
  end
  local prefix = chosen ~= "default" and (chosen .. "/") or ""
  local inner = {}
  for _, r in ipairs(list) do inner[#inner + 1] = r:sub(#prefix + 1) end
  local splits = load.infer_splits(inner)
  local dd = datasets.DatasetDict.new()
  for _, split in ipairs(sorted_keys(splits)) do
    local wanted = not opts.split or opts.split:find(split, 1, true)
    if wanted then
      local local_paths, ids = {}, {}
      for _, r in ipairs(splits[split]) do
        local full = prefix .. r
        local ok3, path = pcall(hub.hf_hub_download, repo_id, full, hub_opts(opts, revision))
        if not ok3 then error("load_dataset: " .. tostring(path), 0) end
        local_paths[#local_paths + 1] = path
        ids[#ids + 1] = repo_id .. "@" .. (revision or "main") .. ":" .. full
      end
      local ro = {}
      if fmt == "json" then ro.field = opts.field end
      if fmt == "csv" then ro.sep = opts.sep or opts.delimiter end
      if fmt == "text" then ro.sample_by, ro.keep_linebreaks = opts.sample_by, opts.keep_linebreaks end
      dd[split] = load.load_split(fmt, local_paths, ro, split, cache_dir, ids)
    end
  end
  return dd
end

return H
