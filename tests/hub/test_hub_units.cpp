// The hub client's pure pieces: repo naming, patterns, id and filename checks, URL quoting, the
// progress line, and the cache's refs/pointers written as huggingface_hub writes them.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "hub/cache.hpp"
#include "hub/http.hpp"
#include "hub/hub.hpp"
#include "hub/progress.hpp"

using namespace sky::hub;

TEST_CASE("repo folder names join the type and the id with '--'") {
  CHECK(repo_folder_name("julien-c/EsperBERTo-small", RepoType::model) == "models--julien-c--EsperBERTo-small");
  CHECK(repo_folder_name("gpt2", RepoType::model) == "models--gpt2");
  CHECK(repo_folder_name("stanfordnlp/imdb", RepoType::dataset) == "datasets--stanfordnlp--imdb");
}

TEST_CASE("file patterns follow fnmatch.fnmatchcase, '*' crossing '/'") {
  CHECK(repo_pattern_match("*.json", "config.json"));
  CHECK(repo_pattern_match("*.json", "sub/dir/config.json"));
  CHECK(repo_pattern_match("data/*", "data/a/b.parquet"));
  CHECK(repo_pattern_match("data/", "data/a/b.parquet"));
  CHECK_FALSE(repo_pattern_match("data/", "database.txt"));
  CHECK(repo_pattern_match("model-0000?-of-*.safetensors", "model-00001-of-00002.safetensors"));
  CHECK(repo_pattern_match("[!.]*", "config.json"));
  CHECK_FALSE(repo_pattern_match("[!.]*", ".gitattributes"));
  CHECK(repo_pattern_match("[a-c]x", "bx"));
  CHECK_FALSE(repo_pattern_match("*.JSON", "config.json"));
  CHECK(repo_pattern_match("*", ""));
}

TEST_CASE("repo ids are checked as huggingface_hub's validate_repo_id") {
  CHECK_NOTHROW(cache::validate_repo_id("gpt2"));
  CHECK_NOTHROW(cache::validate_repo_id("meta-llama/Llama-3.2-1B"));
  CHECK_NOTHROW(cache::validate_repo_id("org_x/name.v2"));
  CHECK_THROWS_AS(cache::validate_repo_id("a/b/c"), HubError);
  CHECK_THROWS_AS(cache::validate_repo_id("a--b"), HubError);
  CHECK_THROWS_AS(cache::validate_repo_id("a/..b"), HubError);
  CHECK_THROWS_AS(cache::validate_repo_id("-a/b"), HubError);
  CHECK_THROWS_AS(cache::validate_repo_id("a/b.git"), HubError);
  CHECK_THROWS_AS(cache::validate_repo_id("a b"), HubError);
  CHECK_THROWS_AS(cache::validate_repo_id(""), HubError);
}

TEST_CASE("file names that could leave the snapshot folder are refused") {
  CHECK_NOTHROW(cache::validate_filename("config.json"));
  CHECK_NOTHROW(cache::validate_filename("a/b/c.txt"));
  CHECK_THROWS_AS(cache::validate_filename("../x"), HubError);
  CHECK_THROWS_AS(cache::validate_filename("a/../../x"), HubError);
  CHECK_THROWS_AS(cache::validate_filename("a\\..\\x"), HubError);
  CHECK_THROWS_AS(cache::validate_filename("/etc/passwd"), HubError);
  CHECK_THROWS_AS(cache::validate_filename("C:x"), HubError);
  CHECK_THROWS_AS(cache::validate_filename("a//b"), HubError);
  CHECK_THROWS_AS(cache::validate_filename(""), HubError);
}

TEST_CASE("commit hashes are 40 lower-case hex digits") {
  CHECK(cache::is_commit_hash("0123456789abcdef0123456789abcdef01234567"));
  CHECK_FALSE(cache::is_commit_hash("0123456789ABCDEF0123456789abcdef01234567"));
  CHECK_FALSE(cache::is_commit_hash("main"));
  CHECK_FALSE(cache::is_commit_hash("0123456789abcdef"));
}

TEST_CASE("URL quoting matches urllib.parse.quote") {
  CHECK(http::url_quote("a b/c.json") == "a%20b/c.json");
  CHECK(http::url_quote("refs/pr/1", "") == "refs%2Fpr%2F1");
  CHECK(http::url_quote("ü~_-.") == "%C3%BC~_-.");
  CHECK(http::url_unquote("refs%2Fpr%2F1") == "refs/pr/1");
  CHECK(http::url_origin("HTTP://Host.x:8080/a?b") == "http://host.x:8080");
  CHECK(http::url_origin("http://127.0.0.1:1") == "http://127.0.0.1:1");
}

TEST_CASE("sizes print with three significant digits, as tqdm's unit_scale") {
  CHECK(progress_format_size(0) == "0.00");
  CHECK(progress_format_size(999) == "999");
  CHECK(progress_format_size(1000) == "1.00k");
  CHECK(progress_format_size(51200) == "51.2k");
  CHECK(progress_format_size(440e6) == "440M");
  CHECK(progress_format_size(1.5e9) == "1.50G");
}

TEST_CASE("a progress line shows percent, bar, bytes, elapsed, ETA and rate") {
  SUBCASE("half done") {
    std::string line = progress_render("model.safetensors", 50000000, 100000000, 5, 10e6, 100);
    CHECK(line.rfind("model.safetensors:  50%|", 0) == 0);
    CHECK(line.find("| 50.0M/100M [00:05<00:05, 10.0MB/s]") != std::string::npos);
  }
  SUBCASE("unknown size") {
    CHECK(progress_render("x", 2048, 0, 61, 1000, 80) == "x: 2.05kB [01:01, 1.00kB/s]");
  }
  SUBCASE("no rate yet") {
    CHECK(progress_render("x", 0, 10, 0, 0, 80).find("[00:00<?, ?B/s]") != std::string::npos);
  }
}

TEST_CASE("refs are rewritten atomically only when the commit changes, and pointers are relative") {
  char tmpl[] = "/tmp/hub_units_XXXXXX";
  std::string root = mkdtemp(tmpl);
  cache::RepoCache rc(root, "org/name", RepoType::model);
  std::string commit = "0123456789abcdef0123456789abcdef01234567";
  rc.write_ref("main", commit);
  CHECK(cache::read_small_file(rc.ref_path("main")) == commit);
  CHECK(rc.commit_of("main") == commit);
  CHECK(rc.commit_of(commit) == commit);
  rc.write_ref(commit, commit);  // a commit names itself: no ref file
  CHECK_FALSE(cache::exists(rc.ref_path(commit)));
  rc.link_pointer("abc123", commit, "dir/file.txt");
  char target[256];
  ssize_t n = readlink(rc.pointer_path(commit, "dir/file.txt").c_str(), target, sizeof target - 1);
  REQUIRE(n > 0);
  CHECK(std::string(target, static_cast<size_t>(n)) == "../../../blobs/abc123");
  CHECK_THROWS_AS(rc.blob_path("../x"), HubError);
  CHECK_THROWS_AS(rc.snapshot_dir("a/b"), HubError);
  std::string cmd = "rm -rf '" + root + "'";
  CHECK(system(cmd.c_str()) == 0);
}
