// transformers' render_jinja_template for one conversation: the variables a chat template gets,
// continue_final_message (the final message is rendered with a tag appended, then the text is cut
// where the tag starts) and the generation spans.
#include "jinja/internal.hpp"

namespace sky::jinja {

namespace {

const char kContinueTag[] = "CONTINUE_FINAL_MESSAGE_TAG ";

[[noreturn]] void value_error(const std::string& msg) { raise("ValueError", msg); }

// The conversation with the tag appended to the final message's text (its last text block when
// the content is a list of blocks); final_text gets the text before the tag.
Value tag_final_message(const Value& messages, std::string& final_text) {
  if (!messages.is_sequence() || messages.items().empty())
    value_error("continue_final_message is set but the conversation has no final message");
  List msgs = messages.items();
  Value last = msgs.back();
  if (!last.is_dict()) value_error("continue_final_message is set but the final message is not a dict");
  Dict d = last.dict();
  const Value* content = d.find(std::string_view("content"));
  if (!content) raise("KeyError", "'content'");
  if (content->is_sequence()) {
    List blocks = content->items();
    bool found = false;
    for (size_t i = blocks.size(); i-- > 0;) {
      if (!blocks[i].is_dict()) continue;
      Dict block = blocks[i].dict();
      const Value* text = block.find(std::string_view("text"));
      if (!text) continue;
      final_text = text->is_string() ? text->str() : py_str(*text);
      block.set(Value::string("text"), binary_op(ExprKind::Add, *text, Value::string(kContinueTag)));
      blocks[i] = Value::dict(std::move(block));
      found = true;
      break;
    }
    if (!found)
      value_error("continue_final_message is set but we could not find any text to continue in the final message!");
    d.set(Value::string("content"), Value::list(std::move(blocks)));
  } else {
    final_text = content->is_string() ? content->str() : py_str(*content);
    d.set(Value::string("content"), binary_op(ExprKind::Add, *content, Value::string(kContinueTag)));
  }
  msgs.back() = Value::dict(std::move(d));
  return Value::list(std::move(msgs));
}

}  // namespace

RenderResult render_chat(const Template& t, const ChatInputs& in, const RenderOptions& opts) {
  std::string final_text;
  Value messages = in.continue_final_message ? tag_final_message(in.messages, final_text) : in.messages;
  Dict vars;
  vars.set(Value::string("messages"), messages);
  vars.set(Value::string("tools"), in.tools);
  vars.set(Value::string("documents"), in.documents);
  vars.set(Value::string("add_generation_prompt"), Value::boolean(in.add_generation_prompt));
  for (const auto& [k, v] : in.extra.entries) vars.set(k, v);
  RenderResult r = t.render(vars, opts);
  if (in.continue_final_message) {
    const std::string tag(kContinueTag);
    const std::string tag_stripped = py_strip(tag, true, true);
    if (r.text.find(py_strip(final_text, true, true)) == std::string::npos ||
        r.text.find(tag_stripped) == std::string::npos)
      value_error(
          "continue_final_message is set but the final message does not appear in the chat after applying the "
          "chat template! This can happen if the chat template deletes portions of the final message. Please "
          "verify the chat template and final message in your chat to ensure they are compatible.");
    size_t loc = r.text.rfind(tag_stripped);
    if (r.text.compare(loc, tag.size(), tag) == 0) r.text.resize(loc);
    else r.text = py_strip(std::string_view(r.text).substr(0, loc), false, true);
  }
  return r;
}

void spans_to_code_points(std::string_view text, std::vector<std::pair<size_t, size_t>>& spans) {
  // Byte offset -> code points before it; offsets fall on character boundaries.
  auto to_cp = [&](size_t byte) { return cp_length(text.substr(0, std::min(byte, text.size()))); };
  for (auto& [b, e] : spans) {
    b = to_cp(b);
    e = to_cp(e);
  }
}

}  // namespace sky::jinja
