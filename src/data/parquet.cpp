// data: parquet files. The reader decodes the thrift compact footer and page headers, plain and
// dictionary encodings, RLE/bit-packed levels, the delta encodings and byte_stream_split, pages v1
// and v2, snappy/gzip/zstd; flat columns and one level of lists. Everything else is an error naming
// the column and the feature. Every read is bounds-checked: a corrupt file raises, never crashes.
// The writer makes plain-encoded files (one page per column chunk) that pyarrow and HF read.
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <future>
#include <system_error>
#include <thread>

#include "data/readers.hpp"

namespace sky::data {
namespace {

// ---- thrift compact protocol -------------------------------------------------------------------------

enum TType : uint8_t { T_STOP = 0, T_TRUE = 1, T_FALSE = 2, T_BYTE = 3, T_I16 = 4, T_I32 = 5, T_I64 = 6,
                       T_DOUBLE = 7, T_BINARY = 8, T_LIST = 9, T_SET = 10, T_MAP = 11, T_STRUCT = 12 };

struct TVal {
  uint8_t type = T_STOP;
  int64_t i = 0;
  double d = 0;
  std::string_view bin;
  std::vector<int16_t> field_ids;  // struct: field ids and values
  std::vector<TVal> field_vals;
  std::vector<TVal> items;                       // list/set (map: key, value, key, value...)

  const TVal* field(int16_t id) const {
    for (size_t k = 0; k < field_ids.size(); k++)
      if (field_ids[k] == id) return &field_vals[k];
    return nullptr;
  }
  int64_t get_i(int16_t id, int64_t def) const {
    const TVal* f = field(id);
    return f && (f->type == T_I16 || f->type == T_I32 || f->type == T_I64 || f->type == T_BYTE) ? f->i : def;
  }
  bool has_i(int16_t id) const {
    const TVal* f = field(id);
    return f && (f->type == T_I16 || f->type == T_I32 || f->type == T_I64 || f->type == T_BYTE);
  }
  std::string get_s(int16_t id) const {
    const TVal* f = field(id);
    return f && f->type == T_BINARY ? std::string(f->bin) : std::string();
  }
  bool get_b(int16_t id, bool def) const {
    const TVal* f = field(id);
    return f && (f->type == T_TRUE || f->type == T_FALSE) ? f->type == T_TRUE : def;
  }
  const std::vector<TVal>* list(int16_t id) const {
    const TVal* f = field(id);
    return f && (f->type == T_LIST || f->type == T_SET) ? &f->items : nullptr;
  }
};

class ThriftReader {
 public:
  ThriftReader(const uint8_t* p, size_t n, std::string what) : p_(p), end_(p + n), start_(p), what_(std::move(what)) {}

  TVal read_struct(int depth = 0) {
    if (depth > 32) fail("structures nested too deeply");
    TVal v;
    v.type = T_STRUCT;
    int16_t last = 0;
    while (true) {
      uint8_t b = byte();
      if (b == T_STOP) break;
      uint8_t type = b & 0x0f;
      int16_t id;
      if (b >> 4) id = static_cast<int16_t>(last + (b >> 4));
      else id = static_cast<int16_t>(zigzag(varint()));
      last = id;
      v.field_ids.push_back(id);
      v.field_vals.push_back(read_value(type, depth + 1));
      if (v.field_ids.size() > 1000) fail("too many fields");
    }
    return v;
  }

  size_t consumed() const { return static_cast<size_t>(p_ - start_); }

 private:
  [[noreturn]] void fail(const std::string& m) const {
    throw Error(what_ + ": corrupt thrift metadata at byte " + std::to_string(p_ - start_) + ": " + m);
  }
  uint8_t byte() {
    if (p_ >= end_) fail("unexpected end");
    return *p_++;
  }
  uint64_t varint() {
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = byte();
      r |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return r;
    }
    fail("varint too long");
  }
  static int64_t zigzag(uint64_t v) { return static_cast<int64_t>((v >> 1) ^ (~(v & 1) + 1)); }

  TVal read_value(uint8_t type, int depth) {
    TVal v;
    v.type = type;
    switch (type) {
      case T_TRUE:
      case T_FALSE: break;
      case T_BYTE: v.i = static_cast<int8_t>(byte()); break;
      case T_I16:
      case T_I32:
      case T_I64: v.i = zigzag(varint()); break;
      case T_DOUBLE: {
        if (end_ - p_ < 8) fail("unexpected end");
        std::memcpy(&v.d, p_, 8);
        p_ += 8;
        break;
      }
      case T_BINARY: {
        uint64_t n = varint();
        if (n > static_cast<uint64_t>(end_ - p_)) fail("string longer than the data");
        v.bin = std::string_view(reinterpret_cast<const char*>(p_), n);
        p_ += n;
        break;
      }
      case T_LIST:
      case T_SET: {
        uint8_t h = byte();
        uint64_t n = h >> 4;
        uint8_t et = h & 0x0f;
        if (n == 15) n = varint();
        if (n > static_cast<uint64_t>(end_ - p_)) fail("list longer than the data");
        v.items.reserve(n);
        for (uint64_t k = 0; k < n; k++) {
          if (et == T_TRUE || et == T_FALSE) {  // booleans in containers are one byte each
            TVal b;
            b.type = byte() == 1 ? T_TRUE : T_FALSE;
            v.items.push_back(b);
          } else {
            v.items.push_back(read_value(et, depth + 1));
          }
        }
        break;
      }
      case T_MAP: {
        uint64_t n = varint();
        if (n > static_cast<uint64_t>(end_ - p_)) fail("map longer than the data");
        if (n == 0) break;
        uint8_t kv = byte();
        for (uint64_t k = 0; k < n; k++) {
          v.items.push_back(read_value(kv >> 4, depth + 1));
          v.items.push_back(read_value(kv & 0x0f, depth + 1));
        }
        break;
      }
      case T_STRUCT: return read_struct(depth);
      default: fail("unknown field type " + std::to_string(type));
    }
    return v;
  }

