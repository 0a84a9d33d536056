-- huggingface_hub: the Hub client as Python's huggingface_hub names it. Files land in the cache
-- Python uses ($HF_HUB_CACHE, default ~/.cache/huggingface/hub), so either side reuses the other's
-- downloads. HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE are honoured.
-- Failures raise errors with stable messages (see src/hub/hub.hpp, ErrorKind); none shows the token.

local core = require "huggingface_hub.core"
local sky_core = require "sky.core"

local M = {}

local REPO = { revision = "string", repo_type = "string", cache_dir = "string", token = "any",
  local_files_only = "boolean", endpoint = "string" }

local function schema(extra)
  local s = {}
  for k, v in pairs(REPO) do s[k] = v end
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

local DOWNLOAD = schema { optional = "boolean", force_download = "boolean" }
local SNAPSHOT = schema { force_download = "boolean", allow_patterns = "string|table",
  ignore_patterns = "string|table", max_workers = "integer" }
local LIST = schema()
local RESOLVE = schema { force_download = "boolean" }

local function check_string(v, n, fname, what)
  if type(v) ~= "string" then
    error(string.format("bad argument #%d to '%s' (%s expected, got %s)", n, fname, what, type(v)), 3)
  end
end

---@class HubOptions
---@field revision? string          branch, tag or commit hash (default "main")
---@field repo_type? string         "model" (default), "dataset" or "space"
---@field cache_dir? string         default $HF_HUB_CACHE
---@field token? string|boolean     default $HF_TOKEN or $HF_HOME/token; false sends none
---@field local_files_only? boolean never touch the network
---@field endpoint? string          default $HF_ENDPOINT or https://huggingface.co

--- Downloads one file of a repository into the cache; returns its path inside the snapshot folder.
--- With optional=true a file the repository does not have gives nil instead of an error.
---@param repo_id string
---@param filename string
---@param opts? HubOptions|{optional?: boolean, force_download?: boolean}
---@return string|nil path
function M.hf_hub_download(repo_id, filename, opts)
  check_string(repo_id, 1, "hf_hub_download", "repo id")
  check_string(filename, 2, "hf_hub_download", "filename")
  sky_core.check_options(opts, DOWNLOAD, "hf_hub_download")
  return core.hf_hub_download(repo_id, filename, opts)
end

--- Downloads every file of a revision (those allow_patterns allow and ignore_patterns do not
--- ignore; fnmatch patterns where '*' crosses '/'); returns the snapshot folder.
---@param repo_id string
---@param opts? HubOptions|{allow_patterns?: string|string[], ignore_patterns?: string|string[], max_workers?: integer, force_download?: boolean}
---@return string folder
function M.snapshot_download(repo_id, opts)
  check_string(repo_id, 1, "snapshot_download", "repo id")
  sky_core.check_options(opts, SNAPSHOT, "snapshot_download")
  return core.snapshot_download(repo_id, opts)
end

--- The paths of all files of a repository at a revision, sorted. Offline, the listing recorded
--- by an earlier online call answers.
---@param repo_id string
---@param opts? HubOptions
---@return string[]
function M.list_repo_files(repo_id, opts)
  check_string(repo_id, 1, "list_repo_files", "repo id")
  sky_core.check_options(opts, LIST, "list_repo_files")
  return core.list_repo_files(repo_id, opts)
end

--- What from_pretrained calls. A local folder is returned as it is (its required files must be
--- there); a repo id has each of `files` downloaded at one commit and its snapshot folder returned.
--- Entries of `files` are names or { name, optional = true }. A missing "X.safetensors" is replaced
--- by "X.safetensors.index.json" and every shard it names.
---@param path_or_id string
---@param files (string|{[1]: string, optional?: boolean})[]
---@param opts? HubOptions|{force_download?: boolean}
---@return string folder
---@return string[] files the files present, relative to folder (index and shards included)
function M.resolve_model_folder(path_or_id, files, opts)
  check_string(path_or_id, 1, "resolve_model_folder", "path or repo id")
  if type(files) ~= "table" then
    error(string.format("bad argument #2 to 'resolve_model_folder' (table of file names expected, got %s)", type(files)), 2)
  end
  sky_core.check_options(opts, RESOLVE, "resolve_model_folder")
  return core.resolve_model_folder(path_or_id, files, opts)
end

--- The cached path of a file for a revision, or nil; never touches the network.
---@param repo_id string
---@param filename string
---@param opts? {revision?: string, repo_type?: string, cache_dir?: string}
---@return string|nil
function M.try_to_load_from_cache(repo_id, filename, opts)
  check_string(repo_id, 1, "try_to_load_from_cache", "repo id")
  check_string(filename, 2, "try_to_load_from_cache", "filename")
  sky_core.check_options(opts, { revision = "string", repo_type = "string", cache_dir = "string" },
    "try_to_load_from_cache")
  return core.try_to_load_from_cache(repo_id, filename, opts)
end

--- The option names resolve_model_folder takes, with their types: a from_pretrained schema can
--- include them, and download_options picks them out of its option table.
M.DOWNLOAD_OPTIONS = {}
for k, v in pairs(RESOLVE) do M.DOWNLOAD_OPTIONS[k] = v end

--- The hub options (revision, token, cache_dir, ...) of a larger option table, such as
--- from_pretrained's, as a new table for resolve_model_folder.
---@param opts? table
---@return table
function M.download_options(opts)
  local out = {}
  for k in pairs(RESOLVE) do
    if opts and opts[k] ~= nil then out[k] = opts[k] end
  end
  return out
end

--- "models--org--name": a repository's folder name in the cache.
M.repo_folder_name = core.repo_folder_name

--- The environment as read now: endpoint, cache_dir, token_path, offline, has_token.
M.settings = core.settings

return M
