// wire: values encoded on one LuaJIT state and decoded on another; malformed bytes; frames; the
// handshake text and its version check.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "host/runtime.hpp"
#include "wire/wire.hpp"

namespace {

struct State {
  lua_State* L = sky::runtime_new_state();
  ~State() { sky::runtime_free_state(L); }
  // Runs code that leaves one value on the stack.
  void push(const char* code) {
    REQUIRE(luaL_loadstring(L, code) == 0);
    REQUIRE(lua_pcall(L, 0, 1, 0) == 0);
  }
  // Runs code with the value at the top bound to global `v`; returns its string result.
  std::string check(const char* code) {
    lua_setglobal(L, "v");
    if (luaL_loadstring(L, code) != 0 || lua_pcall(L, 0, 1, 0) != 0) return std::string("error: ") + lua_tostring(L, -1);
    std::string s = lua_tostring(L, -1) ? lua_tostring(L, -1) : "(not a string)";
    lua_pop(L, 1);
    return s;
  }
};

std::string encode_code(State& s, const char* code, const char* root = "value") {
  s.push(code);
  sky::wire::EncodeOptions o;
  o.root = root;
  std::string bytes = sky::wire::encode(s.L, -1, o);
  lua_pop(s.L, 1);
  return bytes;
}

}  // namespace

TEST_CASE("numbers cross between two states bit for bit") {
  State a, b;
  std::string bytes = encode_code(a, "return {-0.0, 1/0, -1/0, 0/0, 2^53, 2^53+2, 0.1, -7, 1e308, 5e-324}");
  sky::wire::decode(b.L, bytes);
  CHECK(b.check("return string.format('%s %s %s %s %.17g %.17g %.17g %d %.17g %.17g %s', 1/v[1], v[2], v[3], "
                "tostring(v[4] ~= v[4]), v[5], v[6], v[7], v[8], v[9], v[10], #v)") ==
        "-inf inf -inf true 9007199254740992 9007199254740994 0.10000000000000001 -7 1e+308 4.9406564584124654e-324 10");
}

TEST_CASE("64-bit integer cdata keep their type and value") {
  State a, b;
  std::string bytes = encode_code(a, "return {-9007199254740993LL, 18446744073709551615ULL, 9007199254740993LL}");
  sky::wire::decode(b.L, bytes);
  CHECK(b.check("return tostring(v[1]) .. ' ' .. tostring(v[2]) .. ' ' .. tostring(v[3])") ==
        "-9007199254740993LL 18446744073709551615ULL 9007199254740993LL");
}

TEST_CASE("strings keep every byte") {
  State a, b;
  std::string bytes = encode_code(a, "local t = {} for i = 0, 255 do t[#t+1] = string.char(i) end return table.concat(t)");
  sky::wire::decode(b.L, bytes);
  size_t n = 0;
  const char* s = lua_tolstring(b.L, -1, &n);
  REQUIRE(n == 256);
  for (int i = 0; i < 256; ++i) CHECK(static_cast<unsigned char>(s[i]) == i);
}

TEST_CASE("tables keep cycles, shared references, holes and metatables") {
  State a, b;
  std::string bytes = encode_code(a,
      "local shared = {name='s'} local t = {1, nil, 3, shared, [10]='ten', k=shared, [shared]='as key'}"
      " t.self = t setmetatable(t, {__index = function(_, k) return 'missing ' .. k end}) return t");
  sky::wire::decode(b.L, bytes);
  CHECK(b.check("return tostring(v[1]) .. tostring(rawget(v, 2)) .. tostring(v[3]) .. tostring(v[10]) .. "
                "tostring(v[4] == v.k) .. tostring(v.self == v) .. v[v.k] .. ' ' .. v.zzz") ==
        "1nil3tentruetrueas key missing zzz");
}

TEST_CASE("closures keep their upvalues, shared upvalues stay shared") {
  State a, b;
  std::string bytes = encode_code(a,
      "local n = 40 local function inc() n = n + 1 return n end local function get() return n end"
      " local function fact(k) if k <= 1 then return 1 end return k * fact(k - 1) end"
      " return {inc = inc, get = get, fact = fact}");
  sky::wire::decode(b.L, bytes);
  CHECK(b.check("v.inc() v.inc() return v.get() .. ' ' .. v.fact(5)") == "42 120");
}

TEST_CASE("tracebacks of decoded functions keep file and line") {
  State a, b;
  const char* src = "\n\nreturn function() error('boom') end";
  REQUIRE(luaL_loadbuffer(a.L, src, strlen(src), "@job.lua") == 0);
  REQUIRE(lua_pcall(a.L, 0, 1, 0) == 0);
  std::string bytes = sky::wire::encode(a.L, -1);
  sky::wire::decode(b.L, bytes);
  CHECK(b.check("local ok, e = pcall(v) return e") == "job.lua:3: boom");
}

