// Writing to the Hub as huggingface_hub's HfApi does: whoami, create_repo, and commits through the
// commit API (preupload to learn which files go through LFS, the LFS batch API with basic or
// multipart transfers and verify, then one NDJSON commit). Native core; src/hub/lua_hub.cpp binds
// it. Every message names the repository and file; none contains the token.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hub/hub.hpp"

namespace sky::hub {

// GET /api/whoami-v2 with the token: the Hub's answer (JSON text: type, name, orgs, ...).
// Throws HubError(gated) when there is no token or the Hub refuses it.
std::string whoami(const RepoOptions& opts);

struct CreateRepoOptions : RepoOptions {
  std::optional<bool> is_private;  // nullopt: the Hub's default
  bool exist_ok = false;
};

// POST /api/repos/create; returns the repository's URL (<endpoint>/[datasets/]org/name). An existing
// repository is an error unless exist_ok.
std::string create_repo(std::string_view repo_id, const CreateRepoOptions& opts);

// One change of a commit: add the local file `local_path` as `path_in_repo`, or delete path_in_repo
// (a folder when it ends in '/').
struct CommitOperation {
  std::string path_in_repo;
  std::string local_path;  // empty: a deletion
};

struct CommitOptions : RepoOptions {
  std::string commit_message;
  std::string commit_description;
  std::string parent_commit;  // non-empty: the Hub refuses the commit unless the branch is there
  int max_workers = 5;        // LFS objects uploaded at once
};

struct CommitInfo {
  std::string commit_url;
  std::string oid;
  std::vector<std::string> lfs_uploaded;  // paths whose bytes went through LFS (not already there)
  std::vector<std::string> ignored;       // paths the Hub said to ignore (.gitignore)
};

// huggingface_hub.create_commit for additions of local files and deletions.
CommitInfo create_commit(std::string_view repo_id, const std::vector<CommitOperation>& ops, const CommitOptions& opts);

}  // namespace sky::hub