  const uint8_t* p_;
  const uint8_t* end_;
  const uint8_t* start_;
  std::string what_;
};

// ---- parquet enums --------------------------------------------------------------------------------------

enum PType { P_BOOLEAN = 0, P_INT32 = 1, P_INT64 = 2, P_INT96 = 3, P_FLOAT = 4, P_DOUBLE = 5, P_BYTE_ARRAY = 6,
             P_FLBA = 7 };
enum Enc { E_PLAIN = 0, E_PLAIN_DICT = 2, E_RLE = 3, E_BIT_PACKED = 4, E_DELTA_BP = 5, E_DELTA_LBA = 6, E_DELTA_BA = 7,
           E_RLE_DICT = 8, E_BSS = 9 };

const char* ptype_name(int64_t t) {
  static const char* n[] = {"BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY"};
  return t >= 0 && t < 8 ? n[t] : "unknown";
}
std::string enc_name(int64_t e) {
  static const char* n[] = {"PLAIN", "GROUP_VAR_INT", "PLAIN_DICTIONARY", "RLE", "BIT_PACKED", "DELTA_BINARY_PACKED",
                            "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY", "RLE_DICTIONARY", "BYTE_STREAM_SPLIT"};
  return e >= 0 && e < 10 ? n[e] : "encoding " + std::to_string(e);
}
std::string codec_name(int64_t c) {
  static const char* n[] = {"UNCOMPRESSED", "SNAPPY", "GZIP", "LZO", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW"};
  return c >= 0 && c < 8 ? n[c] : "codec " + std::to_string(c);
}

// ---- schema ---------------------------------------------------------------------------------------------

struct SchemaNode {
  std::string name;
  int64_t ptype = -1;  // -1: group
  int64_t type_length = 0;
  int64_t repetition = 0;  // 0 required, 1 optional, 2 repeated
  int64_t converted = -1;
  int64_t num_children = 0;
  const TVal* logical = nullptr;
  std::vector<int> children;
};

// One top-level field, read from one leaf.
struct FieldPlan {
  std::string name;
  int leaf = -1;            // index among leaves (column chunk order)
  int leaf_node = -1;       // schema node of the leaf
  int max_def = 0, max_rep = 0;
  bool is_list = false;
  int list_def = 0;         // def >= list_def: the list exists (else the row is null)
  int elem_def = 0;         // def >= elem_def: an element exists (else the list is empty)
  std::string unsupported;  // non-empty: reading this field raises this
  DType out_type = DType::Null;
  int64_t ptype = 0, type_length = 0;
  bool int96 = false, float16 = false;
};

bool has_logical(const SchemaNode& n, int16_t id) { return n.logical && n.logical->field(id); }
bool is_list_node(const SchemaNode& n) { return n.converted == 3 || has_logical(n, 3); }
bool is_map_node(const SchemaNode& n) { return n.converted == 1 || n.converted == 2 || has_logical(n, 2); }

// ---- buffer reading helpers -------------------------------------------------------------------------------

struct Cursor {
  const uint8_t* p;
  const uint8_t* end;
  const std::string* what;

  [[noreturn]] void fail(const std::string& m) const { throw Error(*what + ": " + m); }
  size_t left() const { return static_cast<size_t>(end - p); }
  void need(size_t n) const {
    if (left() < n) fail("page data ends early (corrupt page)");
  }
  uint8_t byte() {
    need(1);
    return *p++;
  }
  uint32_t u32() {
    need(4);
    uint32_t v;
    std::memcpy(&v, p, 4);
    p += 4;
    return v;
  }
  uint64_t varint() {
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = byte();
      r |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return r;
    }
    fail("varint too long (corrupt page)");
  }
  int64_t zigzag() {
    uint64_t v = varint();
    return static_cast<int64_t>((v >> 1) ^ (~(v & 1) + 1));
  }
};

// Reads `count` values of `width` bits packed LSB first from c (width <= 64).
void unpack_bits(Cursor& c, int width, int64_t count, uint64_t* out) {
  if (width == 0) {
    for (int64_t i = 0; i < count; i++) out[i] = 0;
    return;
  }
  size_t bytes = static_cast<size_t>((count * width + 7) / 8);
  c.need(bytes);
  const uint8_t* p = c.p;
  if (width <= 56) {  // a 64-bit window holds a value plus the byte being added
    uint64_t acc = 0, mask = (uint64_t{1} << width) - 1;
    int bits = 0;
    size_t k = 0;
    for (int64_t i = 0; i < count; i++) {
      while (bits < width) {
        acc |= static_cast<uint64_t>(p[k++]) << bits;
        bits += 8;
      }
      out[i] = acc & mask;
      acc >>= width;
      bits -= width;
    }
    c.p += bytes;
    return;
  }
  uint64_t bitpos = 0;
  for (int64_t i = 0; i < count; i++) {
    uint64_t v = 0;
    int got = 0;
    while (got < width) {
      uint64_t byte_i = bitpos >> 3;
      int off = static_cast<int>(bitpos & 7);
      int take = std::min(8 - off, width - got);
      uint64_t bits = (p[byte_i] >> off) & ((1u << take) - 1);
      v |= bits << got;
      got += take;
      bitpos += take;
    }
    out[i] = v;
  }
  c.p += bytes;
}

// RLE / bit-packed hybrid: decodes exactly n values of `width` bits into out[0..n) (T holds them:
// levels are at most 2 bits wide here, dictionary indices 32).
template <class T>
void decode_rle(Cursor c, int width, int64_t n, T* out, const char* what_levels) {
  if (width < 0 || width > 32) c.fail(std::string("bad bit width for ") + what_levels);
  int64_t i = 0;
  uint64_t tmp[8];
  while (i < n) {
    if (c.left() == 0) c.fail(std::string("fewer ") + what_levels + " than values (" + std::to_string(i) + " of " + std::to_string(n) + ")");
    uint64_t h = c.varint();
    if (h & 1) {
      uint64_t groups = h >> 1;
      if (groups == 0 || (width > 0 && groups > c.left() / static_cast<uint64_t>(width)))
        c.fail(std::string("bad bit-packed run in ") + what_levels);
      for (uint64_t g = 0; g < groups; g++) {
        if (i >= n) {  // padding after the last value
          c.p += static_cast<size_t>((groups - g) * static_cast<uint64_t>(width));
          break;
        }
        unpack_bits(c, width, 8, tmp);
        for (int k = 0; k < 8 && i < n; k++) out[i++] = static_cast<T>(tmp[k]);
      }
    } else {
      uint64_t run = h >> 1;
      int bytes = (width + 7) / 8;
      c.need(bytes);
      uint32_t v = 0;
      for (int k = 0; k < bytes; k++) v |= static_cast<uint32_t>(c.p[k]) << (8 * k);
      c.p += bytes;
      if (run == 0) c.fail(std::string("empty run in ") + what_levels);
      int64_t stop = run < static_cast<uint64_t>(n - i) ? i + static_cast<int64_t>(run) : n;
      std::fill(out + i, out + stop, static_cast<T>(v));
      i = stop;
    }
  }
}

int bit_width(int64_t max) {
  int w = 0;
  while ((int64_t{1} << w) <= max) w++;
  return w;
}

// DELTA_BINARY_PACKED into int64 (wrapping in 32 bits for INT32 columns).
void decode_delta_bp(Cursor& c, int64_t n_expected, bool is32, std::vector<int64_t>& out) {
  uint64_t block = c.varint(), minis = c.varint(), total = c.varint();
  int64_t first = c.zigzag();
  if (block == 0 || block % 128 != 0 || block > (1u << 20) || minis == 0 || minis > 4096 || block % minis != 0 ||
      (block / minis) % 32 != 0)
    c.fail("bad DELTA_BINARY_PACKED header");
  if (total > static_cast<uint64_t>(n_expected))
    c.fail("DELTA_BINARY_PACKED holds more values than the page");
  uint64_t per_mini = block / minis;
  out.clear();
  out.reserve(total);
  if (total == 0) return;
  uint64_t cur = static_cast<uint64_t>(first);
  out.push_back(is32 ? static_cast<int32_t>(cur) : static_cast<int64_t>(cur));
  std::vector<uint64_t> tmp(per_mini);
  std::vector<uint8_t> widths(minis);
  while (out.size() < total) {
    uint64_t min_delta = static_cast<uint64_t>(c.zigzag());
    c.need(minis);
    for (uint64_t m = 0; m < minis; m++) widths[m] = c.p[m];
    c.p += minis;
    for (uint64_t m = 0; m < minis && out.size() < total; m++) {
      if (widths[m] > 64) c.fail("bad DELTA_BINARY_PACKED bit width");
      unpack_bits(c, widths[m], static_cast<int64_t>(per_mini), tmp.data());
      for (uint64_t k = 0; k < per_mini && out.size() < total; k++) {
        cur += min_delta + tmp[k];
        if (is32) cur = static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(static_cast<uint32_t>(cur))));
        out.push_back(static_cast<int64_t>(cur));
      }
    }
  }
}

// ---- decompression --------------------------------------------------------------------------------------------

void decompress(int64_t codec, const uint8_t* src, size_t n, size_t expect, PodVec<uint8_t>& dst,
                const std::string& what) {
  // Check the claimed size against what the codec can produce before allocating it.
  if (codec == 0 && n != expect)
    throw Error(what + ": uncompressed page of " + std::to_string(n) + " bytes, header says " + std::to_string(expect));
  if (codec == 1) {
    size_t len = 0;
    if (snappy_uncompressed_length(reinterpret_cast<const char*>(src), n, &len) != SNAPPY_OK || len != expect)
      throw Error(what + ": corrupt snappy page (its length disagrees with the page header)");
  }
  if (codec == 2 && expect > n * 1032 + 1024) throw Error(what + ": gzip page claims an impossible size");
  if (codec == 6) {
    unsigned long long declared = ZSTD_getFrameContentSize(src, n);
    if (declared == ZSTD_CONTENTSIZE_ERROR || (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared != expect))
      throw Error(what + ": corrupt zstd page (its length disagrees with the page header)");
  }
  if (dst.capacity() < expect) {
    dst.clear();
    dst.shrink_to_fit();
  }
  dst.resize(expect);
  switch (codec) {
    case 0:
      if (n != expect) throw Error(what + ": uncompressed page of " + std::to_string(n) + " bytes, header says " + std::to_string(expect));
      if (n) std::memcpy(dst.data(), src, n);  // an empty vector's data() may be null
      return;
    case 1: {
      size_t len = 0;
      if (snappy_uncompressed_length(reinterpret_cast<const char*>(src), n, &len) != SNAPPY_OK || len != expect)
        throw Error(what + ": corrupt snappy page");
      if (snappy_uncompress(reinterpret_cast<const char*>(src), n, reinterpret_cast<char*>(dst.data()), &len) != SNAPPY_OK || len != expect)
        throw Error(what + ": corrupt snappy page");
      return;
    }
    case 2: {
      z_stream z{};
      if (inflateInit2(&z, 15 + 32) != Z_OK) throw Error(what + ": zlib init failed");
      z.next_in = const_cast<Bytef*>(src);
      z.avail_in = static_cast<uInt>(n);
      z.next_out = dst.data();
      z.avail_out = static_cast<uInt>(expect);
      int rc;
      while (true) {
        rc = inflate(&z, Z_NO_FLUSH);
        if (rc == Z_STREAM_END && z.avail_in > 0 && z.avail_out > 0) {  // concatenated gzip members
          inflateReset(&z);
          continue;
        }
        break;
      }
      size_t got = expect - z.avail_out;
      inflateEnd(&z);
      if ((rc != Z_STREAM_END && rc != Z_OK && rc != Z_BUF_ERROR) || got != expect)
        throw Error(what + ": corrupt gzip page");
      return;
    }
    case 6: {
      size_t r = ZSTD_decompress(dst.data(), expect, src, n);
      if (ZSTD_isError(r) || r != expect) throw Error(what + ": corrupt zstd page");
      return;
    }
    default: throw Error("not supported yet: " + codec_name(codec) + " compression in " + what);
  }
}

// ---- column chunk decoding ----------------------------------------------------------------------------------

// The values of one leaf in one row group: non-null values in order, and the levels.
struct LeafData {
  PodVec<uint8_t> fixed;  // bool: 1 byte; int/float: 8 bytes (int64 or double)
  PodVec<int64_t> offsets{0};
  PodVec<char> chars;
  PodVec<uint8_t> def, rep;  // levels (at most 3 here: deeper nesting is refused before decoding)
  int64_t count = 0;  // non-null values
  int64_t levels = 0;
};

using ReleaseFn = std::function<void(size_t lo, size_t hi)>;

// Writers keep pages to ~1 MB / 20k rows; a header claiming more than this is corrupt, and trusting
// it would allocate gigabytes from a few bytes of run-length data.
constexpr int64_t kMaxPageValues = int64_t{1} << 26;

