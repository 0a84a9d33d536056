// tok_compare TOKENIZER.json INPUTS.jsonl REFERENCE.txt [MAX_REPORT]
// Encodes every input with our tokenizer and compares with the hashes hf_reference.js wrote from
// HF tokenizers: ids, tokens, offsets, decode (with and without special tokens), pairs with
// truncation, batches with truncation and padding. Prints a summary line and, for the first
// mismatches, our full result as JSON (the test asks hf_reference.js dump for theirs).
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "tokenize/tokenizer.hpp"

using namespace sky::tok;

static std::string fnv(const std::string& s) {
  uint32_t h = 0x811c9dc5u;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x01000193u;
  }
  char buf[16];
  snprintf(buf, sizeof buf, "%08x", h);
  return buf;
}

template <class V>
static std::string join_ids(const V& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++) {
    if (i) s += ',';
    s += std::to_string(v[i]);
  }
  return s;
}

static std::string join_offsets(const std::vector<std::pair<uint32_t, uint32_t>>& o) {
  std::string s;
  for (size_t i = 0; i < o.size(); i++) {
    if (i) s += ',';
    s += std::to_string(o[i].first) + "-" + std::to_string(o[i].second);
  }
  return s;
}

static std::string join_tokens(const std::vector<std::string>& t) {
  std::string s;
  for (size_t i = 0; i < t.size(); i++) {
    if (i) s += '\x01';
    s += t[i];
  }
  return s;
}

