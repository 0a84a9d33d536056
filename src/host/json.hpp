// The one way native code parses JSON text: RapidJSON with a nesting-depth limit (128, as
// serde_json's), so a file of "[[[[..." is a clear error instead of a stack overflow in the
// recursive parser or in any code walking the document. Every reader of files or replies uses it.
//   rapidjson::Document doc;
//   if (JsonParsed r = json_parse(doc, text); !r)
//     throw Error(path + ": invalid JSON at byte " + std::to_string(r.offset) + ": " + r.reason());
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/encodedstream.h>
#include <rapidjson/reader.h>

#include <string>
#include <string_view>

namespace sky {

inline constexpr int kJsonMaxDepth = 128;

struct JsonParsed {
  rapidjson::ParseErrorCode code = rapidjson::kParseErrorNone;
  size_t offset = 0;       // byte offset of the error
  bool too_deep = false;   // arrays/objects nested deeper than the limit
  int max_depth = kJsonMaxDepth;

  explicit operator bool() const { return code == rapidjson::kParseErrorNone; }
  // "Missing a comma or ']' after an array element." or "nesting deeper than 128 levels"
  std::string reason() const {
    if (too_deep) return "nesting deeper than " + std::to_string(max_depth) + " levels";
    return rapidjson::GetParseError_En(code);
  }
};

namespace detail {

// Forwards SAX events to a handler (the document being built), refusing to open a container
// deeper than max_depth; the reader then stops with kParseErrorTermination at that byte.
template <class H>
struct JsonDepthLimit {
  H& h;
  int max_depth;
  int depth = 0;
  bool too_deep = false;

  bool Null() { return h.Null(); }
  bool Bool(bool b) { return h.Bool(b); }
  bool Int(int i) { return h.Int(i); }
  bool Uint(unsigned u) { return h.Uint(u); }
  bool Int64(int64_t i) { return h.Int64(i); }
  bool Uint64(uint64_t u) { return h.Uint64(u); }
  bool Double(double d) { return h.Double(d); }
  bool RawNumber(const char* s, rapidjson::SizeType n, bool copy) { return h.RawNumber(s, n, copy); }
  bool String(const char* s, rapidjson::SizeType n, bool copy) { return h.String(s, n, copy); }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) { return h.Key(s, n, copy); }
  bool open() {
    if (++depth <= max_depth) return true;
    too_deep = true;
    return false;
  }
  bool StartObject() { return open() && h.StartObject(); }
  bool StartArray() { return open() && h.StartArray(); }
  bool EndObject(rapidjson::SizeType n) {
    --depth;
    return h.EndObject(n);
  }
  bool EndArray(rapidjson::SizeType n) {
    --depth;
    return h.EndArray(n);
  }
};

}  // namespace detail

// Parses text into doc as doc.Parse<Flags>(...) would, with the depth limit. On failure doc is
// left null and the result says why and where.
template <unsigned Flags = rapidjson::kParseDefaultFlags>
JsonParsed json_parse(rapidjson::Document& doc, std::string_view text, int max_depth = kJsonMaxDepth) {
  JsonParsed out;
  out.max_depth = max_depth;
  auto generate = [&](rapidjson::Document& target) {
    detail::JsonDepthLimit<rapidjson::Document> limit{target, max_depth};
    rapidjson::MemoryStream ms(text.data(), text.size());
    rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> is(ms);
    rapidjson::Reader reader;
    rapidjson::ParseResult r = reader.Parse<Flags>(is, limit);
    out.code = r.Code();
    out.offset = r.Offset();
    out.too_deep = limit.too_deep;
    return !r.IsError();
  };
  doc.SetNull();
  doc.Populate(generate);
  return out;
}

}  // namespace sky