class ChunkReader {
 public:
  // page_buf and dict_buf outlive the reader: reused across row groups, they are allocated once.
  ChunkReader(const FieldPlan& f, const std::string& what, PodVec<uint8_t>& page_buf, PodVec<uint8_t>& dict_buf)
      : f_(f), what_(what), page_buf_(page_buf), dict_buf_(dict_buf) {}

  void read(const uint8_t* file, size_t file_size, const TVal& meta, LeafData& out) {
    int64_t codec = meta.get_i(4, 0);
    int64_t num_values = meta.get_i(5, -1);
    int64_t data_off = meta.get_i(9, -1);
    int64_t dict_off = meta.get_i(11, 0);
    int64_t total = meta.get_i(7, -1);
    int64_t start = (dict_off > 0 && dict_off < data_off) ? dict_off : data_off;
    if (start < 4 || total < 0 || num_values < 0 || static_cast<uint64_t>(start) > file_size ||
        static_cast<uint64_t>(total) > file_size - static_cast<uint64_t>(start))
      throw Error(what_ + ": column chunk outside the file (corrupt metadata)");
    const uint8_t* p = file + start;
    const uint8_t* end = p + total;
    range_lo = static_cast<size_t>(start);
    range_hi = static_cast<size_t>(start + total);
    chunk_start_ = out.levels;  // out may already hold earlier row groups (accumulating reads)
    while (out.levels - chunk_start_ < num_values) {
      if (p >= end)
        throw Error(what_ + ": column chunk ends after " + std::to_string(out.levels - chunk_start_) + " of " +
                    std::to_string(num_values) + " values");
      ThriftReader tr(p, static_cast<size_t>(end - p), what_ + " page header");
      TVal h = tr.read_struct();
      p += tr.consumed();
      int64_t type = h.get_i(1, -1), usize = h.get_i(2, -1), csize = h.get_i(3, -1);
      if (usize < 0 || csize < 0 || csize > end - p) throw Error(what_ + ": page size outside the column chunk (corrupt page header)");
      if (usize > (int64_t{1} << 29)) throw Error(what_ + ": page larger than 512 MiB (corrupt page header)");
      const uint8_t* body = p;
      p += csize;
      if (type == 2) {
        const TVal* dh = h.field(7);
        if (!dh) throw Error(what_ + ": dictionary page without its header");
        int64_t n = dh->get_i(1, -1);
        if (n < 0) throw Error(what_ + ": dictionary page with a negative number of values");
        if (n > kMaxPageValues) throw Error(what_ + ": dictionary of " + std::to_string(n) + " values (corrupt page header)");
        int64_t enc = dh->get_i(2, 0);
        if (enc != E_PLAIN && enc != E_PLAIN_DICT) throw Error("not supported yet: " + enc_name(enc) + " dictionary pages in " + what_);
        decompress(codec, body, static_cast<size_t>(csize), static_cast<size_t>(usize), dict_buf_, what_);
        dict_ = LeafData();
        Cursor c{dict_buf_.data(), dict_buf_.data() + dict_buf_.size(), &what_};
        decode_plain(c, n, dict_);
        has_dict_ = true;
      } else if (type == 0) {
        const TVal* dh = h.field(5);
        if (!dh) throw Error(what_ + ": data page without its header");
        decompress(codec, body, static_cast<size_t>(csize), static_cast<size_t>(usize), page_buf_, what_);
        int64_t n = dh->get_i(1, -1);
        if (n < 0 || n > num_values - (out.levels - chunk_start_)) throw Error(what_ + ": page holds more values than the column chunk");
        if (n > kMaxPageValues) throw Error(what_ + ": page of " + std::to_string(n) + " values (corrupt page header)");
        Cursor c{page_buf_.data(), page_buf_.data() + page_buf_.size(), &what_};
        int64_t def_enc = dh->get_i(3, E_RLE), rep_enc = dh->get_i(4, E_RLE);
        if (f_.max_rep > 0) read_levels_v1(c, rep_enc, f_.max_rep, n, out.rep, "repetition levels");
        if (f_.max_def > 0) read_levels_v1(c, def_enc, f_.max_def, n, out.def, "definition levels");
        decode_values(c, dh->get_i(2, 0), n, out);
      } else if (type == 3) {
        const TVal* dh = h.field(8);
        if (!dh) throw Error(what_ + ": data page v2 without its header");
        int64_t n = dh->get_i(1, -1), dlen = dh->get_i(5, -1), rlen = dh->get_i(6, -1);
        if (n < 0 || n > num_values - (out.levels - chunk_start_)) throw Error(what_ + ": page holds more values than the column chunk");
        if (n > kMaxPageValues) throw Error(what_ + ": page of " + std::to_string(n) + " values (corrupt page header)");
        if (dlen < 0 || rlen < 0 || dlen + rlen > csize || dlen + rlen > usize) throw Error(what_ + ": bad level sizes in a v2 page header");
        Cursor lc{body, body + rlen + dlen, &what_};
        if (f_.max_rep > 0) {
          Cursor rc{body, body + rlen, &what_};
          append_levels(rc, f_.max_rep, n, out.rep, "repetition levels");
        }
        if (f_.max_def > 0) {
          Cursor dc{body + rlen, body + rlen + dlen, &what_};
          append_levels(dc, f_.max_def, n, out.def, "definition levels");
        }
        (void)lc;
        const uint8_t* vals = body + rlen + dlen;
        size_t vlen = static_cast<size_t>(csize - rlen - dlen);
        size_t vulen = static_cast<size_t>(usize - rlen - dlen);
        if (dh->get_b(7, true) && codec != 0) {
          decompress(codec, vals, vlen, vulen, page_buf_, what_);
        } else {
          if (vlen != vulen) throw Error(what_ + ": uncompressed v2 page sizes disagree");
          page_buf_.assign(vals, vals + vlen);
        }
        Cursor c{page_buf_.data(), page_buf_.data() + page_buf_.size(), &what_};
        decode_values(c, dh->get_i(4, 0), n, out);
      } else if (type == 1) {
        continue;  // index pages carry nothing we need
      } else {
        throw Error(what_ + ": unknown page type " + std::to_string(type));
      }
    }
  }

  size_t range_lo = 0, range_hi = 0;  // the bytes of the file the chunk occupies (after read)

 private:
  void append_levels(Cursor& c, int max, int64_t n, PodVec<uint8_t>& dst, const char* what) {
    size_t at = dst.size();
    dst.resize(at + static_cast<size_t>(n));
    uint8_t* v = dst.data() + at;
    decode_rle(c, bit_width(max), n, v, what);
    uint8_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= v[i] > max;
    if (bad) throw Error(what_ + ": " + what + " above the maximum (corrupt page)");
  }

  void read_levels_v1(Cursor& c, int64_t enc, int max, int64_t n, PodVec<uint8_t>& dst, const char* what) {
    if (enc != E_RLE) throw Error("not supported yet: " + enc_name(enc) + " " + what + " in " + what_);
    uint32_t len = c.u32();
    c.need(len);
    Cursor lc{c.p, c.p + len, c.what};
    append_levels(lc, max, n, dst, what);
    c.p += len;
  }

  // The number of non-null values among the last n levels.
  int64_t present(const LeafData& out, int64_t n) const {
    if (f_.max_def == 0) return n;
    int64_t k = 0;
    const uint8_t max = static_cast<uint8_t>(f_.max_def);
    for (size_t i = out.def.size() - n; i < out.def.size(); i++) k += out.def[i] == max;
    return k;
  }

