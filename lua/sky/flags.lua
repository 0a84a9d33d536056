-- sky.flags: command-line flags for job scripts (`--name value` or `--name=value`).
--   local flags = require("sky.flags").parse(arg, { epochs = "number", model = "string" },
--                                            { prog = "finetune.lua", usage = USAGE })
-- A "boolean" flag is on when named alone (`--gradient-checkpointing`) or given true/false with `=`.
-- -h/--help prints usage and exits 0; an unknown flag, a missing value or a number flag that is
-- not a positive number prints why on stderr and exits 2.
local M = {}

local function fail(prog, msg)
  io.stderr:write(prog .. ": " .. msg .. "\n")
  os.exit(2)
end

function M.parse(argv, spec, o)
  local prog, usage = o.prog, o.usage or ""
  local out, i = {}, 1
  argv = argv or {}
  while i <= #argv do
    local a = argv[i]
    if a == "-h" or a == "--help" then io.write(usage) os.exit(0) end
    local name, value = a:match("^%-%-([%w%-]+)=(.*)$")
    if not name then
      name = a:match("^%-%-([%w%-]+)$")
      if name and spec[name] == "boolean" then
        value = "true"
      else
        value = argv[i + 1]
        i = i + 1
      end
    end
    local kind = name and spec[name]
    if not kind then
      local names = {}
      for k in pairs(spec) do names[#names + 1] = "--" .. k end
      table.sort(names)
      fail(prog, string.format("unknown argument '%s' (flags: %s)", a, table.concat(names, " ")))
    end
    if value == nil then fail(prog, "--" .. name .. " needs a value") end
    if kind == "boolean" then
      local b = ({ ["true"] = true, ["1"] = true, yes = true, ["false"] = false, ["0"] = false, no = false })[value]
      if b == nil then fail(prog, "--" .. name .. " is on or off (--" .. name .. ", --" .. name .. "=false)") end
      value = b
    elseif kind == "number" then
      local v = tonumber(value)
      if not v or v <= 0 then fail(prog, "--" .. name .. " must be a positive number (got '" .. value .. "')") end
      value = v
    end
    out[name] = value
    i = i + 1
  end
  return out
end

return M
