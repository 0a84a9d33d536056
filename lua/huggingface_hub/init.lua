-- huggingface_hub: the Hub client as Python's huggingface_hub names it. Files land in the cache
-- Python uses ($HF_HUB_CACHE, default ~/.cache/huggingface/hub), so either side reuses the other's
-- downloads. HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE are honoured.
-- Failures raise errors with stable messages (see src/hub/hub.hpp, ErrorKind); none shows the token.

local core = require "huggingface_hub.core"
local sky_core = require "sky.core"

local M = {}

local REPO = { revision = "string", repo_type = "string", cache_dir = "string", token = "any",
  local_files_only = "boolean", endpoint = "string" }

-- A new option schema: base's entries and extra's.
local function with(base, extra)
  local s = {}
  for k, v in pairs(base) do s[k] = v end
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end
local function schema(extra) return with(REPO, extra) end

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

-- ---- writing to the Hub ------------------------------------------------------------------------

local WRITE = { token = "any", endpoint = "string" }

-- huggingface_hub's DEFAULT_IGNORE_PATTERNS: git metadata and the local download cache never go up.
local DEFAULT_IGNORE = { ".git", ".git/*", "*/.git", "**/.git/**", ".cache/huggingface", ".cache/huggingface/*",
  "*/.cache/huggingface", "**/.cache/huggingface/**" }

local function json_decode(text, what) return require("transformers.train_core").json_decode(text, what) end

local function as_list(v)
  if v == nil then return {} end
  if type(v) == "string" then return { v } end
  return v
end

-- filter_repo_objects: allowed by one of allow (or allow empty) and ignored by none of ignore.
local function allowed(path, allow, ignore)
  local ok = #allow == 0
  for _, p in ipairs(allow) do ok = ok or core.pattern_match(p, path) end
  if not ok then return false end
  for _, p in ipairs(ignore) do
    if core.pattern_match(p, path) then return false end
  end
  return true
end

--- Checks a token with the Hub (whoami) and stores it where get_token finds it ($HF_TOKEN_PATH,
--- default $HF_HOME/token), created with mode 0600 from its first byte. The token is never printed.
---@param opts {token: string, endpoint?: string}
function M.login(opts)
  sky_core.check_options(opts, { token = "string", endpoint = "string", add_to_git_credential = "boolean" }, "login")
  if opts == nil or opts.token == nil then
    error("login: pass token= (interactive login is not supported yet)", 2)
  end
  if opts.add_to_git_credential then error("login: not supported yet: add_to_git_credential", 2) end
  local token = opts.token:gsub("^%s+", ""):gsub("%s+$", "")
  local info = M.whoami { token = token, endpoint = opts.endpoint }
  local fs = require "sky.fs"
  local path = core.settings().token_path
  local dir = path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then fs.makedirs(dir) end
  fs.write_atomic(path, token, "600")
  io.stderr:write("Login successful: logged in as " .. tostring(info.name) .. "; token saved to " .. path .. "\n")
  return info
end

--- Removes the stored token file (HF_TOKEN in the environment, if set, still applies).
function M.logout()
  local path = core.settings().token_path
  os.remove(path)
end

--- The Hub's account information for the token (default: HF_TOKEN or the stored one).
---@param opts? {token?: string, endpoint?: string}
---@return table info { type=, name=, orgs=, ... }
function M.whoami(opts)
  sky_core.check_options(opts, WRITE, "whoami")
  return json_decode(core.whoami(opts), "whoami")
end

--- Creates a repository; returns its URL. exist_ok=true makes an existing one fine.
---@param repo_id string
---@param opts? {token?: string, private?: boolean, repo_type?: string, exist_ok?: boolean, endpoint?: string}
---@return string url
function M.create_repo(repo_id, opts)
  check_string(repo_id, 1, "create_repo", "repo id")
  sky_core.check_options(opts, with(WRITE, { private = "boolean", repo_type = "string", exist_ok = "boolean" }), "create_repo")
  return core.create_repo(repo_id, opts)
end

local COMMIT = with(WRITE, { repo_id = "string", repo_type = "string", revision = "string", commit_message = "string",
  commit_description = "string", parent_commit = "string", create_pr = "boolean", run_as_future = "boolean" })

local function commit_opts(opts)
  if opts.create_pr then error("not supported yet: create_pr", 3) end
  if opts.run_as_future then error("not supported yet: run_as_future", 3) end
  return { repo_type = opts.repo_type, revision = opts.revision, token = opts.token, endpoint = opts.endpoint,
    commit_message = opts.commit_message, commit_description = opts.commit_description,
    parent_commit = opts.parent_commit }
end

local function repo_web_url(opts)
  local ep = opts.endpoint or core.settings().endpoint
  local prefix = (opts.repo_type == "dataset" and "datasets/") or (opts.repo_type == "space" and "spaces/") or ""
  return ep .. "/" .. prefix .. opts.repo_id
end

--- create_commit(repo_id, operations, opts): operations are { path_in_repo, local_path } additions
--- and { path_in_repo, false } deletions (a folder when the path ends in '/').
---@return table info { commit_url=, oid=, lfs_uploaded=, ignored= }
function M.create_commit(repo_id, operations, opts)
  check_string(repo_id, 1, "create_commit", "repo id")
  sky_core.check_options(opts, COMMIT, "create_commit")
  opts = opts or {}
  if not opts.commit_message then error("create_commit: commit_message is required", 2) end
  return core.create_commit(repo_id, operations, commit_opts(opts))