  void decode_values(Cursor& c, int64_t enc, int64_t n_levels, LeafData& out) {
    if (f_.max_def > 0 && out.def.size() != static_cast<size_t>(out.levels + n_levels))
      throw Error(what_ + ": definition levels missing");
    if (f_.max_rep > 0) {
      if (out.rep.size() != static_cast<size_t>(out.levels + n_levels)) throw Error(what_ + ": repetition levels missing");
      if (out.levels == chunk_start_ && n_levels > 0 && out.rep[chunk_start_] != 0) throw Error(what_ + ": repetition levels start inside a list (corrupt page)");
    }
    int64_t n = present(out, n_levels);
    out.levels += n_levels;
    switch (enc) {
      case E_PLAIN: decode_plain(c, n, out); break;
      case E_PLAIN_DICT:
      case E_RLE_DICT: decode_dict(c, n, out); break;
      case E_RLE: {
        if (f_.ptype != P_BOOLEAN) throw Error("not supported yet: RLE values for " + std::string(ptype_name(f_.ptype)) + " in " + what_);
        uint32_t len = c.u32();
        c.need(len);
        Cursor rc{c.p, c.p + len, c.what};
        size_t at = out.fixed.size();
        out.fixed.resize(at + static_cast<size_t>(n));
        decode_rle(rc, 1, n, out.fixed.data() + at, "boolean values");
        out.count += n;
        break;
      }
      case E_DELTA_BP: {
        if (f_.ptype != P_INT32 && f_.ptype != P_INT64) throw Error(what_ + ": DELTA_BINARY_PACKED on a non-integer column");
        std::vector<int64_t> v;
        decode_delta_bp(c, n, f_.ptype == P_INT32, v);
        if (static_cast<int64_t>(v.size()) != n) throw Error(what_ + ": DELTA_BINARY_PACKED holds " + std::to_string(v.size()) + " values, expected " + std::to_string(n));
        size_t at = out.fixed.size();
        out.fixed.resize(at + n * 8);
        std::memcpy(out.fixed.data() + at, v.data(), n * 8);
        out.count += n;
        break;
      }
      case E_DELTA_LBA: {
        if (f_.ptype != P_BYTE_ARRAY) throw Error(what_ + ": DELTA_LENGTH_BYTE_ARRAY on a non-byte-array column");
        std::vector<int64_t> lens;
        decode_delta_bp(c, n, true, lens);
        if (static_cast<int64_t>(lens.size()) != n) throw Error(what_ + ": DELTA_LENGTH_BYTE_ARRAY lengths do not match the values");
        for (int64_t L : lens) {
          if (L < 0) throw Error(what_ + ": negative string length (corrupt page)");
          c.need(static_cast<size_t>(L));
          out.chars.insert(out.chars.end(), c.p, c.p + L);
          c.p += L;
          out.offsets.push_back(static_cast<int64_t>(out.chars.size()));
        }
        out.count += n;
        break;
      }
      case E_DELTA_BA: {
        if (f_.ptype != P_BYTE_ARRAY && f_.ptype != P_FLBA) throw Error(what_ + ": DELTA_BYTE_ARRAY on a non-byte-array column");
        std::vector<int64_t> prefix, lens;
        decode_delta_bp(c, n, true, prefix);
        decode_delta_bp(c, n, true, lens);
        if (static_cast<int64_t>(prefix.size()) != n || static_cast<int64_t>(lens.size()) != n)
          throw Error(what_ + ": DELTA_BYTE_ARRAY lengths do not match the values");
        std::string prev;  // prefixes refer to the previous value of the same page
        for (int64_t k = 0; k < n; k++) {
          if (prefix[k] < 0 || lens[k] < 0 || static_cast<size_t>(prefix[k]) > prev.size())
            throw Error(what_ + ": bad DELTA_BYTE_ARRAY prefix (corrupt page)");
          c.need(static_cast<size_t>(lens[k]));
          std::string v = prev.substr(0, prefix[k]);
          v.append(reinterpret_cast<const char*>(c.p), lens[k]);
          c.p += lens[k];
          push_bytes(out, v.data(), v.size());
          prev = std::move(v);
        }
        out.count += n;
        break;
      }
      case E_BSS: {
        int w = f_.ptype == P_FLOAT || f_.ptype == P_INT32 ? 4 : f_.ptype == P_DOUBLE || f_.ptype == P_INT64 ? 8
                : f_.ptype == P_FLBA ? static_cast<int>(f_.type_length) : 0;
        if (w <= 0) throw Error(what_ + ": BYTE_STREAM_SPLIT on a " + ptype_name(f_.ptype) + " column");
        c.need(static_cast<size_t>(n) * w);
        std::vector<uint8_t> joined(static_cast<size_t>(n) * w);
        for (int64_t i = 0; i < n; i++)
          for (int b = 0; b < w; b++) joined[i * w + b] = c.p[b * n + i];
        c.p += static_cast<size_t>(n) * w;
        Cursor jc{joined.data(), joined.data() + joined.size(), c.what};
        decode_plain(jc, n, out, false);
        break;
      }
      default: throw Error("not supported yet: " + enc_name(enc) + " encoding in " + what_);
    }
  }

  void push_bytes(LeafData& out, const char* p, size_t n) {
    if (f_.float16) {
      uint16_t h = n == 2 ? static_cast<uint16_t>(static_cast<uint8_t>(p[0]) | (static_cast<uint8_t>(p[1]) << 8)) : 0;
      int e = (h >> 10) & 0x1f, m = h & 0x3ff;
      double v = e == 0 ? std::ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp(m + 1024, e - 25);
      if (h & 0x8000) v = -v;
      push_fixed(out, &v);
      return;
    }
    out.chars.insert(out.chars.end(), p, p + n);
    out.offsets.push_back(static_cast<int64_t>(out.chars.size()));
  }
  static void push_fixed(LeafData& out, const void* v8) {
    size_t at = out.fixed.size();
    out.fixed.resize(at + 8);
    std::memcpy(out.fixed.data() + at, v8, 8);
  }

  void decode_plain(Cursor& c, int64_t n, LeafData& out, bool count = true) {
    switch (f_.ptype) {
      case P_BOOLEAN: {
        c.need(static_cast<size_t>((n + 7) / 8));
        for (int64_t i = 0; i < n; i++) out.fixed.push_back((c.p[i >> 3] >> (i & 7)) & 1);
        c.p += (n + 7) / 8;
        break;
      }
      case P_INT32:
      case P_FLOAT: {
        c.need(static_cast<size_t>(n) * 4);
        size_t at = out.fixed.size();
        out.fixed.resize(at + n * 8);
        uint8_t* dst = out.fixed.data() + at;
        for (int64_t i = 0; i < n; i++) {
          if (f_.ptype == P_INT32) {
            int32_t v;
            std::memcpy(&v, c.p + 4 * i, 4);
            int64_t w = v;
            std::memcpy(dst + 8 * i, &w, 8);
          } else {
            float v;
            std::memcpy(&v, c.p + 4 * i, 4);
            double w = v;
            std::memcpy(dst + 8 * i, &w, 8);
          }
        }
        c.p += n * 4;
        break;
      }
      case P_INT64:
      case P_DOUBLE: {
        c.need(static_cast<size_t>(n) * 8);
        out.fixed.insert(out.fixed.end(), c.p, c.p + n * 8);
        c.p += n * 8;
        break;
      }
      case P_INT96: {
        c.need(static_cast<size_t>(n) * 12);
        for (int64_t i = 0; i < n; i++) {
          uint64_t nanos;
          uint32_t day;
          std::memcpy(&nanos, c.p + 12 * i, 8);
          std::memcpy(&day, c.p + 12 * i + 8, 4);
          // wraps outside int64 nanoseconds (Spark's far dates), as pyarrow's default conversion does
          uint64_t ns_u = (static_cast<uint64_t>(day) - 2440588u) * 86400000000000ULL + nanos;
          int64_t ns = static_cast<int64_t>(ns_u);
          push_fixed(out, &ns);
        }
        c.p += n * 12;
        break;
      }
      case P_BYTE_ARRAY: {
        // length-prefixed values: the bytes go to chars back to back (at most what the page holds
        // besides the n prefixes), each end to offsets
        if (static_cast<uint64_t>(n) > c.left() / 4) c.need(static_cast<size_t>(n) * 4);
        size_t at = out.offsets.size(), base = out.chars.size(), room = c.left() - static_cast<size_t>(n) * 4;
        out.offsets.resize(at + static_cast<size_t>(n));
        if (out.chars.capacity() < base + room + 32)  // grow geometrically
          out.chars.reserve(std::max(base + room + 32, 2 * out.chars.capacity()));
        out.chars.resize(base + room + 32);  // slack: values are copied 32 bytes at a time
        char* chars = out.chars.data();
        size_t pos = base;
        int64_t* off = out.offsets.data() + at;
        const uint8_t* p = c.p;
        for (int64_t i = 0; i < n; i++) {
          uint32_t len;
          if (c.end - p < 4) c.fail("page data ends early (corrupt page)");
          std::memcpy(&len, p, 4);
          p += 4;
          size_t left = static_cast<size_t>(c.end - p);
          // the values after this one need their 4-byte lengths too: room counts them out
          if (len > left || len > base + room - pos) c.fail("page data ends early (corrupt page)");
          if (left - len >= 32) {  // whole 32-byte blocks stay inside the page (and the slack)
            for (size_t k = 0; k < len; k += 32) std::memcpy(chars + pos + k, p + k, 32);
          } else {
            std::memcpy(chars + pos, p, len);
          }
          p += len;
          pos += len;
          off[i] = static_cast<int64_t>(pos);
        }
        c.p = p;
        out.chars.resize(pos);
        break;
      }
      case P_FLBA: {
        size_t w = static_cast<size_t>(f_.type_length);
        if (w == 0 && n > 0) throw Error(what_ + ": FIXED_LEN_BYTE_ARRAY of length 0");
        c.need(w * static_cast<size_t>(n));
        for (int64_t i = 0; i < n; i++) push_bytes(out, reinterpret_cast<const char*>(c.p + w * i), w);
        c.p += w * n;
        break;
      }
      default: throw Error(what_ + ": unknown physical type");
    }
    if (count) out.count += n;
  }

