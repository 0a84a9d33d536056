// The binding layer: exceptions at the boundary, classes, argument checks, option tables.
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

#include "host/bind.hpp"
#include "host/runtime.hpp"

namespace {

struct Counter {
  int value = 0;
  static int destroyed;
  ~Counter() { ++destroyed; }
};
int Counter::destroyed = 0;

extern const sky::ClassSpec kCounterSpec;

int counter_new(lua_State* L) {
  sky::Options o(L, 1, "Counter", {{"start", sky::OptType::Integer}});
  auto c = std::make_shared<Counter>();
  c->value = static_cast<int>(o.integer("start", 0));
  sky::class_push(L, kCounterSpec, c);
  return 1;
}
int counter_add(lua_State* L) {
  auto& c = sky::class_check<Counter>(L, 1, kCounterSpec);
  c.value += static_cast<int>(sky::check_int64(L, 2));
  return 0;
}
int counter_close(lua_State* L) {
  sky::class_close(L, 1, kCounterSpec);
  return 0;
}
int counter_get_value(lua_State* L) {
  lua_pushinteger(L, sky::class_check<Counter>(L, 1, kCounterSpec).value);
  return 1;
}
int counter_set_value(lua_State* L) {
  sky::class_check<Counter>(L, 1, kCounterSpec).value = static_cast<int>(sky::check_int64(L, 3));
  return 0;
}
int counter_fail(lua_State* L) { throw std::out_of_range("counter overflow at 7"); }

const sky::ClassSpec kCounterSpec{
    "skyrun.test.Counter",
    "Counter",
    {{"add", sky::safe<counter_add>}, {"close", sky::safe<counter_close>}, {"fail", sky::safe<counter_fail>}},
    {{"value", sky::safe<counter_get_value>, sky::safe<counter_set_value>}},
};

struct State {
  lua_State* L = sky::runtime_new_state();
  State() {
    lua_pushcfunction(L, sky::safe<counter_new>);
    lua_setglobal(L, "Counter");
  }
  ~State() { sky::runtime_free_state(L); }
  // Runs code; returns "" on success or the error message.
  std::string run(const char* code) {
    if (luaL_loadstring(L, code) != 0) {
      std::string m = lua_tostring(L, -1);
      lua_pop(L, 1);
      return m;
    }
    if (!sky::runtime_pcall(L, 0, 0)) {
      std::string m = lua_tostring(L, -1);
      lua_pop(L, 1);
      return m;
    }
    return "";
  }
};

}  // namespace

TEST_CASE("a C++ exception thrown in a bound function becomes a Lua error with its message") {
  State s;
  CHECK(s.run("local c = Counter(); local ok, e = pcall(c.fail, c); assert(not ok); "
              "assert(e:find('counter overflow at 7', 1, true), e)") == "");
  std::string err = s.run("Counter():fail()");
  CHECK(err.find("counter overflow at 7") != std::string::npos);
  CHECK(lua_gettop(s.L) == 0);
}

int throw_long_utf8(lua_State*) {
  std::string m;
  while (m.size() < 3000) m += "\xc3\xa9";  // é, two bytes each: the 2047-byte cut falls inside one
  throw std::runtime_error(m);
}

TEST_CASE("a message longer than the error buffer is cut on a UTF-8 character boundary") {
  State s;
  lua_pushcfunction(s.L, sky::safe<throw_long_utf8>);
  lua_setglobal(s.L, "long_error");
  REQUIRE(s.run("LONG = select(2, pcall(long_error))") == "");
  lua_getglobal(s.L, "LONG");
  std::string err = lua_tostring(s.L, -1);
  lua_pop(s.L, 1);
  REQUIRE(err.size() > 2000);
  CHECK(err.size() <= 2047 + 64);
  CHECK(err.back() == '\xa9');  // ends with a whole "é"
}

TEST_CASE("bound objects have methods, properties, tostring and are freed by the collector") {
  int before = Counter::destroyed;
  int64_t live = sky::class_live_handles();
  {
    State s;
    CHECK(s.run("local c = Counter{start = 5}; c:add(2); assert(c.value == 7); c.value = 1; assert(c.value == 1);"
                "assert(tostring(c):match('^Counter: '))") == "");
    CHECK(s.run("collectgarbage(); collectgarbage()") == "");
    CHECK(Counter::destroyed == before + 1);
    CHECK(sky::class_live_handles() == live);
  }
}

TEST_CASE("a closed object raises an error instead of crashing") {
  State s;
  std::string err = s.run("local c = Counter(); c:close(); c:add(1)");
  CHECK(err.find("Counter is closed") != std::string::npos);
  CHECK(s.run("local c = Counter(); c:close(); assert(tostring(c):find('closed'))") == "");
}

TEST_CASE("argument errors read like Lua's own") {
  State s;
  std::string err = s.run("local c = Counter(); c:add('x')");
  CHECK(err.find("bad argument #1 to 'add' (number expected, got string)") != std::string::npos);
  err = s.run("local c = Counter(); c.add({}, 1)");
  CHECK(err.find("Counter expected, got table") != std::string::npos);
  err = s.run("local c = Counter(); c:add(1.5)");
  CHECK(err.find("number has no integer representation") != std::string::npos);
}

TEST_CASE("setting an unknown field of a bound object is an error naming it") {
  State s;
  std::string err = s.run("local c = Counter(); c.nope = 1");
  CHECK(err.find("cannot set field 'nope' of Counter") != std::string::npos);
}

TEST_CASE("the option reader suggests the closest name for an unknown key") {
  State s;
  std::string err = s.run("Counter{strat = 1}");
  CHECK(err.find("unknown option 'strat' to 'Counter' (did you mean 'start'?)") != std::string::npos);
  err = s.run("Counter{start = 'one'}");
  CHECK(err.find("option 'start' to 'Counter' must be an integer (got string)") != std::string::npos);
}

TEST_CASE("suggest_closest follows difflib's 0.6 ratio") {
  std::vector<std::string> names{"num_train_epochs", "learning_rate", "max_steps", "output_dir"};
  CHECK(sky::suggest_closest("num_epochs", names) == "num_train_epochs");
  CHECK(sky::suggest_closest("learnig_rate", names) == "learning_rate");
  CHECK(sky::suggest_closest("zzz", names).empty());
}