end

--- Uploads one local file as path_in_repo in one commit (keyword arguments as huggingface_hub's).
---@param opts {path_or_fileobj: string, path_in_repo: string, repo_id: string, repo_type?: string, revision?: string, commit_message?: string, commit_description?: string, token?: string, endpoint?: string}
---@return table info { commit_url=, oid=, url= (the file's page) }
function M.upload_file(opts)
  sky_core.check_options(opts, with(COMMIT, { path_or_fileobj = "string", path_in_repo = "string" }), "upload_file")
  if not (opts and opts.path_or_fileobj and opts.path_in_repo and opts.repo_id) then
    error("upload_file: path_or_fileobj, path_in_repo and repo_id are required", 2)
  end
  local st = require("sky.fs").stat(opts.path_or_fileobj)
  if not st or st.kind ~= "file" then
    error("upload_file: path_or_fileobj '" .. opts.path_or_fileobj .. "' is not a file", 2)
  end
  local co = commit_opts(opts)
  co.commit_message = co.commit_message or ("Upload " .. opts.path_in_repo .. " with huggingface_hub")
  local info = core.create_commit(opts.repo_id, { { opts.path_in_repo, opts.path_or_fileobj } }, co)
  info.url = repo_web_url(opts) .. "/blob/" .. (opts.revision or "main") .. "/" .. opts.path_in_repo:gsub("^/", "")
  return info
end

-- Every file under dir (following links to files, as pathlib's glob does), relative, sorted.
local function walk(fs, dir, rel, out)
  local names, err = fs.listdir(dir)
  if not names then error("upload_folder: " .. tostring(err), 4) end
  for _, name in ipairs(names) do
    local full, r = dir .. "/" .. name, rel == "" and name or (rel .. "/" .. name)
    local st = fs.stat(full)
    if st and st.kind == "dir" then walk(fs, full, r, out)
    elseif st and st.kind == "file" then out[#out + 1] = { r, full } end
  end
  return out
end

--- Uploads a folder's files (those allow_patterns allow and ignore_patterns do not ignore; never
--- .git/ or .cache/huggingface/) under path_in_repo, in one commit; delete_patterns removes the
--- repository's matching files that are not uploaded again.
---@param opts {folder_path: string, repo_id: string, path_in_repo?: string, repo_type?: string, revision?: string, commit_message?: string, commit_description?: string, allow_patterns?: string|string[], ignore_patterns?: string|string[], delete_patterns?: string|string[], token?: string, endpoint?: string}
---@return table info { commit_url=, oid=, url= (the folder's page), lfs_uploaded= }
function M.upload_folder(opts)
  sky_core.check_options(opts, with(COMMIT, { folder_path = "string", path_in_repo = "string",
    allow_patterns = "string|table", ignore_patterns = "string|table", delete_patterns = "string|table" }), "upload_folder")
  if not (opts and opts.folder_path and opts.repo_id) then error("upload_folder: folder_path and repo_id are required", 2) end
  local fs = require "sky.fs"
  local st = fs.stat(opts.folder_path)
  if not st or st.kind ~= "dir" then error("upload_folder: folder_path '" .. opts.folder_path .. "' is not a folder", 2) end
  local allow = as_list(opts.allow_patterns)
  local ignore = {}
  for _, p in ipairs(as_list(opts.ignore_patterns)) do ignore[#ignore + 1] = p end
  for _, p in ipairs(DEFAULT_IGNORE) do ignore[#ignore + 1] = p end
  local prefix = opts.path_in_repo and opts.path_in_repo:gsub("^/+", ""):gsub("/+$", "") or ""
  if prefix ~= "" then prefix = prefix .. "/" end
  local ops, uploaded = {}, {}
  for _, f in ipairs(walk(fs, opts.folder_path, "", {})) do
    if allowed(f[1], allow, ignore) then
      ops[#ops + 1] = { prefix .. f[1], f[2] }
      uploaded[prefix .. f[1]] = true
    end
  end
  local deletes = as_list(opts.delete_patterns)
  if #deletes > 0 then
    -- The repository's files under path_in_repo that match delete_patterns and are not uploaded again.
    local cache = os.tmpname()
    os.remove(cache)
    local ok, files = pcall(M.list_repo_files, opts.repo_id, { repo_type = opts.repo_type, revision = opts.revision,
      token = opts.token, endpoint = opts.endpoint, cache_dir = cache })
    fs.remove_tree(cache)
    if not ok then error(files, 2) end
    for _, path in ipairs(files) do
      local rel = path:sub(1, #prefix) == prefix and path:sub(#prefix + 1) or nil
      if rel and not uploaded[path] and rel ~= ".gitattributes" and allowed(rel, deletes, {}) then
        ops[#ops + 1] = { path, false }
      end
    end
  end
  local co = commit_opts(opts)
  co.commit_message = co.commit_message or "Upload folder using huggingface_hub"
  local info = core.create_commit(opts.repo_id, ops, co)
  info.url = repo_web_url(opts) .. "/tree/" .. (opts.revision or "main") .. "/" .. prefix:gsub("/$", "")
  return info
end

return M
