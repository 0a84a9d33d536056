// libFuzzer entry point for the parquet reader: any input must read or raise data::Error, never
// crash, hang or leak. Built with the `fuzz` option, or by hand:
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -Isrc src/data/fuzz_parquet.cpp \
//     src/data/parquet.cpp src/data/readers.cpp src/data/table.cpp -lsnappy -lzstd -lz -o fuzz_parquet
//   ./fuzz_parquet -max_total_time=300 corpus/ ../shared/data/parquet/   (seeds: the test files)
// Row groups decode on several threads: to check them with ThreadSanitizer, build the same way with
// -fsanitize=thread,fuzzer -fno-sanitize-coverage=trace-pc-guard,inline-8bit-counters,pc-table,trace-cmp
// (libFuzzer's counters would race) and run it over the corpus and some many-row-group files.
#include <cstddef>
#include <cstdint>

#include "data/readers.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {  // streaming: row group by row group
    int64_t rows = 0;
    sky::data::read_parquet_memory(data, size, "fuzz.parquet", [&](const sky::data::Table& t) { rows += t.num_rows; });
  } catch (const sky::data::Error&) {
  }
  try {  // whole file into one table
    sky::data::read_parquet_memory(data, size, "fuzz.parquet");
  } catch (const sky::data::Error&) {
  }
  return 0;
}