  void decode_dict(Cursor& c, int64_t n, LeafData& out) {
    if (!has_dict_) throw Error(what_ + ": dictionary-encoded page without a dictionary page");
    int w = c.byte();
    if (w > 32) throw Error(what_ + ": bad dictionary index bit width " + std::to_string(w));
    idx_.resize(static_cast<size_t>(n));
    const uint32_t* idx = idx_.data();
    decode_rle(c, w, n, idx_.data(), "dictionary indices");
    uint32_t dn = static_cast<uint32_t>(std::min<int64_t>(dict_.count, UINT32_MAX));
    uint32_t top = 0;
    for (int64_t i = 0; i < n; i++) top = std::max(top, idx[i]);
    if (n > 0 && top >= dn)
      for (int64_t i = 0; i < n; i++)
        if (idx[i] >= dn)
          throw Error(what_ + ": dictionary index " + std::to_string(idx[i]) + " out of range (" + std::to_string(dn) + " entries)");
    if (f_.out_type != DType::String) {
      size_t wsz = f_.out_type == DType::Bool ? 1 : 8;
      size_t at = out.fixed.size();
      out.fixed.resize(at + n * wsz);
      uint8_t* dst = out.fixed.data() + at;
      const uint8_t* src = dict_.fixed.data();
      if (wsz == 8)
        for (int64_t i = 0; i < n; i++) std::memcpy(dst + i * 8, src + static_cast<size_t>(idx[i]) * 8, 8);
      else
        for (int64_t i = 0; i < n; i++) dst[i] = src[idx[i]];
    } else {
      const int64_t* doff = dict_.offsets.data();
      size_t total = 0;
      for (int64_t i = 0; i < n; i++) total += static_cast<size_t>(doff[idx[i] + 1] - doff[idx[i]]);
      if (total > (size_t{1} << 32))  // a few bytes of indices repeating a long entry: refuse the bomb
        throw Error(what_ + ": a dictionary-encoded page expands to " + std::to_string(total) +
                    " bytes of strings (over 4 GiB; corrupt page?)");
      size_t at = out.offsets.size(), pos = out.chars.size();
      if (out.chars.capacity() < pos + total) out.chars.reserve(std::max(pos + total, 2 * out.chars.capacity()));
      out.chars.resize(pos + total);
      out.offsets.resize(at + static_cast<size_t>(n));
      char* chars = out.chars.data();
      int64_t* off = out.offsets.data() + at;
      for (int64_t i = 0; i < n; i++) {
        size_t len = static_cast<size_t>(doff[idx[i] + 1] - doff[idx[i]]);
        std::memcpy(chars + pos, dict_.chars.data() + doff[idx[i]], len);
        pos += len;
        off[i] = static_cast<int64_t>(pos);
      }
    }
    out.count += n;
  }

  const FieldPlan& f_;
  const std::string& what_;
  PodVec<uint8_t>& page_buf_;
  PodVec<uint8_t>& dict_buf_;
  PodVec<uint32_t> idx_;
  int64_t chunk_start_ = 0;
  LeafData dict_;
  bool has_dict_ = false;
};

// Turns a leaf's values and levels into a column of `rows` rows.
// borrow: the column's buffers point into d (valid until d changes) instead of taking them over;
// the streaming reader hands each row group to its consumer that way and reuses d's memory.
ColumnPtr assemble(const FieldPlan& f, LeafData& d, int64_t rows, const std::string& what, bool borrow) {
  auto view = [](const void* p, size_t n) {
    Buffer b;
    b.data = static_cast<const uint8_t*>(p);
    b.size = n;
    return b;
  };
  auto values_col = [&](int64_t n) {
    auto c = std::make_shared<Column>();
    c->type = f.out_type;
    c->length = n;
    if (borrow) {
      if (f.out_type == DType::String) {
        c->offsets = view(d.offsets.data(), d.offsets.size() * 8);
        c->values = view(d.chars.data(), d.chars.size());
      } else {
        c->values = view(d.fixed.data(), d.fixed.size());
      }
    } else if (f.out_type == DType::String) {
      c->offsets = Buffer::from_pod(std::move(d.offsets));
      c->values = Buffer::from_pod(std::move(d.chars));
    } else {
      c->values = Buffer::from_pod(std::move(d.fixed));
    }
    return c;
  };
  size_t width = f.out_type == DType::Bool ? 1 : 8;
  if (!f.is_list) {
    if (f.max_def == 0) {
      if (d.count != rows) throw Error(what + ": " + std::to_string(d.count) + " values for " + std::to_string(rows) + " rows");
      return values_col(rows);
    }
    if (static_cast<int64_t>(d.def.size()) != rows)
      throw Error(what + ": " + std::to_string(d.def.size()) + " values for " + std::to_string(rows) + " rows");
    auto dense = values_col(d.count);
    if (d.count == rows) return dense;
    // spread the present values over the rows, nulls where def < max_def
    std::vector<uint8_t> valid(rows);
    ColumnBuilder b(what);
    auto c = std::make_shared<Column>();
    c->type = f.out_type;
    c->length = rows;
    int64_t k = 0;
    if (f.out_type == DType::String) {
      std::vector<int64_t> off(rows + 1);
      const int64_t* src = dense->offsets.as<int64_t>();
      for (int64_t r = 0; r < rows; r++) {
        valid[r] = d.def[r] == f.max_def;
        if (valid[r]) k++;
        off[r + 1] = src[k];
      }
      c->offsets = Buffer::from_pod(std::move(off));
      c->values = dense->values;
    } else {
      std::vector<uint8_t> vals(rows * width);
      for (int64_t r = 0; r < rows; r++) {
        valid[r] = d.def[r] == f.max_def;
        if (valid[r]) std::memcpy(vals.data() + r * width, dense->values.data + (k++) * width, width);
      }
      c->values = Buffer::from_vector(std::move(vals));
    }
    c->null_count = rows - d.count;
    c->validity = Buffer::from_vector(std::move(valid));
    return c;
  }
  // one level of lists: rep 0 starts a row
  size_t nl = d.rep.size();
  if (f.max_def > 0 && d.def.size() != nl) throw Error(what + ": repetition and definition levels disagree");
  std::vector<int64_t> offsets{0};
  std::vector<uint8_t> valid;
  std::vector<uint8_t> elem_valid;
  int64_t elems = 0, nulls = 0, elem_nulls = 0;
  for (size_t i = 0; i < nl; i++) {
    uint32_t def = f.max_def > 0 ? d.def[i] : 0;
    if (d.rep[i] == 0) {
      if (i > 0) offsets.push_back(elems);
      if (static_cast<int>(def) < f.list_def) {
        valid.push_back(0);
        nulls++;
        continue;
      }
      valid.push_back(1);
      if (static_cast<int>(def) < f.elem_def) continue;
    } else if (static_cast<int>(def) < f.elem_def) {
      throw Error(what + ": an empty list continues (corrupt levels)");
    }
    bool present = static_cast<int>(def) == f.max_def;
    elem_valid.push_back(present);
    elem_nulls += !present;
    elems++;
  }
  if (nl > 0) offsets.push_back(elems);
  if (static_cast<int64_t>(valid.size()) != rows)
    throw Error(what + ": " + std::to_string(valid.size()) + " lists for " + std::to_string(rows) + " rows");
  auto dense = values_col(d.count);
  auto child = std::make_shared<Column>();
  child->type = f.out_type;
  child->length = elems;
  if (elem_nulls == 0) {
    child = dense;
  } else {
    int64_t k = 0;
    if (f.out_type == DType::String) {
      std::vector<int64_t> off(elems + 1);
      const int64_t* src = dense->offsets.as<int64_t>();
      for (int64_t e = 0; e < elems; e++) {
        if (elem_valid[e]) k++;
        off[e + 1] = src[k];
      }
      child->offsets = Buffer::from_pod(std::move(off));
      child->values = dense->values;
    } else {
      std::vector<uint8_t> vals(elems * width);
      for (int64_t e = 0; e < elems; e++)
        if (elem_valid[e]) std::memcpy(vals.data() + e * width, dense->values.data + (k++) * width, width);
      child->values = Buffer::from_vector(std::move(vals));
    }
    child->null_count = elem_nulls;
    child->validity = Buffer::from_vector(std::move(elem_valid));
  }
  auto c = std::make_shared<Column>();
  c->type = DType::List;
  c->length = rows;
  c->offsets = Buffer::from_pod(std::move(offsets));
  c->child = child;
  c->null_count = nulls;
  if (nulls) c->validity = Buffer::from_vector(std::move(valid));
  return c;
}

// ---- file -------------------------------------------------------------------------------------------------------

DType out_type_of(const SchemaNode& leaf, FieldPlan& f, const std::string& what) {
  f.ptype = leaf.ptype;
  f.type_length = leaf.type_length;
  bool decimal = leaf.converted == 5 || has_logical(leaf, 5);
  if (decimal) throw Error("not supported yet: DECIMAL values in " + what);
  if (leaf.converted == 21) throw Error("not supported yet: INTERVAL values in " + what);
  switch (leaf.ptype) {
    case P_BOOLEAN: return DType::Bool;
    case P_INT32:
    case P_INT64: return DType::Int64;
    case P_INT96: f.int96 = true; return DType::Int64;
    case P_FLOAT:
    case P_DOUBLE: return DType::Float64;
    case P_BYTE_ARRAY: return DType::String;
    case P_FLBA:
      if (has_logical(leaf, 15)) {
        f.float16 = true;
        return DType::Float64;
      }
      return DType::String;
  }
  throw Error(what + ": unknown physical type " + std::to_string(leaf.ptype));
}

struct ParquetFile {
  const uint8_t* data;
  size_t size;
  std::string name;
  TVal meta;
  std::vector<SchemaNode> nodes;
  std::vector<FieldPlan> fields;
  int num_leaves = 0;

