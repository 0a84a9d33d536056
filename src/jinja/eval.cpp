// The interpreter: walks the tree with jinja2's scoping (a fresh scope per loop iteration and per
// macro call, `if` keeps its scope, macros see their defining scope as it is when they run),
// loop objects, macros with caller/varargs/kwargs, output buffers for captures, and the
// AssistantTracker's `{% generation %}` spans.
#include <ctime>

#include "jinja/internal.hpp"

namespace sky::jinja {

// ---- loop and macro objects -------------------------------------------------------------------

namespace {

struct LoopObject : Object {
  const List* items = nullptr;
  size_t index0 = 0;
  Value last_changed;
  bool has_last_changed = false;
  const char* type_name() const override { return "LoopContext"; }
  std::string module() const override { return "jinja2.runtime"; }
  std::string repr() const override {
    return "<LoopContext " + std::to_string(index0 + 1) + "/" + std::to_string(items->size()) + ">";
  }
  bool get_attr(std::string_view name, Value& out) override {
    int64_t n = static_cast<int64_t>(items->size()), i = static_cast<int64_t>(index0);
    if (name == "index") out = Value::integer(i + 1);
    else if (name == "index0") out = Value::integer(i);
    else if (name == "revindex") out = Value::integer(n - i);
    else if (name == "revindex0") out = Value::integer(n - i - 1);
    else if (name == "first") out = Value::boolean(i == 0);
    else if (name == "last") out = Value::boolean(i == n - 1);
    else if (name == "length") out = Value::integer(n);
    else if (name == "depth") out = Value::integer(1);
    else if (name == "depth0") out = Value::integer(0);
    else if (name == "previtem")
      out = i > 0 ? (*items)[static_cast<size_t>(i - 1)] : undefined_hint("there is no previous item");
    else if (name == "nextitem")
      out = i + 1 < n ? (*items)[static_cast<size_t>(i + 1)] : undefined_hint("there is no next item");
    else if (name == "cycle") {
      size_t at = index0;
      out = make_function("cycle", [at](Interp&, Args& a) -> Value {
        if (a.pos.empty()) type_error("no items for cycling given");
        return a.pos[at % a.pos.size()];
      });
    } else if (name == "changed") {
      LoopObject* self = this;
      out = make_function("changed", [self](Interp&, Args& a) -> Value {
        Value now = Value::tuple(a.pos);
        if (self->has_last_changed && py_eq(self->last_changed, now)) return Value::boolean(false);
        self->last_changed = now;
        self->has_last_changed = true;
        return Value::boolean(true);
      });
    } else {
      return false;
    }
    return true;
  }
  bool callable() const override { return true; }
  Value call(Interp&, Args&) override {
    raise("TypeError", "Tried to call non recursive loop.  Maybe you forgot the 'recursive' modifier.");
  }
};

}  // namespace

struct MacroObject : Object {
  std::shared_ptr<MacroDef> def;
  std::shared_ptr<Scope> closure;
  const char* type_name() const override { return "Macro"; }
  std::string module() const override { return "jinja2.runtime"; }
  std::string repr() const override { return "<Macro '" + def->name + "'>"; }
  bool callable() const override { return true; }
  bool get_attr(std::string_view name, Value& out) override {
    if (name == "name") { out = Value::string(def->name); return true; }
    if (name == "arguments") {
      List a;
      for (const auto& p : def->params) a.push_back(Value::string(p));
      out = Value::tuple(std::move(a));
      return true;
    }
    if (name == "catch_kwargs") { out = Value::boolean(def->uses_kwargs); return true; }
    if (name == "catch_varargs") { out = Value::boolean(def->uses_varargs); return true; }
    if (name == "caller") { out = Value::boolean(def->uses_caller); return true; }
    return false;
  }
  Value call(Interp& in, Args& args) override { return in.call_macro(def, closure, args, Value()); }
};

// ---- the interpreter ------------------------------------------------------------------------------

namespace {

// Restores the current scope when it ends; enter() makes a fresh child of `parent` current.
class ScopeGuard {
 public:
  explicit ScopeGuard(std::shared_ptr<Scope>& current) : current_(current), saved_(current) {}
  ~ScopeGuard() { current_ = saved_; }
  ScopeGuard(const ScopeGuard&) = delete;
  ScopeGuard& operator=(const ScopeGuard&) = delete;
  const std::shared_ptr<Scope>& saved() const { return saved_; }
  Scope& enter(const std::shared_ptr<Scope>& parent) {
    current_ = std::make_shared<Scope>();
    current_->parent = parent;
    return *current_;
  }
  void leave() { current_ = saved_; }

