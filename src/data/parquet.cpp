// data: parquet files (reader written in the next step).
#include "data/readers.hpp"

namespace sky::data {

TablePtr read_parquet(const std::string& path, const ChunkFn&) { throw Error("not supported yet: parquet (" + path + ")"); }
TablePtr read_parquet_memory(const uint8_t*, size_t, const std::string& name, const ChunkFn&) {
  throw Error("not supported yet: parquet (" + name + ")");
}
void write_parquet(const Table&, const std::string& path, const std::string&, int64_t) {
  throw Error("not supported yet: writing parquet (" + path + ")");
}

}  // namespace sky::data