  void open() {
    if (size < 12 || std::memcmp(data, "PAR1", 4) != 0 || std::memcmp(data + size - 4, "PAR1", 4) != 0) {
      if (size >= 4 && std::memcmp(data + size - 4, "PARE", 4) == 0)
        throw Error("not supported yet: encrypted parquet footer (" + name + ")");
      throw Error(name + ": not a parquet file (no PAR1 magic)");
    }
    uint32_t len;
    std::memcpy(&len, data + size - 8, 4);
    if (len > size - 12) throw Error(name + ": footer length " + std::to_string(len) + " is past the start of the file");
    ThriftReader tr(data + size - 8 - len, len, name + " footer");
    meta = tr.read_struct();
    const auto* schema = meta.list(2);
    if (!schema || schema->empty()) throw Error(name + ": footer has no schema");
    for (auto& s : *schema) {
      SchemaNode n;
      n.name = s.get_s(4);
      n.ptype = s.has_i(1) ? s.get_i(1, -1) : -1;
      n.type_length = s.get_i(2, 0);
      n.repetition = s.get_i(3, 0);
      n.converted = s.get_i(6, -1);
      n.num_children = s.get_i(5, 0);
      n.logical = s.field(10);
      if (n.num_children < 0 || n.num_children > static_cast<int64_t>(schema->size()))
        throw Error(name + ": schema element '" + n.name + "' has a bad number of children (corrupt schema)");
      if (n.repetition < 0 || n.repetition > 2) throw Error(name + ": schema element '" + n.name + "' has a bad repetition");
      nodes.push_back(std::move(n));
    }
    size_t pos = 1;
    build_tree(0, pos, 0);
    if (pos != nodes.size()) throw Error(name + ": schema has elements outside the tree (corrupt schema)");
    plan_fields();
  }

  void build_tree(int parent, size_t& pos, int depth) {
    if (depth > 64) throw Error(name + ": schema nested too deeply");
    for (int64_t k = 0; k < nodes[parent].num_children; k++) {
      if (pos >= nodes.size()) throw Error(name + ": schema ends inside a group (corrupt schema)");
      int me = static_cast<int>(pos++);
      nodes[parent].children.push_back(me);
      if (nodes[me].ptype < 0) {
        if (nodes[me].num_children == 0) throw Error(name + ": group '" + nodes[me].name + "' without fields (corrupt schema)");
        build_tree(me, pos, depth + 1);
      } else if (nodes[me].ptype > 7) {
        throw Error(name + ": column '" + nodes[me].name + "' has unknown physical type " + std::to_string(nodes[me].ptype));
      }
    }
  }

  // Keeps only the named fields, in that order.
  void select(const std::vector<std::string>& names) {
    std::vector<FieldPlan> out;
    for (const auto& want : names) {
      auto it = std::find_if(fields.begin(), fields.end(), [&](const FieldPlan& f) { return f.name == want; });
      if (it == fields.end()) {
        std::string have;
        for (auto& f : fields) have += (have.empty() ? "" : ", ") + f.name;
        throw Error(name + ": no column '" + want + "' (its columns: " + have + ")");
      }
      for (auto& f : out)
        if (f.name == want) throw Error(name + ": column '" + want + "' asked for twice");
      out.push_back(*it);
    }
    fields = std::move(out);
  }

  int count_leaves(int n) const {
    if (nodes[n].ptype >= 0) return 1;
    int k = 0;
    for (int c : nodes[n].children) k += count_leaves(c);
    return k;
  }

  void plan_fields() {
    int leaf = 0;
    for (int top : nodes[0].children) {
      FieldPlan f;
      f.name = nodes[top].name;
      f.leaf = leaf;
      std::string what = "column '" + f.name + "' of " + name;
      const SchemaNode& n = nodes[top];
      int leaves = count_leaves(top);
      leaf += leaves;
      auto opt = [&](const SchemaNode& x) { return x.repetition != 0 ? 1 : 0; };
      try {
        if (n.ptype >= 0) {
          f.leaf_node = top;
          f.max_def = opt(n);
          if (n.repetition == 2) {  // a bare repeated field is a list of required values
            f.is_list = true;
            f.max_rep = 1;
            f.list_def = 0;
            f.elem_def = 1;
          }
        } else if (is_list_node(n)) {
          if (n.children.size() != 1) throw Error("not supported yet: LIST group with several fields in " + what);
          const SchemaNode& r = nodes[n.children[0]];
          if (r.repetition != 2) throw Error("not supported yet: LIST group without a repeated field in " + what);
          int leaf_node;
          if (r.ptype >= 0) {
            leaf_node = n.children[0];  // two-level list
          } else {
            if (r.children.size() != 1 || (r.name == "array" || r.name == n.name + "_tuple"))
              throw Error("not supported yet: lists of structs in " + what);
            const SchemaNode& e = nodes[r.children[0]];
            if (e.ptype < 0) throw Error("not supported yet: nested lists, maps or structs inside lists in " + what);
            leaf_node = r.children[0];
          }
          const SchemaNode& e = nodes[leaf_node];
          f.leaf_node = leaf_node;
          f.is_list = true;
          f.max_rep = 1;
          f.list_def = opt(n);
          f.elem_def = f.list_def + 1;
          f.max_def = f.elem_def + (leaf_node != n.children[0] ? opt(e) : 0);
        } else if (is_map_node(n)) {
          throw Error("not supported yet: map columns (" + what + ")");
        } else {
          throw Error("not supported yet: struct columns (" + what + ")");
        }
        f.out_type = out_type_of(nodes[f.leaf_node], f, what);
      } catch (const Error& e) {
        f.unsupported = e.what();
      }
      if (leaves != 1 && f.unsupported.empty()) f.unsupported = "not supported yet: nested column " + what;
      fields.push_back(std::move(f));
    }
    num_leaves = leaf;
  }

  struct FieldState {
    LeafData d;
    PodVec<uint8_t> page_buf, dict_buf;
    void reset() {
      d.fixed.clear();
      d.offsets.resize(1);
      d.chars.clear();
      d.def.clear();
      d.rep.clear();
      d.count = d.levels = 0;
    }
  };

  // One row group, decoded: per field its values and levels; streaming, also a Table whose columns
  // borrow them. lo..hi: the bytes of the file its column chunks occupy.
  struct Group {
    std::vector<FieldState> state;
    Table table;
    int64_t rows = 0;
    size_t lo = 0, hi = 0;
  };

  void decode_group(const TVal& rg, int gi, Group& g, bool streaming) const {
    g.table = Table();
    g.rows = rg.get_i(3, -1);
    g.lo = size;
    g.hi = 0;
    if (g.rows < 0) throw Error(name + ": row group " + std::to_string(gi) + " has a negative row count");
    const auto* cols = rg.list(1);
    if (!cols || static_cast<int>(cols->size()) != num_leaves)
      throw Error(name + ": row group " + std::to_string(gi) + " has " + std::to_string(cols ? cols->size() : 0) +
                  " column chunks, the schema " + std::to_string(num_leaves));
    g.state.resize(fields.size());
    for (size_t i = 0; i < fields.size(); i++) {
      auto& f = fields[i];
      const TVal& cc = (*cols)[f.leaf];
      const TVal* cm = cc.field(3);
      std::string what = "column '" + f.name + "' (row group " + std::to_string(gi) + ") of " + name;
      if (!cc.get_s(1).empty()) throw Error("not supported yet: column chunks in other files (" + what + ")");
      if (!cm) throw Error(what + ": column chunk without metadata");
      if (cm->get_i(1, -1) != f.ptype)
        throw Error(what + ": chunk type " + ptype_name(cm->get_i(1, -1)) + " differs from the schema's " + ptype_name(f.ptype));
      FieldState& st = g.state[i];
      st.reset();
      ChunkReader r(f, what, st.page_buf, st.dict_buf);
      r.read(data, size, *cm, st.d);
      g.lo = std::min(g.lo, r.range_lo);
      g.hi = std::max(g.hi, r.range_hi);
      if (streaming) {
        g.table.add(f.name, assemble(f, st.d, g.rows, what, true));
      } else {  // the chunk must hold exactly its rows, as assemble checks when streaming
        int64_t got = f.is_list ? 0 : (f.max_def > 0 ? st.d.levels : st.d.count);
        if (f.is_list)
          for (uint8_t r0 : st.d.rep) got += r0 == 0;
        if (got != g.rows)
          throw Error(what + ": " + std::to_string(got) + " values for " + std::to_string(g.rows) + " rows");
      }
    }
    g.table.num_rows = g.rows;
  }

  // Appends a row group's values and levels to those of the groups before it.
  static void append_leaf(LeafData& acc, const LeafData& d) {
    acc.fixed.insert(acc.fixed.end(), d.fixed.begin(), d.fixed.end());
    int64_t base = static_cast<int64_t>(acc.chars.size());
    size_t at = acc.offsets.size(), n = d.offsets.size() - 1;
    acc.offsets.resize(at + n);
    for (size_t k = 0; k < n; k++) acc.offsets[at + k] = d.offsets[k + 1] + base;
    acc.chars.insert(acc.chars.end(), d.chars.begin(), d.chars.end());
    acc.def.insert(acc.def.end(), d.def.begin(), d.def.end());
    acc.rep.insert(acc.rep.end(), d.rep.begin(), d.rep.end());
    acc.count += d.count;
    acc.levels += d.levels;
  }

  // Reserves the whole file's values from the footer's sizes, trusted only up to 64 times the file
  // (a corrupt footer must not allocate gigabytes; a short guess only means growing).
  void reserve(std::vector<LeafData>& acc, const std::vector<TVal>& rgs) const {
    uint64_t cap = 64 * static_cast<uint64_t>(size) + (1u << 20);
    for (size_t i = 0; i < fields.size(); i++) {
      uint64_t values = 0, bytes = 0;
      for (auto& rg : rgs) {
        const auto* cols = rg.list(1);
        const TVal* cm = cols && fields[i].leaf < static_cast<int>(cols->size()) ? (*cols)[fields[i].leaf].field(3) : nullptr;
        if (!cm) continue;
        values = std::min<uint64_t>(cap, values + static_cast<uint64_t>(std::max<int64_t>(0, std::min<int64_t>(cm->get_i(5, 0), cap))));
        bytes = std::min<uint64_t>(cap, bytes + static_cast<uint64_t>(std::max<int64_t>(0, std::min<int64_t>(cm->get_i(6, 0), cap))));
      }
      LeafData& d = acc[i];
      const FieldPlan& f = fields[i];
      if (f.out_type == DType::String) {
        d.chars.reserve(bytes);
        d.offsets.reserve(std::min(cap / 8, values + 1));
      } else {
        d.fixed.reserve(std::min(cap, values * (f.out_type == DType::Bool ? 1 : 8)));
      }
      if (f.max_def > 0) d.def.reserve(values);
      if (f.max_rep > 0) d.rep.reserve(values);
    }
  }