TEST_CASE("standard library functions and modules travel by name") {
  State a, b;
  std::string bytes = encode_code(a, "return {string.format, string, print}");
  sky::wire::decode(b.L, bytes);
  CHECK(b.check("return tostring(v[1] == string.format) .. tostring(v[2] == string) .. tostring(v[3] == print)") ==
        "truetruetrue");
}

TEST_CASE("functions carry the globals they read, except C functions and modules") {
  State a, b;
  std::string bytes = encode_code(a,
      "function twice(x) return 2 * x end LIMIT = 7 return function(x) return math.min(twice(x), LIMIT) end");
  sky::wire::decode(b.L, bytes);
  CHECK(b.check("return v(3) .. ' ' .. v(5) .. ' ' .. tostring(rawequal(math, package.loaded.math))") == "6 7 true");
  a.push("FILE_HANDLE = io.stdout return function() return FILE_HANDLE end");
  CHECK_THROWS_WITH_AS(sky::wire::encode(a.L, -1), "cannot send value \xe2\x86\x92 global 'FILE_HANDLE': userdata (FILE*: open file)",
                       sky::wire::WireError);
}

TEST_CASE("unsendable values are refused with their path") {
  State a;
  a.push("local f = io.stdout local db = {conn = f} return function() return db end");
  std::string msg;
  try {
    sky::wire::EncodeOptions o;
    o.root = "";
    sky::wire::encode(a.L, -1, o);
  } catch (const sky::wire::WireError& e) {
    msg = e.what();
  }
  CHECK(msg == "cannot send upvalue 'db' \xe2\x86\x92 field 'conn': userdata (FILE*: open file)");
  CHECK(lua_gettop(a.L) == 1);
  a.push("return {co = coroutine.create(function() end)}");
  CHECK_THROWS_WITH_AS(sky::wire::encode(a.L, -1), "cannot send value \xe2\x86\x92 field 'co': coroutine",
                       sky::wire::WireError);
  a.push("local ffi = require 'ffi' return {p = ffi.new('int[2]')}");
  CHECK_THROWS_WITH_AS(sky::wire::encode(a.L, -1), "cannot send value \xe2\x86\x92 field 'p': cdata (cdata<int [2]>)",
                       sky::wire::WireError);
}

TEST_CASE("a registered userdata codec carries a handle as bytes") {
  State a, b;
  sky::wire::register_userdata_codec(
      "skyrun.test.Path",
      {[](lua_State* L, int idx) { return std::string(static_cast<const char*>(lua_touserdata(L, idx))); },
       [](lua_State* L, std::string_view s) {
         char* p = static_cast<char*>(lua_newuserdata(L, s.size() + 1));  // [u]
         memcpy(p, s.data(), s.size());
         p[s.size()] = 0;
         luaL_newmetatable(L, "skyrun.test.Path");
         lua_setmetatable(L, -2);
       },
       "path"});
  char* p = static_cast<char*>(lua_newuserdata(a.L, 16));
  strcpy(p, "/tmp/tok.json");
  luaL_newmetatable(a.L, "skyrun.test.Path");
  lua_setmetatable(a.L, -2);
  std::string bytes = sky::wire::encode(a.L, -1);
  sky::wire::decode(b.L, bytes);
  REQUIRE(lua_type(b.L, -1) == LUA_TUSERDATA);
  CHECK(std::string(static_cast<const char*>(lua_touserdata(b.L, -1))) == "/tmp/tok.json");
}

TEST_CASE("untrusted decoding refuses userdata codecs unless they only rebuild data") {
  State a, b;
  auto make = [](bool untrusted_ok) {
    return sky::wire::UserdataCodec{
        [](lua_State* L, int idx) { return std::string(static_cast<const char*>(lua_touserdata(L, idx))); },
        [](lua_State* L, std::string_view s) { lua_pushlstring(L, s.data(), s.size()); }, "path", untrusted_ok};
  };
  sky::wire::register_userdata_codec("skyrun.test.Opener", make(false));
  sky::wire::register_userdata_codec("skyrun.test.Plain", make(true));
  for (const char* name : {"skyrun.test.Opener", "skyrun.test.Plain"}) {
    char* p = static_cast<char*>(lua_newuserdata(a.L, 8));
    strcpy(p, "/etc");
    luaL_newmetatable(a.L, name);
    lua_setmetatable(a.L, -2);
  }
  std::string plain = sky::wire::encode(a.L, -1), opener = sky::wire::encode(a.L, -2);
  sky::wire::DecodeOptions untrusted;
  untrusted.allow_code = false;
  CHECK_THROWS_WITH_AS(sky::wire::decode(b.L, opener, untrusted),
                       "refused to decode userdata 'skyrun.test.Opener' from untrusted bytes", sky::wire::WireError);
  CHECK(lua_gettop(b.L) == 0);
  sky::wire::decode(b.L, plain, untrusted);
  CHECK(std::string(lua_tostring(b.L, -1)) == "/etc");
  // and a data-only encoder refuses the first before anything is sent
  sky::wire::EncodeOptions data_only;
  data_only.allow_code = false;
  CHECK_THROWS_WITH_AS(sky::wire::encode(a.L, -2, data_only),
                       doctest::Contains("cannot send value: userdata (path) (only data may travel here"),
                       sky::wire::WireError);
}

