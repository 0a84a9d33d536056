-- dist_ranks: runs a Lua body as every rank of a process group, one `skyrun` process per rank on
-- loopback, given RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT as torchrun would, and the same
-- SKYRUN_DIST_SECRET (opts.secrets: one per rank instead) (tests of dist).
--   local R = require "dist_ranks"
--   local results, port = R.run(4, "print(dist.all_reduce(dist.rank()))")  -- results[r+1].out/.err/.code
local T = require "testlib"

local M = {}

-- Starts one `skyrun -e` per rank in `ranks` (default 0..world-1) and waits for all of them.
-- Returns per rank (1-based: [r+1]) {out=, err=, code=}.
function M.run(world, body, opts)
  opts = opts or {}
  local dir = T.tmpdir()
  local port = opts.port or require("sky.dist").free_port()
  -- the pool secret every rank proves to rank 0's store (a rank given another one is refused)
  local secret = opts.secret or require("sky.dist").new_secret()
  local prelude = string.format(
    "local dist = require 'skyrun.dist'; dist.init_process_group { backend = 'gloo', timeout = %s }\n",
    opts.timeout or 20)
  T.write_file(dir .. "/rank.lua", prelude .. body)
  local ranks = opts.ranks
  if not ranks then
    ranks = {}
    for r = 0, world - 1 do ranks[#ranks + 1] = r end
  end
  local parts = {}
  for _, r in ipairs(ranks) do
    local q = function(s) return T.shell_quote(s) end
    parts[#parts + 1] = string.format(
      "( RANK=%d WORLD_SIZE=%d MASTER_ADDR=127.0.0.1 MASTER_PORT=%d SKYRUN_DIST_SECRET=%s %s %s > %s 2> %s; echo $? > %s ) &",
      r, world, port, q(opts.secrets and opts.secrets[r + 1] or secret), q(T.skyrun_bin), q(dir .. "/rank.lua"), q(dir .. "/" .. r .. ".out"),
      q(dir .. "/" .. r .. ".err"), q(dir .. "/" .. r .. ".code"))
  end
  T.exec(table.concat(parts, " ") .. " wait")
  local results = {}
  for _, r in ipairs(ranks) do
    results[r + 1] = {
      out = T.read_file(dir .. "/" .. r .. ".out"),
      err = T.read_file(dir .. "/" .. r .. ".err"),
      code = tonumber(T.read_file(dir .. "/" .. r .. ".code")),
    }
  end
  return results, port
end

function M.check_ok(res, r)
  if res.code ~= 0 then error(string.format("rank %d exited %s: %s%s", r, tostring(res.code), res.out, res.err), 2) end
end

return M