  // Streaming (accumulate=false): each row group becomes a Table handed to on_chunk, its buffers
  // borrowed from memory reused two groups later. Accumulate: the groups' values are appended to
  // buffers reserved from the footer's sizes, and on_chunk gets one Table owning them.
  // With two cores or more, the next row group decodes on a second thread while on_chunk (or the
  // append) runs; errors still come in file order. release(lo, hi): the bytes of a group are done.
  void read(const ChunkFn& on_chunk, bool accumulate, const ReleaseFn& release) {
    for (auto& f : fields)
      if (!f.unsupported.empty()) throw Error(f.unsupported);
    const auto* rgs = meta.list(4);
    int64_t total_rows = meta.get_i(3, 0);
    if (total_rows < 0) throw Error(name + ": negative row count in the footer");
    int64_t seen = 0;
    std::vector<LeafData> acc(accumulate ? fields.size() : 0);
    if (rgs && accumulate) reserve(acc, *rgs);
    size_t ng = rgs ? rgs->size() : 0;
    // Row groups decode `ahead` at a time on their own threads (one per core, at most 4, and no more
    // than 256 MB of decoded groups beside the current one) while this thread hands on (or appends)
    // the one before; each has its own buffers, reused `ahead + 1` groups later. One core, huge
    // groups, or no thread to be had: each decodes here when its turn comes.
    unsigned cores = std::thread::hardware_concurrency();
    size_t ahead = ng > 1 && cores > 1 ? std::min<size_t>(cores, 4) : 0;
    if (ahead > 0) {
      uint64_t biggest = 1;  // decoded bytes of the largest group, from the footer
      for (auto& rg : *rgs) {
        const auto* cols = rg.list(1);
        uint64_t bytes = 0;
        for (auto& f : fields) {
          const TVal* cm = cols && f.leaf < static_cast<int>(cols->size()) ? (*cols)[f.leaf].field(3) : nullptr;
          if (cm) bytes += static_cast<uint64_t>(std::clamp<int64_t>(cm->get_i(6, 0), 0, int64_t{1} << 40));
        }
        biggest = std::max(biggest, bytes);
      }
      ahead = std::min<uint64_t>(ahead, (uint64_t{256} << 20) / biggest);
    }
    std::vector<Group> groups(ahead + 1);
    auto decode = [&](size_t k) {
      decode_group((*rgs)[k], static_cast<int>(k + 1), groups[k % groups.size()], !accumulate);
    };
    std::vector<std::future<void>> pending(ng);  // destroyed (so waited for) before groups
    size_t launched = 0;
    for (size_t k = 0; k < ng; k++) {
      for (; launched < ng && launched <= k + ahead && ahead > 0; launched++) {
        try {
          pending[launched] = std::async(std::launch::async, decode, launched);
        } catch (const std::system_error&) {  // no thread to be had: decoded when its turn comes
        }
      }
      if (pending[k].valid()) pending[k].get();  // rethrows its error, in file order
      else decode(k);
      Group& g = groups[k % groups.size()];
      seen += g.rows;
      if (accumulate) {
        for (size_t i = 0; i < fields.size(); i++) append_leaf(acc[i], g.state[i].d);
      } else {
        on_chunk(g.table);
      }
      if (release && g.lo < g.hi) release(g.lo, g.hi);
    }
    if (seen != total_rows)
      throw Error(name + ": the row groups hold " + std::to_string(seen) + " rows, the footer says " + std::to_string(total_rows));
    if (accumulate) {
      Table t;
      for (size_t i = 0; i < fields.size(); i++)
        t.add(fields[i].name, assemble(fields[i], acc[i], seen, "column '" + fields[i].name + "' of " + name, false));
      t.num_rows = seen;
      if (seen > 0 || !fields.empty()) on_chunk(t);
    } else if (fields.empty() && seen == 0) {
      on_chunk(Table{});
    }
  }
};

TablePtr read_parquet_impl(const uint8_t* data, size_t size, const std::string& name, const ChunkFn& on_chunk,
                           const ReleaseFn& release, const std::vector<std::string>* columns) {
  ParquetFile f{data, size, name, {}, {}, {}, 0};
  f.open();
  if (columns) f.select(*columns);
  if (on_chunk) {
    bool any = false;
    f.read(
        [&](const Table& t) {
          any = true;
          on_chunk(t);
        },
        false, release);
    if (!any) {
      Table empty;
      for (auto& fp : f.fields) {
        auto c = std::make_shared<Column>();
        c->type = fp.out_type;
        if (fp.is_list) {
          c->type = DType::List;
          c->offsets = Buffer::from_pod(std::vector<int64_t>{0});
          auto ch = std::make_shared<Column>();
          ch->type = fp.out_type;
          if (fp.out_type == DType::String) ch->offsets = Buffer::from_pod(std::vector<int64_t>{0});
          c->child = ch;
        } else if (fp.out_type == DType::String) {
          c->offsets = Buffer::from_pod(std::vector<int64_t>{0});
        }
        empty.add(fp.name, c);
      }
      on_chunk(empty);
    }
    return nullptr;
  }
  auto out = std::make_shared<Table>();
  f.read([&](const Table& t) { *out = t; }, true, release);
  return out;
}

}  // namespace

TablePtr read_parquet_memory(const uint8_t* data, size_t size, const std::string& name, const ChunkFn& on_chunk,
                             const std::vector<std::string>* columns) {
  return read_parquet_impl(data, size, name, on_chunk, {}, columns);
}

// The file is mapped, not read: once a row group is handed on (or appended), its pages are dropped
// from this process (MADV_DONTNEED; the page cache keeps them), so the input costs about one row
// group of memory.
TablePtr read_parquet(const std::string& path, const ChunkFn& on_chunk, const std::vector<std::string>* columns) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("cannot read " + path + ": not a regular file");
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    throw Error(path + ": not a parquet file (empty)");
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw Error("cannot map " + path + ": " + std::strerror(errno));
  std::shared_ptr<void> unmap(p, [size](void* q) { ::munmap(q, size); });
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  // whole pages inside the group's bytes; one shared with the next group may be needed again: kept
  auto release = [p, size](size_t lo, size_t hi) {
    size_t b = (lo + page - 1) & ~(page - 1), e = hi & ~(page - 1);
    if (b < e && e <= size) ::madvise(static_cast<uint8_t*>(p) + b, e - b, MADV_DONTNEED);
  };
  return read_parquet_impl(static_cast<const uint8_t*>(p), size, path, on_chunk, release, columns);
}

// ---- writer --------------------------------------------------------------------------------------------------------

namespace {

class ThriftWriter {
 public:
  std::string out;
  void field(int16_t id, uint8_t type) {
    int16_t delta = static_cast<int16_t>(id - last_.back());
    if (delta > 0 && delta <= 15) out.push_back(static_cast<char>((delta << 4) | type));
    else {
      out.push_back(static_cast<char>(type));
      varint(zz(id));
    }
    last_.back() = id;
  }
  void i32(int16_t id, int64_t v) {
    field(id, T_I32);
    varint(zz(v));
  }
  void i64(int16_t id, int64_t v) {
    field(id, T_I64);
    varint(zz(v));
  }
  void str(int16_t id, std::string_view s) {
    field(id, T_BINARY);
    varint(s.size());
    out.append(s);
  }
  void begin_struct(int16_t id) {
    field(id, T_STRUCT);
    last_.push_back(0);
  }
  void begin_list_elem_struct() { last_.push_back(0); }
  void end_struct() {
    out.push_back(0);
    last_.pop_back();
  }
  void list(int16_t id, uint8_t elem, size_t n) {
    field(id, T_LIST);
    if (n < 15) out.push_back(static_cast<char>((n << 4) | elem));
    else {
      out.push_back(static_cast<char>(0xf0 | elem));
      varint(n);
    }
  }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out.push_back(static_cast<char>(v));
  }
  static uint64_t zz(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }

 private:
  std::vector<int16_t> last_{0};
};

void rle_levels(const std::vector<uint32_t>& levels, int width, std::string& out) {
  std::string body;
  size_t i = 0;
  int bytes = (width + 7) / 8;
  while (i < levels.size()) {
    size_t j = i;
    while (j < levels.size() && levels[j] == levels[i]) j++;
    uint64_t h = static_cast<uint64_t>(j - i) << 1;
    while (h >= 0x80) {
      body.push_back(static_cast<char>((h & 0x7f) | 0x80));
      h >>= 7;
    }
    body.push_back(static_cast<char>(h));
    for (int b = 0; b < bytes; b++) body.push_back(static_cast<char>((levels[i] >> (8 * b)) & 0xff));
    i = j;
  }
  uint32_t len = static_cast<uint32_t>(body.size());
  out.append(reinterpret_cast<const char*>(&len), 4);
  out += body;
}