TEST_CASE("every truncation and corruption of a valid encoding is an error, never a crash") {
  State a, b;
  std::string bytes = encode_code(a, "local t = {1, 'two', {3, x = 4.5}, true, false, k = -0.0} t.t = t return t");
  for (size_t n = 0; n < bytes.size(); ++n) {
    CHECK_THROWS_AS(sky::wire::decode(b.L, std::string_view(bytes.data(), n)), sky::wire::WireError);
    CHECK(lua_gettop(b.L) == 0);
  }
  std::mt19937 rng(7);
  sky::wire::DecodeOptions untrusted;
  untrusted.allow_code = false;
  for (int i = 0; i < 2000; ++i) {
    std::string c = bytes;
    c[rng() % c.size()] = static_cast<char>(rng());
    try {
      sky::wire::decode(b.L, c, untrusted);
      lua_pop(b.L, 1);
    } catch (const sky::wire::WireError&) {
    }
    CHECK(lua_gettop(b.L) == 0);
  }
  CHECK_THROWS_WITH_AS(sky::wire::decode(b.L, bytes + "x"), "malformed value: trailing bytes", sky::wire::WireError);
  std::string deep(100000, '\x06');  // tables nested 100,000 deep
  CHECK_THROWS_AS(sky::wire::decode(b.L, deep), sky::wire::WireError);
}

TEST_CASE("untrusted decoding refuses code") {
  State a, b;
  std::string bytes = encode_code(a, "return function() return 1 end");
  sky::wire::DecodeOptions untrusted;
  untrusted.allow_code = false;
  CHECK_THROWS_WITH_AS(sky::wire::decode(b.L, bytes, untrusted), "refused to decode a function from untrusted bytes",
                       sky::wire::WireError);
}

TEST_CASE("frames are length-prefixed and parse only when complete") {
  std::string buf;
  sky::wire::frame_append(buf, 4, "hello");
  sky::wire::frame_append(buf, 5, "");
  uint8_t kind = 0;
  std::string_view payload;
  CHECK(sky::wire::frame_parse(std::string_view(buf.data(), 9), kind, payload) == 0);
  REQUIRE(sky::wire::frame_parse(buf, kind, payload) == 10);
  CHECK(kind == 4);
  CHECK(payload == "hello");
  REQUIRE(sky::wire::frame_parse(std::string_view(buf).substr(10), kind, payload) == 5);
  CHECK(kind == 5);
  CHECK(payload.empty());
  CHECK_THROWS_AS(sky::wire::frame_parse(std::string("\0\0\0\0x", 5), kind, payload), sky::wire::WireError);
  CHECK_THROWS_AS(sky::wire::frame_parse(std::string("\xff\xff\xff\xff", 4), kind, payload), sky::wire::WireError);
}

TEST_CASE("the handshake names both versions when they differ") {
  const sky::wire::Versions& here = sky::wire::local_versions();
  sky::wire::Versions parsed = sky::wire::hello_decode(sky::wire::hello_encode(here));
  CHECK(parsed.skyrun == here.skyrun);
  CHECK(parsed.bytecode == here.bytecode);
  CHECK(sky::wire::versions_mismatch(here, parsed).empty());
  sky::wire::Versions old = here;
  old.skyrun = "0.0.9";
  old.luajit = "LuaJIT 2.1.0-beta2";
  std::string m = sky::wire::versions_mismatch(here, old);
  CHECK(m.find("driver runs skyrun " + here.skyrun + " (" + here.luajit) != std::string::npos);
  CHECK(m.find("worker runs skyrun 0.0.9 (LuaJIT 2.1.0-beta2") != std::string::npos);
  CHECK_THROWS_WITH_AS(sky::wire::hello_decode("SSH-2.0-OpenSSH\r\n"),
                       "not a skyrun worker greeting (got \"SSH-2.0-OpenSSH??\")", sky::wire::WireError);
}
