-- sky.wire from Lua: a value zoo that crosses into another skyrun process and back, user modules
-- travelling as source, reducers for userdata, refusals naming the path.
local T = require "testlib"
local wire = require "sky.wire"

-- Sends v to a fresh `skyrun` process that decodes it, runs `code` on it (as function body with
-- `v` bound) and sends the result back.
local function through_process(v, code)
  local dir = T.tmpdir()
  T.write_file(dir .. "/in", wire.encode(v))
  local script = [[
    local wire = require "sky.wire"
    local f = assert(io.open(arg[1] .. "/in", "rb")) local v = wire.decode(f:read("*a")) f:close()
    local r = (function(v) ]] .. code .. [[ end)(v)
    local o = assert(io.open(arg[1] .. "/out", "wb")) o:write(wire.encode(r)) o:close()
  ]]
  T.write_file(dir .. "/peer.lua", script)
  local out, err, rc = T.skyrun({ dir .. "/peer.lua", dir })
  T.eq(rc, 0, "peer failed: " .. err .. out)
  return wire.decode(T.read_file(dir .. "/out"))
end

T.test("a value zoo crosses into another process and back equal", function()
  local shared = { "shared" }
  local zoo = {
    n = 42, f = 0.1, negzero = -0.0, inf = math.huge, ninf = -math.huge, nan = 0 / 0,
    big = 2 ^ 53 + 1 == 2 ^ 53 and 9007199254740993LL or nil, ubig = 18446744073709551615ULL,
    s = "bytes\0\1\255 and utf-8 \xe2\x86\x92", yes = true, no = false,
    holes = { 1, nil, 3, nil, 5 }, a = shared, b = shared,
  }
  zoo.cycle = zoo
  local r = through_process(zoo, "return v")
  T.eq(r.n, 42); T.eq(r.f, 0.1); T.eq(1 / r.negzero, -math.huge); T.eq(r.inf, math.huge)
  T.eq(r.ninf, -math.huge); T.ok(r.nan ~= r.nan); T.eq(r.s, zoo.s); T.eq(r.yes, true); T.eq(r.no, false)
  T.eq(tostring(r.big), "9007199254740993LL"); T.eq(tostring(r.ubig), "18446744073709551615ULL")
  T.eq(r.holes[1], 1); T.eq(r.holes[2], nil); T.eq(r.holes[3], 3); T.eq(r.holes[5], 5)
  T.ok(r.a == r.b, "shared reference stays shared"); T.ok(r.cycle == r, "cycle kept")
end)

T.test("nested closures sharing an upvalue stay shared on the other side", function()
  local count = 0
  local counter = {}
  function counter.inc() count = count + 1; return count end
  function counter.get() return count end
  local function make_adder(k) return function(x) return x + k + counter.get() end end
  local add10 = make_adder(10)
  local r = through_process({ counter = counter, add10 = add10 },
    "v.counter.inc() v.counter.inc() return { got = v.counter.get(), added = v.add10(1) }")
  T.eq(r.got, 2)
  T.eq(r.added, 13) -- the adder's counter is the same upvalue the other closures changed
  T.eq(count, 0, "the driver's upvalue is untouched")
end)

T.test("a function returned from the peer runs here with its upvalues", function()
  local r = through_process(5, "local base = v return function(x) return base * x end")
  T.eq(r(7), 35)
end)

T.test("a user module the peer cannot find travels as its source", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/mylocalplugin.lua", "local M = {} function M.twice(x) return 2 * x end return M")
  package.path = dir .. "/?.lua;" .. package.path
  local mod = require "mylocalplugin"
  local r = through_process(function(x) return mod.twice(x) end, "return v(21)")
  T.eq(r, 42)
  -- An embedded module travels by name only.
  local bytes = wire.encode(require "sky.inspect")
  T.ok(#bytes < 40, "embedded module by name: " .. #bytes .. " bytes")
end)

T.test("a reducer registered by metatable name rebuilds a userdata", function()
  local u = newproxy(true)
  getmetatable(u).path = "/models/tok.json"
  debug.getregistry()["test.Tokenizer"] = getmetatable(u)
  wire.register("test.Tokenizer", function(x)
    local p = getmetatable(x).path
    return function(path) return { rebuilt_from = path } end, p
  end)
  local r = through_process({ tok = u }, "return v.tok")
  T.eq(r, { rebuilt_from = "/models/tok.json" })
end)

T.test("unsendable values are refused with the path to them", function()
  local db = { conn = io.stdout }
  local f = function() return db end
  T.raises(function() wire.encode(f, "") end, "cannot send upvalue 'db' \u{2192} field 'conn': userdata (FILE*: open file)")
  T.raises(function() wire.encode({ co = coroutine.create(print) }, "argument #2") end,
    "cannot send argument #2 \u{2192} field 'co': coroutine")
  local cf = newproxy(false)
  T.raises(function() wire.encode({ [1] = { cf } }) end, "cannot send value \u{2192} [1] \u{2192} [1]: userdata")
end)

T.test("the handshake text carries the versions and a mismatch names both", function()
  local v = wire.parse_hello(wire.hello())
  T.eq(v.skyrun, wire.versions().skyrun)
  T.eq(wire.mismatch(v, v), nil)
  local msg = wire.mismatch(wire.versions(), { skyrun = "0.0.9" })
  T.contains(msg, "driver runs skyrun " .. v.skyrun)
  T.contains(msg, "worker runs skyrun 0.0.9")
  T.raises(function() wire.parse_hello("garbage") end, "not a skyrun worker greeting")
end)

T.run()