void plain_value(const Column& c, int64_t i, std::string& out) {
  switch (c.type) {
    case DType::Int64: out.append(reinterpret_cast<const char*>(c.values.data + 8 * i), 8); break;
    case DType::Float64: out.append(reinterpret_cast<const char*>(c.values.data + 8 * i), 8); break;
    case DType::String: {
      auto s = c.str(i);
      uint32_t n = static_cast<uint32_t>(s.size());
      out.append(reinterpret_cast<const char*>(&n), 4);
      out.append(s);
      break;
    }
    default: break;
  }
}

constexpr size_t kPageBytes = size_t{1} << 20;

int64_t codec_id(const std::string& c) {
  if (c == "none" || c == "uncompressed" || c.empty()) return 0;
  if (c == "snappy") return 1;
  if (c == "gzip") return 2;
  if (c == "zstd") return 6;
  throw Error("not supported yet: writing parquet with " + c + " compression (snappy, gzip, zstd, none)");
}

std::string compress(int64_t codec, const std::string& in) {
  if (codec == 0) return in;
  std::string out;
  if (codec == 1) {
    size_t n = snappy_max_compressed_length(in.size());
    out.resize(n);
    if (snappy_compress(in.data(), in.size(), out.data(), &n) != SNAPPY_OK) throw Error("snappy compression failed");
    out.resize(n);
  } else if (codec == 6) {
    out.resize(ZSTD_compressBound(in.size()));
    size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 3);
    if (ZSTD_isError(n)) throw Error("zstd compression failed");
    out.resize(n);
  } else {
    z_stream z{};
    deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    out.resize(deflateBound(&z, in.size()) + 32);
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    int rc = deflate(&z, Z_FINISH);
    out.resize(out.size() - z.avail_out);
    deflateEnd(&z);
    if (rc != Z_STREAM_END) throw Error("gzip compression failed");
  }
  return out;
}

}  // namespace

void write_parquet(const Table& t, const std::string& path, const std::string& compression, int64_t row_group_size) {
  int64_t codec = codec_id(compression);
  if (row_group_size <= 0) row_group_size = 100000;
  for (size_t i = 0; i < t.columns.size(); i++) {
    const Column& c = *t.columns[i];
    if (c.type == DType::List && c.child && c.child->type == DType::List)
      throw Error("not supported yet: writing nested lists to parquet (column '" + t.names[i] + "')");
  }
  std::string file = "PAR1";
  struct ChunkMeta {
    int64_t ptype, offset, csize, usize, nvalues;
  };
  std::vector<std::vector<ChunkMeta>> groups;
  std::vector<int64_t> group_rows;
  auto ptype_of = [](DType t) -> int64_t {
    switch (t) {
      case DType::Bool: return P_BOOLEAN;
      case DType::Int64: return P_INT64;
      case DType::Float64: return P_DOUBLE;
      case DType::String: return P_BYTE_ARRAY;
      default: return P_INT32;  // all-null columns
    }
  };
  for (int64_t start = 0; start < t.num_rows || (start == 0 && t.num_rows == 0 && false); start += row_group_size) {
    int64_t end = std::min(t.num_rows, start + row_group_size);
    std::vector<ChunkMeta> metas;
    for (size_t ci = 0; ci < t.columns.size(); ci++) {
      ColumnPtr col = column_slice(t.columns[ci], start, end);
      const Column& c = *col;
      bool list = c.type == DType::List;
      const Column& leaf = list ? *c.child : c;
      std::vector<uint32_t> rep, def;
      std::string values;
      std::vector<uint8_t> bools;
      auto emit = [&](const Column& src, int64_t i, uint32_t full) {
        if (src.is_valid(i)) {
          def.push_back(full);
          if (src.type == DType::Bool) bools.push_back(src.values.data[i]);
          else plain_value(src, i, values);
        } else {
          def.push_back(full - 1);
        }
      };
      int64_t n = end - start;
      int max_def = list ? 3 : 1;
      // pages of about kPageBytes of values (as pyarrow's default), each starting on a row
      int64_t chunk_offset = static_cast<int64_t>(file.size()), csize = 0, usize = 0, nvalues = 0;
      auto flush_page = [&] {
        if (def.empty()) return;
        if (leaf.type == DType::Bool) {
          std::string packed((bools.size() + 7) / 8, '\0');
          for (size_t i = 0; i < bools.size(); i++)
            if (bools[i]) packed[i >> 3] = static_cast<char>(packed[i >> 3] | (1 << (i & 7)));
          values = packed;
        }
        std::string page;
        if (list) rle_levels(rep, 1, page);
        rle_levels(def, bit_width(max_def), page);
        page += values;
        std::string comp = compress(codec, page);
        ThriftWriter h;
        h.i32(1, 0);
        h.i32(2, static_cast<int64_t>(page.size()));
        h.i32(3, static_cast<int64_t>(comp.size()));
        h.begin_struct(5);
        h.i32(1, static_cast<int64_t>(def.size()));
        h.i32(2, E_PLAIN);
        h.i32(3, E_RLE);
        h.i32(4, E_RLE);
        h.end_struct();
        h.out.push_back(0);
        csize += static_cast<int64_t>(h.out.size() + comp.size());
        usize += static_cast<int64_t>(h.out.size() + page.size());
        nvalues += static_cast<int64_t>(def.size());
        file += h.out;
        file += comp;
        rep.clear();
        def.clear();
        values.clear();
        bools.clear();
      };
      for (int64_t r = 0; r < n; r++) {
        if (values.size() + bools.size() / 8 >= kPageBytes) flush_page();
        if (!list) {
          emit(c, r, 1);
          continue;
        }
        if (!c.is_valid(r)) {
          rep.push_back(0);
          def.push_back(0);
          continue;
        }
        int64_t b = c.offset(r), e = c.offset(r + 1);
        if (b == e) {
          rep.push_back(0);
          def.push_back(1);
          continue;
        }
        for (int64_t k = b; k < e; k++) {
          rep.push_back(k == b ? 0 : 1);
          emit(leaf, k, 3);
        }
      }
      flush_page();
      metas.push_back(ChunkMeta{ptype_of(leaf.type), chunk_offset, csize, usize, nvalues});
    }
    groups.push_back(std::move(metas));
    group_rows.push_back(end - start);
  }
  // footer
  ThriftWriter w;
  w.i32(1, 1);
  size_t nschema = 1;
  for (auto& c : t.columns) nschema += c->type == DType::List ? 3 : 1;
  w.list(2, T_STRUCT, nschema);
  auto elem = [&](auto body) {
    w.begin_list_elem_struct();
    body();
    w.end_struct();
  };
  elem([&] {
    w.str(4, "schema");
    w.i32(5, static_cast<int64_t>(t.columns.size()));
  });
  for (size_t ci = 0; ci < t.columns.size(); ci++) {
    const Column& c = *t.columns[ci];
    auto leaf_elem = [&](DType type, const std::string& name) {
      elem([&] {
        w.i32(1, ptype_of(type));
        w.i32(3, 1);
        w.str(4, name);
        if (type == DType::String) w.i32(6, 0);
      });
    };
    if (c.type == DType::List) {
      elem([&] {
        w.i32(3, 1);
        w.str(4, t.names[ci]);
        w.i32(5, 1);
        w.i32(6, 3);
      });
      elem([&] {
        w.i32(3, 2);
        w.str(4, "list");
        w.i32(5, 1);
      });
      leaf_elem(c.child ? c.child->type : DType::Null, "element");
    } else {
      leaf_elem(c.type, t.names[ci]);
    }
  }
  w.i64(3, t.num_rows);
  w.list(4, T_STRUCT, groups.size());
  for (size_t g = 0; g < groups.size(); g++) {
    w.begin_list_elem_struct();
    w.list(1, T_STRUCT, groups[g].size());
    int64_t total = 0;
    for (size_t ci = 0; ci < groups[g].size(); ci++) {
      const ChunkMeta& m = groups[g][ci];
      total += m.usize;
      w.begin_list_elem_struct();
      w.i64(2, m.offset);
      w.begin_struct(3);
      w.i32(1, m.ptype);
      w.list(2, T_I32, 2);
      w.varint(ThriftWriter::zz(E_PLAIN));
      w.varint(ThriftWriter::zz(E_RLE));
      const Column& c = *t.columns[ci];
      if (c.type == DType::List) {
        w.list(3, T_BINARY, 3);
        for (const std::string& s : {t.names[ci], std::string("list"), std::string("element")}) {
          w.varint(s.size());
          w.out += s;
        }
      } else {
        w.list(3, T_BINARY, 1);
        w.varint(t.names[ci].size());
        w.out += t.names[ci];
      }
      w.i32(4, codec);
      w.i64(5, m.nvalues);
      w.i64(6, m.usize);
      w.i64(7, m.csize);
      w.i64(9, m.offset);
      w.end_struct();
      w.end_struct();
    }
    w.i64(2, total);
    w.i64(3, group_rows[g]);
    w.end_struct();
  }
  w.str(6, "skyrun");
  w.out.push_back(0);
  file += w.out;
  uint32_t len = static_cast<uint32_t>(w.out.size());
  file.append(reinterpret_cast<const char*>(&len), 4);
  file += "PAR1";
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error("cannot write " + tmp + ": " + std::strerror(errno));
  bool ok = std::fwrite(file.data(), 1, file.size(), f) == file.size();
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error("cannot write " + path);
  }
}

}  // namespace sky::data