static std::string json_str(const std::string& s) {
  rapidjson::StringBuffer b;
  rapidjson::Writer<rapidjson::StringBuffer> w(b);
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  return b.GetString();
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: tok_compare TOKENIZER.json INPUTS.jsonl REFERENCE.txt [MAX_REPORT]\n";
    return 2;
  }
  size_t max_report = argc > 4 ? std::stoul(argv[4]) : 5;
  std::shared_ptr<Tokenizer> tok;
  try {
    tok = Tokenizer::from_file(argv[1]);
  } catch (const std::exception& e) {
    std::cout << "LOAD ERROR " << e.what() << "\n";
    return 1;
  }
  std::vector<std::string> inputs;
  {
    std::ifstream f(argv[2]);
    std::string line;
    while (std::getline(f, line)) {
      if (line.empty()) continue;
      rapidjson::Document d;
      d.Parse(line.data(), line.size());
      if (d.HasParseError() || !d.IsString()) {
        std::cerr << "bad input line " << inputs.size() << "\n";
        return 2;
      }
      inputs.emplace_back(d.GetString(), d.GetStringLength());
    }
  }
  std::vector<std::string> ref;
  {
    std::ifstream f(argv[3]);
    std::string line;
    while (std::getline(f, line)) ref.push_back(line);
  }
  if (ref.size() < inputs.size()) {
    std::cerr << "reference has " << ref.size() << " lines for " << inputs.size() << " inputs\n";
    return 2;
  }
  std::vector<std::string_view> views(inputs.begin(), inputs.end());
  EncodeOptions o;
  std::vector<Encoding> encs = tok->encode_batch(views, nullptr, o, 2);
  size_t bad[5] = {0, 0, 0, 0, 0};
  const char* names[5] = {"ids", "tokens", "offsets", "decode", "decode_skip"};
  size_t reported = 0;
  std::string bad_lines;
  for (size_t i = 0; i < inputs.size(); i++) {
    const Encoding& e = encs[i];
    std::string dec = tok->decode(e.ids, false), dec_skip = tok->decode(e.ids, true);
    std::string ours[5] = {fnv(join_ids(e.ids)), fnv(join_tokens(e.tokens)), fnv(join_offsets(e.offsets)), fnv(dec), fnv(dec_skip)};
    std::istringstream ss(ref[i]);
    bool any = false;
    static const bool ids_only = getenv("TOK_COMPARE_IDS_ONLY") != nullptr;
    for (int k = 0; k < 5; k++) {
      std::string theirs;
      ss >> theirs;
      if (theirs != ours[k]) {
        bad[k]++;
        if (!ids_only || k == 0) any = true;
      }
    }
    if (any && reported < max_report) {
      reported++;
      bad_lines += " " + std::to_string(i);
      std::string toks = "[";
      for (size_t k = 0; k < e.tokens.size(); k++) toks += (k ? "," : "") + json_str(e.tokens[k]);
      toks += "]";
      std::string offs = "[";
      for (size_t k = 0; k < e.offsets.size(); k++)
        offs += (k ? ",[" : "[") + std::to_string(e.offsets[k].first) + "," + std::to_string(e.offsets[k].second) + "]";
      offs += "]";
      std::cout << "OURS {\"line\":" << i << ",\"input\":" << json_str(inputs[i]) << ",\"ids\":[" << join_ids(e.ids)
                << "],\"tokens\":" << toks << ",\"offsets\":" << offs << ",\"decode\":" << json_str(dec)
                << ",\"decode_skip\":" << json_str(dec_skip) << "}\n";
    }
  }
  // Pairs and batches (see hf_reference.js run, pass 2).
  size_t base = inputs.size() > 1001 ? inputs.size() - 1001 : 0;
  size_t n2 = std::min<size_t>(inputs.size() - 1 - base, 1000);
  size_t r = inputs.size();
  size_t bad_pairs = 0, bad_batches = 0;
  {
    EncodeOptions po;
    po.truncation = Truncation{};
    po.truncation->max_length = 24;
    std::vector<std::string_view> a(views.begin() + base, views.begin() + base + n2),
        b(views.begin() + base + 1, views.begin() + base + n2 + 1);
    std::vector<Encoding> pe = tok->encode_batch(a, &b, po, 2);
    for (size_t i = 0; i < n2; i++, r++) {
      std::string ours = "P " + fnv(join_ids(pe[i].ids)) + " " + fnv(join_ids(pe[i].type_ids)) + " " + fnv(join_offsets(pe[i].offsets));
      if (r >= ref.size() || ref[r] != ours) {
        if (bad_pairs == 0) std::cout << "PAIR MISMATCH line " << i << " ours ids [" << join_ids(pe[i].ids) << "] types [" << join_ids(pe[i].type_ids) << "]\n";
        bad_pairs++;
      }
    }
  }
  for (int mode = 0; mode < 2; mode++) {
    EncodeOptions bo;
    bo.truncation = Truncation{};
    bo.padding = Padding{};
    if (mode == 0) {
      bo.truncation->max_length = 12;
      bo.padding->pad_id = 7;
      bo.padding->pad_token = "[PAD]";
    } else {
      bo.truncation->max_length = 10;
      bo.truncation->direction = Direction::Left;
      bo.padding->to_longest = false;
      bo.padding->length = 16;
      bo.padding->pad_to_multiple_of = 8;
      bo.padding->pad_id = 3;
      bo.padding->pad_type_id = 1;
      bo.padding->pad_token = "<pad>";
      bo.padding->direction = Direction::Left;
    }
    for (size_t b = 0; b + 8 <= n2; b += 8, r++) {
      std::vector<std::string_view> chunk(views.begin() + base + b, views.begin() + base + b + 8);
      std::vector<Encoding> be = tok->encode_batch(chunk, nullptr, bo, 1);
      std::string ours = "B";
      for (auto& e : be) ours += " " + fnv(join_ids(e.ids) + "|" + join_ids(e.attention_mask) + "|" + join_ids(e.type_ids));
      if (r >= ref.size() || ref[r] != ours) {
        if (bad_batches == 0) std::cout << "BATCH MISMATCH mode " << mode << " at input " << b << ": ours first [" << join_ids(be[0].ids) << "]\n";
        bad_batches++;
      }
    }
  }
  std::cout << "SUMMARY " << inputs.size() << " inputs:";
  size_t total = bad_pairs + bad_batches;
  for (int k = 0; k < 5; k++) {
    std::cout << " " << names[k] << "=" << bad[k];
    total += bad[k];
  }
  std::cout << " pairs=" << bad_pairs << " batches=" << bad_batches << "\n";
  if (!bad_lines.empty()) std::cout << "BADLINES" << bad_lines << "\n";
  return total == 0 ? 0 : 1;
}