 private:
  std::shared_ptr<Scope>& current_;
  std::shared_ptr<Scope> saved_;
};

}  // namespace

Interp::Interp(const Program& prog, const Dict& vars, const RenderOptions& opts)
    : prog_(prog), vars_(vars), opts_(opts), scope_(std::make_shared<Scope>()) {}

RenderResult Interp::run() {
  exec(prog_.body);
  RenderResult r;
  r.text = std::move(out_);
  r.generation_spans = std::move(spans_);
  return r;
}

std::time_t Interp::now() const { return opts_.now ? *opts_.now : std::time(nullptr); }

void Interp::write(std::string_view s) {
  if (!sinks_.empty()) {
    sinks_.back()->append(s);
    return;
  }
  out_.append(s);
  top_writes_++;
}

std::string Interp::capture(const Body& body) {
  std::string buf;
  sinks_.push_back(&buf);
  struct Pop {
    std::vector<std::string*>& s;
    ~Pop() { s.pop_back(); }
  } pop{sinks_};
  exec(body);
  return buf;
}

Value Interp::lookup(const std::string& name) {
  for (Scope* s = scope_.get(); s; s = s->parent.get())
    if (const Value* v = s->vars.find(std::string_view(name))) return *v;
  if (const Value* v = vars_.find(std::string_view(name))) return *v;
  Value g;
  if (find_global(name, g)) return g;
  return undefined_name(name);
}

Interp::Flow Interp::exec(const Body& body) {
  for (const auto& s : body) {
    Flow f = exec_stmt(*s);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

static void unpack_into(const Value& v, size_t want, List& out) {
  out = iterate(v);
  if (out.size() < want)
    raise("ValueError", "not enough values to unpack (expected " + std::to_string(want) + ", got " +
                            std::to_string(out.size()) + ")");
  if (out.size() > want) raise("ValueError", "too many values to unpack (expected " + std::to_string(want) + ")");
}

void Interp::assign(const Target& t, const Value& v) {
  switch (t.kind) {
    case Target::Kind::Name:
      scope_->vars.set(Value::string(t.name), v);
      return;
    case Target::Kind::NsAttr: {
      Value ns = lookup(t.name);
      if (!ns.is_object() || !ns.obj().is_namespace())
        raise("TemplateRuntimeError", "cannot assign attribute on non-namespace object");
      static_cast<Namespace&>(ns.obj()).attrs.set(Value::string(t.attr), v);
      return;
    }
    case Target::Kind::Tuple: {
      List parts;
      unpack_into(v, t.items.size(), parts);
      for (size_t i = 0; i < t.items.size(); i++) assign(t.items[i], parts[i]);
      return;
    }
  }
}

Interp::Flow Interp::exec_stmt(const Stmt& s) {
  switch (s.kind) {
    case StmtKind::Data:
      write(s.text);
      return Flow::Normal;
    case StmtKind::Output: {
      Value v = eval(*s.expr);
      if (v.is_string()) write(v.str());
      else write(py_str(v));
      return Flow::Normal;
    }
    case StmtKind::If:
      for (const auto& [test, body] : s.branches)
        if (!test || truthy(eval(*test))) return exec(body);
      return Flow::Normal;
    case StmtKind::For:
      return exec_for(s);
    case StmtKind::Set:
      assign(s.target, eval(*s.expr));
      return Flow::Normal;
    case StmtKind::SetBlock: {
      Value v = Value::string(capture(s.body));
      for (const auto& f : s.filters) {
        Args a = eval_args(*f);
        v = apply_filter(f->name, v, a);
      }
      assign(s.target, v);
      return Flow::Normal;
    }
    case StmtKind::FilterBlock: {
      Value v = Value::string(capture(s.body));
      for (const auto& f : s.filters) {
        Args a = eval_args(*f);
        v = apply_filter(f->name, v, a);
      }
      write(py_str(v));
      return Flow::Normal;
    }
    case StmtKind::Macro: {
      auto m = std::make_shared<MacroObject>();
      m->def = s.macro;
      m->closure = scope_;
      scope_->vars.set(Value::string(s.macro->name), Value::object(m));
      return Flow::Normal;
    }
    case StmtKind::CallBlock: {
      auto caller = std::make_shared<MacroObject>();
      caller->def = s.macro;
      caller->closure = scope_;
      const Expr& call = *s.expr;
      Value fn = eval(*call.a);
      Args args = eval_args(call);
      args.kw.emplace_back("caller", Value::object(caller));
      Value v = this->call(fn, args);
      write(py_str(v));
      return Flow::Normal;
    }
    case StmtKind::With: {
      std::vector<Value> values;
      for (const auto& [t, e] : s.with_assigns) values.push_back(eval(*e));
      ScopeGuard guard(scope_);
      guard.enter(guard.saved());
      for (size_t i = 0; i < values.size(); i++) assign(s.with_assigns[i].first, values[i]);
      return exec(s.body);
    }
    case StmtKind::Break:
      return Flow::Break;
    case StmtKind::Continue:
      return Flow::Continue;
    case StmtKind::Generation: {
      std::string rv = capture(s.body);
      if (opts_.track_generation && (top_writes_ > 0 || !spans_.empty())) {
        size_t start = out_.size();
        spans_.emplace_back(start, start + rv.size());
      }
      write(rv);
      return Flow::Normal;
    }
  }
  return Flow::Normal;
}

Interp::Flow Interp::exec_for(const Stmt& s) {
  Value seq = eval(*s.expr);
  List all = iterate(seq);
  ScopeGuard guard(scope_);
  List items;
  if (s.cond) {
    for (const Value& v : all) {
      guard.enter(guard.saved());
      assign(s.target, v);
      if (truthy(eval(*s.cond))) items.push_back(v);
    }
  } else {
    items = std::move(all);
  }
  if (items.empty()) {
    guard.leave();
    exec(s.else_body);
    return Flow::Normal;
  }
  auto loop = std::make_shared<LoopObject>();
  loop->items = &items;
  Value loop_value = Value::object(loop);
  for (size_t i = 0; i < items.size(); i++) {
    guard.enter(guard.saved()).vars.set(Value::string("loop"), loop_value);
    loop->index0 = i;
    assign(s.target, items[i]);
    Flow f = exec(s.body);
    if (f == Flow::Break) break;
  }
  return Flow::Normal;
}

// ---- expressions ------------------------------------------------------------------------------------

Args Interp::eval_args(const Expr& e) {
  Args a;
  for (const auto& x : e.items) a.pos.push_back(eval(*x));
  for (const auto& [k, x] : e.kwargs) a.kw.emplace_back(k, eval(*x));
  if (e.dyn_args) {
    for (const Value& v : iterate(eval(*e.dyn_args))) a.pos.push_back(v);
  }
  if (e.dyn_kwargs) {
    Value d = eval(*e.dyn_kwargs);
    if (!d.is_dict()) type_error("argument after ** must be a mapping, not " + std::string(py_type_name(d)));
    for (const auto& [k, v] : d.dict().entries) a.kw.emplace_back(py_str(k), v);
  }
  return a;
}

Value Interp::call(const Value& fn, Args& args) {
  if (fn.is_undefined()) raise_undefined(fn);
  if (fn.is_object() && fn.obj().callable()) {
    if (++depth_ > 200) {
      depth_ = 0;
      raise("RecursionError", "maximum recursion depth exceeded");
    }
    struct Depth {
      int& d;
      ~Depth() { if (d > 0) d--; }
    } dd{depth_};
    return fn.obj().call(*this, args);
  }
  type_error(std::string("'") + py_type_name(fn) + "' object is not callable");
}

Value Interp::call_macro(const std::shared_ptr<MacroDef>& m, const std::shared_ptr<Scope>& closure, Args& args,
                         const Value&) {
  const size_t n = m->params.size();
  std::vector<Value> bound(n);
  std::vector<bool> given(n, false);
  for (size_t i = 0; i < args.pos.size() && i < n; i++) {
    bound[i] = args.pos[i];
    given[i] = true;
  }
  Dict extra_kw;
  Value caller = Value::none();
  bool caller_given = false;
  for (auto& [k, v] : args.kw) {
    size_t at = n;
    for (size_t i = 0; i < n; i++)
      if (m->params[i] == k) at = i;
    if (at < n && !given[at]) {
      bound[at] = v;
      given[at] = true;
    } else if (k == "caller" && m->uses_caller && !caller_given) {
      caller = v;
      caller_given = true;
    } else if (m->uses_kwargs) {
      extra_kw.set(Value::string(k), v);
    } else if (at < n) {
      type_error("macro '" + m->name + "' got multiple values for argument '" + k + "'");
    } else if (k == "caller") {
      type_error("macro '" + m->name + "' was invoked with two values for the special caller argument. This is most likely a bug.");
    } else {
      type_error("macro '" + m->name + "' takes no keyword argument '" + k + "'");
    }
  }
  if (args.pos.size() > n && !m->uses_varargs)
    type_error("macro '" + m->name + "' takes not more than " + std::to_string(n) + " argument(s)");
  ScopeGuard guard(scope_);
  Scope* scope = &guard.enter(closure);
  const size_t first_default = n - m->defaults.size();
  for (size_t i = 0; i < n; i++) {
    Value v = bound[i];
    if (!given[i]) {
      if (i >= first_default) v = eval(*m->defaults[i - first_default]);
      else v = undefined_hint("parameter '" + m->params[i] + "' was not provided");
    }
    scope->vars.set(Value::string(m->params[i]), v);
  }
  if (m->uses_varargs) {
    List rest;
    for (size_t i = n; i < args.pos.size(); i++) rest.push_back(args.pos[i]);
    scope->vars.set(Value::string("varargs"), Value::tuple(std::move(rest)));
  }
  if (m->uses_kwargs) scope->vars.set(Value::string("kwargs"), Value::dict(std::move(extra_kw)));
  if (m->uses_caller) scope->vars.set(Value::string("caller"), caller);
  return Value::string(capture(m->body));
}

[[noreturn]] static void no_filter(const std::string& name) {
  if (is_known_unsupported_filter(name)) raise("NotSupported", "not supported yet: the jinja2 filter '" + name + "'");
  raise("TemplateRuntimeError", "No filter named '" + name + "' found.");
}

Value Interp::apply_filter(const std::string& name, const Value& v, Args& args) {
  FilterFn f = find_filter(name);
  if (!f) no_filter(name);
  return f(*this, v, args);
}

bool Interp::apply_test(const std::string& name, const Value& v, Args& args) {
  TestFn t = find_test(name);
  if (!t) raise("TemplateRuntimeError", "No test named '" + name + "' found.");
  return t(*this, v, args);
}

Value Interp::eval(const Expr& e) {
  switch (e.kind) {
    case ExprKind::Const:
      return e.value;
    case ExprKind::Name:
      return lookup(e.name);
    case ExprKind::List: case ExprKind::Tuple: {
      List items;
      items.reserve(e.items.size());
      for (const auto& x : e.items) items.push_back(eval(*x));
      return e.kind == ExprKind::List ? Value::list(std::move(items)) : Value::tuple(std::move(items));
    }
    case ExprKind::Dict: {
      Dict d;
      for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
        Value k = eval(*e.items[i]);
        if (k.is_sequence() && k.is_list()) type_error("unhashable type: 'list'");
        if (k.is_dict()) type_error("unhashable type: 'dict'");
        d.set(std::move(k), eval(*e.items[i + 1]));
      }
      return Value::dict(std::move(d));
    }
    case ExprKind::Getattr:
      return get_attr(eval(*e.a), e.name);
    case ExprKind::Getitem: {
      Value obj = eval(*e.a);
      if (e.b->kind == ExprKind::Slice) {
        const auto& p = e.b->items;
        Value start = p[0] ? eval(*p[0]) : Value::none(), stop = p[1] ? eval(*p[1]) : Value::none(),
              step = p[2] ? eval(*p[2]) : Value::none();
        if (obj.is_undefined()) raise_undefined(obj);
        if (obj.is_string() || obj.is_sequence()) return slice_value(obj, start, stop, step);
        return undefined_attr(obj, Value::string("slice(" + py_repr(start) + ", " + py_repr(stop) + ", " + py_repr(step) + ")"));
      }
      return get_item(obj, eval(*e.b));
    }
    case ExprKind::Slice:
      type_error("slice outside of a subscript");
    case ExprKind::Call: {
      Value fn = eval(*e.a);
      Args args = eval_args(e);
      return call(fn, args);
    }
    case ExprKind::Filter: {
      Value v = eval(*e.a);
      Args args = eval_args(e);
      if (!e.builtin) no_filter(e.name);
      return reinterpret_cast<FilterFn>(e.builtin)(*this, v, args);
    }
    case ExprKind::Test: {
      Value v = eval(*e.a);
      Args args = eval_args(e);
      if (!e.builtin) raise("TemplateRuntimeError", "No test named '" + e.name + "' found.");
      return Value::boolean(reinterpret_cast<TestFn>(e.builtin)(*this, v, args));
    }
    case ExprKind::Neg: case ExprKind::Pos: {
      Value v = eval(*e.a);
      if (v.is_undefined()) raise_undefined(v);
      if (v.is_int() || v.is_bool()) return Value::integer(e.kind == ExprKind::Neg ? -v.as_int() : v.as_int());
      if (v.is_float()) return Value::number(e.kind == ExprKind::Neg ? -v.as_double() : v.as_double());
      type_error(std::string("bad operand type for unary ") + (e.kind == ExprKind::Neg ? "-" : "+") + ": '" +
                 py_type_name(v) + "'");
    }
    case ExprKind::Not:
      return Value::boolean(!truthy(eval(*e.a)));
    case ExprKind::And: {
      Value l = eval(*e.a);
      return truthy(l) ? eval(*e.b) : l;
    }
    case ExprKind::Or: {
      Value l = eval(*e.a);
      return truthy(l) ? l : eval(*e.b);
    }
    case ExprKind::Concat: {
      std::string s;
      for (const auto& x : e.items) {
        Value v = eval(*x);
        if (v.is_string()) s += v.str();
        else s += py_str(v);
      }
      return Value::string(std::move(s));
    }
    case ExprKind::Compare: {
      Value left = eval(*e.a);
      for (const auto& [op, rhs] : e.ops) {
        Value right = eval(*rhs);
        bool ok;
        if (op == "eq") ok = py_eq(left, right);
        else if (op == "ne") ok = !py_eq(left, right);
        else if (op == "in") ok = py_contains(right, left);
        else if (op == "notin") ok = !py_contains(right, left);
        else {
          const char* sym = op == "lt" ? "<" : op == "lteq" ? "<=" : op == "gt" ? ">" : ">=";
          int c = py_compare(left, right, sym);
          if (c == 2) ok = false;
          else if (op == "lt") ok = c < 0;
          else if (op == "lteq") ok = c <= 0;
          else if (op == "gt") ok = c > 0;
          else ok = c >= 0;
        }
        if (!ok) return Value::boolean(false);
        left = std::move(right);
      }
      return Value::boolean(true);
    }
    case ExprKind::CondExpr:
      if (truthy(eval(*e.b))) return eval(*e.a);
      if (e.c) return eval(*e.c);
      return undefined_hint("the inline if-expression on line " + std::to_string(e.line) +
                            " evaluated to false and no else section was defined.");
    default:
      return binary_op(e.kind, eval(*e.a), eval(*e.b));
  }
}

// ---- Template ---------------------------------------------------------------------------------------

Template::Template() = default;
Template::~Template() = default;

std::shared_ptr<Template> Template::parse(std::string_view source) {
  std::shared_ptr<Template> t(new Template());
  t->source_.assign(source);
  t->program_ = parse_program(source);
  return t;
}

bool Template::has_generation_block() const { return program_->has_generation; }

RenderResult Template::render(const Dict& vars, const RenderOptions& opts) const {
  Interp in(*program_, vars, opts);
  return in.run();
}

}  // namespace sky::jinja
