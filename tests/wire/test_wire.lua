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

-- True when s is valid UTF-8 (no character cut, no stray continuation byte).
local function valid_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or (c >= 0xc2 and c < 0xe0) and 2 or (c >= 0xe0 and c < 0xf0) and 3 or
      (c >= 0xf0 and c < 0xf5) and 4 or nil
    if not len or i + len - 1 > n then return false end
    for k = i + 1, i + len - 1 do
      local b = s:byte(k)
      if b < 0x80 or b > 0xbf then return false end
    end
    i = i + len
  end
  return true
end

T.test("a deep table's refusal names its first and last steps and stays whole UTF-8", function()
  local key = "\u{043a}\u{043b}\u{044e}\u{0447} \u{2192} \u{1f511}"  -- "ключ → 🔑": multibyte characters
  local root = {}
  local t = root
  for _ = 1, 260 do
    t[key] = {}
    t = t[key]
  end
  local err = T.raises(function() wire.encode(root, "argument #1") end, "nested deeper than 200 levels")
  T.ok(valid_utf8(err), "the message is valid UTF-8")
  T.ok(#err < 1000, "the message is " .. #err .. " bytes")
  T.contains(err, "cannot send argument #1 \u{2192} [\"" .. key .. "\"]")
  T.contains(err, "\u{2026} 189 more \u{2026}")
  -- a key longer than its label keeps whole characters
  local long = { [string.rep("\u{00e9}", 30)] = coroutine.create(print) }
  err = T.raises(function() wire.encode(long) end, "coroutine")
  T.ok(valid_utf8(err), "a long key is cut on a character boundary: " .. err)
end)

T.test("data-only encoding refuses code with its path, as an untrusting receiver would", function()
  local mod = require "sky.inspect"
  T.raises(function() wire.encode({ ok = true, f = function() end }, "result", nil, true) end,
    "cannot send result \u{2192} field 'f': function (only data may travel here")
  T.raises(function() wire.encode({ print }, "result", nil, true) end, "[1]: C function (only data may travel here")
  T.raises(function() wire.encode({ m = mod }, "result", nil, true) end, "field 'm': loaded module 'sky.inspect'")
  local data = { 1, "two", { three = 3.5 }, true, 9007199254740993LL }
  T.eq(wire.decode(wire.encode(data, "result", nil, true), nil, true)[3].three, 3.5)
  -- and decoding as data refuses what code-carrying encodings hold
  T.raises(function() wire.decode(wire.encode({ f = function() end }), nil, true) end,
    "refused to decode a function from untrusted bytes")
  T.raises(function() wire.decode(wire.encode(mod), nil, true) end, "refused to decode a module reference")
end)

T.test("frames from workers have their kind and header checked before anything acts on them", function()
  local K = require "sky.protocol"
  T.eq(K.RESULT, 5)
  T.eq(K[5], "RESULT")
  T.eq({ wire.worker_frame(K.RESULT, "12:body") }, { 12, 0, "body" })
  T.eq({ wire.worker_frame(K.BATCH_RESULT, "3:17:v") }, { 3, 17, "v" })
  T.eq({ wire.worker_frame(K.STDOUT, "12:raw") }, { 0, 0, "12:raw" })
  T.raises(function() wire.worker_frame(K.RESULT, "body") end, "a RESULT frame without its task id")
  T.raises(function() wire.worker_frame(K.RESULT, "012:x") end, "without its task id")
  T.raises(function() wire.worker_frame(K.RESULT, "1234567890123456:x") end, "without its task id")
  T.raises(function() wire.worker_frame(K.BATCH_RESULT, "3:v") end, "a BATCH_RESULT frame without its map id and first item")
  T.raises(function() wire.worker_frame(K.TASK, "1:x") end, "a TASK frame, which only the driver sends")
  T.raises(function() wire.worker_frame(99, "") end, "a frame of unknown kind 99")
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
