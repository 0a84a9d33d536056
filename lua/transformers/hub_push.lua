-- transformers' PushToHubMixin.push_to_hub for models and tokenizers: save_pretrained into a fresh
-- temporary folder, create the repository if it is missing (exist_ok), and upload the folder's
-- files in one commit ("Upload model", "Upload tokenizer"). The temporary folder is removed
-- whatever happens.
local hf = require "huggingface_hub"
local sky_core = require "sky.core"
local fs = require "sky.fs"

local M = {}

local OPTS = { commit_message = "string", commit_description = "string", private = "boolean", token = "any",
  revision = "string", create_pr = "boolean", max_shard_size = "number|string", safe_serialization = "boolean",
  tags = "string|table", endpoint = "string", use_temp_dir = "boolean" }

-- A new empty folder of our own under $TMPDIR (os.tmpname's unique name, made a folder).
local function temp_folder()
  local name = os.tmpname()
  os.remove(name)
  fs.makedirs(name, "700")
  return name
end

--- push(obj, kind, repo_id, opts): kind is "model" or "tokenizer". Returns the commit info
--- { commit_url=, oid=, url= }.
function M.push(obj, kind, repo_id, opts, fname)
  if type(repo_id) ~= "string" or repo_id == "" then
    error(string.format("bad argument #1 to '%s' (repo id expected, got %s)", fname, type(repo_id)), 3)
  end
  opts = sky_core.check_options(opts, OPTS, fname, 4) or {}
  if opts.tags ~= nil then error("not supported yet: " .. fname .. " tags (the model card)", 3) end
  if opts.create_pr then error("not supported yet: create_pr", 3) end
  local repo_url = hf.create_repo(repo_id, { token = opts.token, private = opts.private, endpoint = opts.endpoint,
    exist_ok = true })
  local dir = temp_folder()
  local ok, res = pcall(function()
    if kind == "model" then
      obj:save_pretrained(dir, { max_shard_size = opts.max_shard_size, safe_serialization = opts.safe_serialization })
    else
      obj:save_pretrained(dir)
    end
    return hf.upload_folder { folder_path = dir, repo_id = repo_id, token = opts.token, endpoint = opts.endpoint,
      revision = opts.revision, commit_message = opts.commit_message or ("Upload " .. kind),
      commit_description = opts.commit_description }
  end)
  fs.remove_tree(dir)
  if not ok then error(res, 0) end
  res.repo_url = repo_url
  return res
end

return M
