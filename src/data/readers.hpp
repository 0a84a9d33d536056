// data: readers turning files into tables (json/jsonl, csv/tsv, text, parquet) and writers of json
// lines and parquet. Errors name the file and the row or column; nothing here knows Lua.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "data/table.hpp"

namespace sky::data {

struct JsonOptions {
  std::string field;  // read the array under this key of a top-level object
};
TablePtr read_json(const std::string& path, const JsonOptions& opt);

struct CsvOptions {
  char sep = ',';
};
TablePtr read_csv(const std::string& path, const CsvOptions& opt);

struct TextOptions {
  std::string sample_by = "line";  // "line", "paragraph" or "document"
  bool keep_linebreaks = false;
};
TablePtr read_text(const std::string& path, const TextOptions& opt);

// Writes rows as JSON lines (lines=true) or one JSON array.
void write_json(const Table& t, const std::string& path, bool lines);

// Parquet: reads the whole file; each row group is handed to `on_chunk` (so a caller can stream it
// to a TableWriter), or collected into the returned table when on_chunk is empty. columns: only
// these, in this order (the others are not decoded); null: all of them.
using ChunkFn = std::function<void(const Table&)>;
TablePtr read_parquet(const std::string& path, const ChunkFn& on_chunk = {},
                      const std::vector<std::string>* columns = nullptr);
TablePtr read_parquet_memory(const uint8_t* data, size_t size, const std::string& name, const ChunkFn& on_chunk = {},
                             const std::vector<std::string>* columns = nullptr);
// Writes one row group per `row_group_size` rows, plain encoding, snappy or none.
void write_parquet(const Table& t, const std::string& path, const std::string& compression, int64_t row_group_size);

// The whole file, or an error naming it.
std::string read_file_bytes(const std::string& path);

}  // namespace sky::data
