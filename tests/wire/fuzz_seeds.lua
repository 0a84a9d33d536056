-- Writes seed inputs for the wire fuzz target (src/wire/fuzz_wire.cpp) into ./corpus:
--   mkdir corpus && skyrun tests/wire/fuzz_seeds.lua && ./fuzz_wire -max_total_time=300 corpus/
-- The first byte of each seed selects the target's mode (0 value, 1 frames, 2 handshake text).
local wire = require "sky.wire"
local seeds = {
  1, -0.0, 0/0, 1/0, 2^53, "bytes\0\255", true, false, {}, {1, 2, nil, 4}, {a = {b = {c = "d"}}},
  9007199254740993LL, 18446744073709551615ULL, setmetatable({x = 1}, {__index = {y = 2}}),
  {[true] = 1, [2.5] = "x", ["key with space"] = {}},
}
local cyc = {}; cyc.self = cyc; cyc[1] = cyc; seeds[#seeds + 1] = cyc
local shared = {1}; seeds[#seeds + 1] = {shared, shared, k = shared}
local up = 1; seeds[#seeds + 1] = {function() up = up + 1 return up end, function() return up end}
seeds[#seeds + 1] = string.format
seeds[#seeds + 1] = string
for i, v in ipairs(seeds) do
  local b = wire.encode(v)
  local f = io.open("corpus/v" .. i, "wb") f:write("\0" .. b) f:close()
  f = io.open("corpus/f" .. i, "wb") f:write("\1" .. wire.frame(4, b) .. wire.frame(5, b)) f:close()
end
local f = io.open("corpus/hello", "wb") f:write("\2" .. wire.hello()) f:close()
