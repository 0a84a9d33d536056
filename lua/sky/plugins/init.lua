-- sky.plugins: plugins are plain Lua tables of optional hooks; the built-ins (huggingface, torch)
-- are written with the same hooks as user plugins. sky.plugins.<name> loads
-- lua/sky/plugins/<name>.lua, which returns a factory: sky.plugins.huggingface{token = ...}.
--
-- THE HOOK API (every field optional; `info` is what sky.info() shows on that worker:
-- node, nodes, slot, rank, world_size, local_rank, head_address, accelerator, pool, restarts):
--
--   name      = "huggingface"                   shown in messages ("plugin 'x' setup failed: ...")
--   secrets   = { "hf_..." }                      strings masked in every log, error and tostring
--
--   Driver side (plain calls in the driver process):
--   open      = function(pool)                    before any worker starts (pick a MASTER_PORT, ...)
--   image     = function(image, ctx) -> image     transform the pool's sky.Image (ctx: pool name, nodes,
--                                                 concurrency, head_address)
--   bootstrap = function(ctx) -> { "sh line", ... }   lines appended to the image's bootstrap script
--                                                 (never put secrets in them: read them from the env)
--   env       = function(info, pool) -> { VAR = "value" }   per worker; sent over the protocol after
--                                                 the handshake (never on a command line), set
--                                                 before setup and before any task
--   restart   = function(pool)                    a rank died and its gang ends: prepare what the
--                                                 next gang's workers get from env (a new group)
--   close     = function(pool)                    after every worker stopped
--   gang      = true                              the ranks are a gang (ComputePool's max_restarts)
--
--   Worker side (these functions are SENT to each worker like a task function: their upvalues
--   travel by value, modules by name):
--   setup     = function(info)                    once per worker process, before its first task;
--                                                 an error fails pool:open() naming the plugin
--   wrap      = function(run, ...) return run(...) end   around every task and every map item;
--                                                 the first plugin in the list is outermost
--   teardown  = function(info)                    when the pool closes (errors go to the worker's stderr)
--
-- Ordering at pool:open(): open hooks, image hooks, provider prepares nodes (bootstrap), workers
-- start, handshake, env applied, setup hooks (all workers at once), pool ready.
local M = {}

local hooks = {
  name = "string", secrets = "table", open = "function", image = "function", bootstrap = "function",
  env = "function", close = "function", setup = "function", wrap = "function", teardown = "function",
  restart = "function", gang = "boolean",
}
M.hooks = hooks

--- Checks a plugin table: a function under an unknown name (a misspelt hook) and hooks of the
--- wrong type are errors. Other fields (a plugin's own settings) are allowed.
function M.check(p, where)
  where = where or "plugin"
  if type(p) ~= "table" then error(where .. " must be a plugin table (got " .. type(p) .. ")", 3) end
  local core = require "sky.core"
  for k, v in pairs(p) do
    local want = hooks[k]
    if type(k) == "string" and k:sub(1, 1) ~= "_" then
      if not want and type(v) == "function" then
        local names = {}
        for n in pairs(hooks) do names[#names + 1] = n end
        local hint = core.suggest and core.suggest(k, names)
        error(string.format("%s '%s' has an unknown hook '%s'%s", where, tostring(p.name or "?"), k,
          hint and (" (did you mean '" .. hint .. "'?)") or ""), 3)
      end
      if want and type(v) ~= want then
        error(string.format("%s '%s': hook '%s' must be a %s (got %s)", where, tostring(p.name or "?"), k, want, type(v)), 3)
      end
    end
  end
  return p
end

return setmetatable(M, {
  __index = function(t, k)
    local ok, factory = pcall(require, "sky.plugins." .. k)
    if not ok then
      if tostring(factory):find("module 'sky.plugins." .. k .. "' not found", 1, true) then
        error("no plugin '" .. tostring(k) .. "' under lua/sky/plugins/", 2)
      end
      error(factory, 2)
    end
    rawset(t, k, factory)
    return factory
  end,
})
