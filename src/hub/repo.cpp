// Repository-wide calls: the repo info and tree APIs, list_repo_files, snapshot_download and
// resolve_model_folder (what from_pretrained uses, sharded safetensors indexes included).
#include <algorithm>
#include <mutex>
#include <set>

#include <rapidjson/document.h>

#include "host/json.hpp"
#include "hub/call.hpp"

namespace sky::hub {

namespace detail {
namespace {

constexpr int kResolveWorkers = 8;  // files of one from_pretrained fetched at once (snapshot_download's default)

rapidjson::Document parse_json(const Call& c, const std::string& body, const std::string& what) {
  rapidjson::Document doc;
  if (JsonParsed r = json_parse(doc, body); !r)
    throw HubError(ErrorKind::http, "the Hub at " + c.endpoint + " sent invalid JSON for " + what + " of '" +
                                        c.repo_id + "' (" + r.reason() + " at byte " + std::to_string(r.offset) + ")");
  return doc;
}

// GET {endpoint}/api/{type}s/{repo}/revision/{revision}: the commit the revision points at.
std::string repo_info_sha(const Call& c, http::Session& s, const std::string& revision) {
  std::string url = c.api_url("/revision/" + http::url_quote(revision, ""));
  http::Response r = request_with_backoff(c, s, "GET", url, c.headers(true), true);
  if (r.status >= 400) raise_for_response(c, r, "", revision);
  rapidjson::Document doc = parse_json(c, r.body, "the repository info");
  if (!doc.IsObject() || !doc.HasMember("sha") || !doc["sha"].IsString())
    throw HubError(ErrorKind::http, "the Hub at " + c.endpoint + " sent no commit (sha) for '" + c.repo_id +
                                        "' at revision '" + revision + "'");
  return doc["sha"].GetString();
}

// The URL of rel="next" in a Link header, as requests' response.links.
std::optional<std::string> next_link(const http::Response& r) {
  std::optional<std::string> link = r.header("link");
  if (!link) return std::nullopt;
  size_t pos = 0;
  while (pos < link->size()) {
    size_t lt = link->find('<', pos), gt = link->find('>', lt);
    if (lt == std::string::npos || gt == std::string::npos) break;
    size_t end = link->find(',', gt);
    std::string params = link->substr(gt + 1, end == std::string::npos ? std::string::npos : end - gt - 1);
    if (params.find("rel=\"next\"") != std::string::npos || params.find("rel=next") != std::string::npos)
      return link->substr(lt + 1, gt - lt - 1);
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return std::nullopt;
}

// GET {endpoint}/api/{type}s/{repo}/tree/{commit}?recursive=true, every page.
cache::Tree fetch_tree(const Call& c, http::Session& s, const std::string& commit) {
  cache::Tree tree;
  std::string url = c.api_url("/tree/" + http::url_quote(commit, "") + "?recursive=true&expand=false");
  for (int page = 0; page < 100000; ++page) {
    // A Link to another host gets no token: credentials go to the endpoint's own host only.
    bool own_host = http::url_origin(url) == http::url_origin(c.endpoint);
    http::Response r = request_with_backoff(c, s, "GET", url, c.headers(own_host), true);
    if (r.status >= 400) raise_for_response(c, r, "", commit);
    rapidjson::Document doc = parse_json(c, r.body, "the file list");
    if (!doc.IsArray())
      throw HubError(ErrorKind::http, "the Hub at " + c.endpoint + " sent a file list of '" + c.repo_id +
                                          "' that is not an array");
    for (const auto& e : doc.GetArray()) {
      if (!e.IsObject() || !e.HasMember("type") || !e["type"].IsString() || !e.HasMember("path") ||
          !e["path"].IsString())
        continue;
      if (std::string_view(e["type"].GetString()) != "file") continue;
      cache::TreeEntry entry;
      if (e.HasMember("size") && e["size"].IsInt64()) entry.size = e["size"].GetInt64();
      if (e.HasMember("oid") && e["oid"].IsString()) entry.blob_id = e["oid"].GetString();
      if (e.HasMember("lfs") && e["lfs"].IsObject()) {
        const auto& lfs = e["lfs"];
        if (lfs.HasMember("oid") && lfs["oid"].IsString()) entry.lfs_sha256 = lfs["oid"].GetString();
        if (lfs.HasMember("size") && lfs["size"].IsInt64()) entry.lfs_size = lfs["size"].GetInt64();
      }
      tree.emplace(e["path"].GetString(), std::move(entry));
    }
    std::optional<std::string> next = next_link(r);
    if (!next) return tree;
    url = *next;
  }
  throw HubError(ErrorKind::http, "the file list of '" + c.repo_id + "' never ends (pagination loop)");
}

std::string describe_snapshot(const Call& c) {
  return "the snapshot of '" + c.repo_id + "' (revision '" + c.revision + "')";
}

// A revision's file listing, from the cache or the Hub.
struct RevisionTree {
  std::optional<cache::Tree> tree;    // nullopt: neither the Hub nor the cache could say
  std::string commit;                 // empty when unknown
  std::string network_error;          // why the Hub was not asked (offline, unreachable); empty: it was
  std::optional<HubError> hub_error;  // gated or not found: raised when the cache cannot answer either
};

RevisionTree tree_of_revision(const Call& c, http::Session& s) {
  RevisionTree out;
  cache::RepoCache rc = c.repo_cache();
  if (cache::is_commit_hash(c.revision)) {
    out.commit = c.revision;
    if ((out.tree = rc.read_tree(out.commit))) return out;  // a commit never changes
  }
  if (c.offline()) {
    out.network_error = c.offline_reason();
  } else {
    try {
      if (out.commit.empty()) out.commit = repo_info_sha(c, s, c.revision);
      out.tree = rc.read_tree(out.commit);
      if (!out.tree) {
        out.tree = fetch_tree(c, s, out.commit);
        rc.write_tree(out.commit, *out.tree);
      }
      return out;
    } catch (const HubError& e) {
      // As huggingface_hub: a Hub that says no (down, gated, unknown) still lets the cache answer.
      if (e.kind() != ErrorKind::http && e.kind() != ErrorKind::gated && e.kind() != ErrorKind::repo_not_found) throw;
      out.network_error = e.what();
      if (e.kind() != ErrorKind::http) out.hub_error = e;
    } catch (const http::TransportError& e) {
      if (e.kind() == http::TransportError::Kind::cancelled) rethrow_transport(c, e);
      out.network_error = unreachable_reason(c, e);
    }
  }
  if (out.commit.empty()) out.commit = rc.commit_of(c.revision).value_or("");
  if (!out.commit.empty()) out.tree = rc.read_tree(out.commit);
  return out;
}

std::string dir_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash + 1);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The shard files a model.safetensors.index.json names (weight_map values), relative to the repo
// root (the index's folder + the shard name), sorted and unique.
std::vector<std::string> index_shards(const std::string& index_path, const std::string& index_name) {
  std::optional<std::string> text = cache::read_small_file(index_path);
  if (!text) throw HubError(ErrorKind::io, "cannot read the safetensors index '" + index_path + "'");
  rapidjson::Document doc;
  if (JsonParsed r = json_parse(doc, *text); !r)
    throw HubError(ErrorKind::integrity, "'" + index_path + "' is not valid JSON (" + r.reason() + " at byte " +
                                             std::to_string(r.offset) + ")");
  if (!doc.IsObject() || !doc.HasMember("weight_map") || !doc["weight_map"].IsObject())
    throw HubError(ErrorKind::integrity, "'" + index_path + "' is not a safetensors index: no \"weight_map\" object");
  std::set<std::string> shards;
  for (const auto& m : doc["weight_map"].GetObject()) {
    if (!m.value.IsString())
      throw HubError(ErrorKind::integrity, "'" + index_path + "': the weight_map entry of '" +
                                               std::string(m.name.GetString()) + "' is not a file name");
    std::string shard = dir_of(index_name) + m.value.GetString();
    cache::validate_filename(shard);
    shards.insert(shard);
  }
  if (shards.empty()) throw HubError(ErrorKind::integrity, "'" + index_path + "' names no shard");
  return {shards.begin(), shards.end()};
}

}  // namespace
}  // namespace detail

std::vector<std::string> list_repo_files(std::string_view repo_id, const RepoOptions& opts) {
  detail::Call c = detail::call_new(repo_id, opts);
  http::Session s;
  s.cancelled = opts.cancelled;
  detail::RevisionTree rt = detail::tree_of_revision(c, s);
  cache::RepoCache rc = c.repo_cache();
  if (!rt.tree) {
    if (rt.hub_error) throw *rt.hub_error;
    std::string missing = rt.commit.empty() ? detail::describe_missing(rc, c.revision, "") : rc.tree_path(rt.commit);
    throw HubError(ErrorKind::not_cached, rt.network_error + ", and the file list of '" + c.repo_id +
                                              "' (revision '" + c.revision + "') is not in the cache at " +
                                              c.cache_dir + ": missing " + missing);
  }
  if (rt.network_error.empty()) {
    try {
      rc.write_ref(c.revision, rt.commit);
    } catch (const HubError&) {
      // A read-only cache still answers; the ref only helps later offline calls.
    }
  }
  std::vector<std::string> files;
  files.reserve(rt.tree->size());
  for (const auto& [path, entry] : *rt.tree) files.push_back(path);
  return files;
}

std::string snapshot_download(std::string_view repo_id, const SnapshotOptions& opts) {
  detail::Call c = detail::call_new(repo_id, opts);
  http::Session s;
  s.cancelled = opts.cancelled;
  cache::RepoCache rc = c.repo_cache();
  detail::RevisionTree rt = detail::tree_of_revision(c, s);
  const std::string& commit = rt.commit;

  auto wanted = [&](const std::string& path) {
    bool allowed = opts.allow_patterns.empty();
    for (const auto& p : opts.allow_patterns) allowed = allowed || repo_pattern_match(p, path);
    for (const auto& p : opts.ignore_patterns) allowed = allowed && !repo_pattern_match(p, path);
    return allowed;
  };

  if (!rt.network_error.empty()) {  // the cache alone answers, as huggingface_hub does offline
    if (commit.empty() || !cache::is_dir(rc.snapshot_dir(commit))) {
      if (rt.hub_error) throw *rt.hub_error;
      throw HubError(ErrorKind::not_cached, rt.network_error + ", and " + detail::describe_snapshot(c) +
                                                " is not in the cache at " + c.cache_dir + ": missing " +
                                                detail::describe_missing(rc, c.revision, ""));
    }
    if (rt.tree) {
      std::vector<std::string> missing;
      for (const auto& [path, entry] : *rt.tree)
        if (wanted(path) && !cache::exists(rc.pointer_path(commit, path))) missing.push_back(path);
      if (!missing.empty()) {
        std::string sample;
        for (size_t i = 0; i < missing.size() && i < 3; ++i) sample += (i ? ", " : "") + missing[i];
        if (missing.size() > 3) sample += ", ... (" + std::to_string(missing.size() - 3) + " more)";
        throw HubError(ErrorKind::not_cached, rt.network_error + ", and " + detail::describe_snapshot(c) +
                                                  " in the cache is incomplete: " + std::to_string(missing.size()) +
                                                  " file(s) missing (" + sample + ") in " + rc.snapshot_dir(commit));
      }
    }
    return rc.snapshot_dir(commit);
  }

  std::vector<std::string> files;
  for (const auto& [path, entry] : *rt.tree)
    if (wanted(path)) files.push_back(path);
  rc.write_ref(c.revision, commit);
  cache::make_dirs(rc.snapshot_dir(commit));
  ProgressBar bar("Fetching " + std::to_string(files.size()) + " files", 0, 0, c.settings.progress_bars);
  detail::run_parallel(c, opts.max_workers, files.size(), [&](size_t i, http::Session& session) {
    detail::FileRequest req;
    req.filename = files[i];
    req.revision = commit;
    req.force_download = opts.force_download;
    req.shared_bar = &bar;
    detail::download_file(c, session, req);
  });
  bar.finish();
  return rc.snapshot_dir(commit);
}

ResolvedFolder resolve_model_folder(std::string_view path_or_id, const std::vector<WantedFile>& files,
                                    const DownloadOptions& opts) {
  std::string id(path_or_id);
  if (files.empty()) throw HubError(ErrorKind::invalid_argument, "resolve_model_folder: no files asked for");
  ResolvedFolder out;

  if (cache::is_dir(id)) {  // a local folder, as transformers' os.path.isdir check
    out.folder = id;
    for (const WantedFile& f : files) {
      std::string path = id + "/" + f.name;
      if (cache::exists(path)) {
        out.files.push_back(f.name);
        continue;
      }
      std::string index = f.name + ".index.json";
      if (detail::ends_with(f.name, ".safetensors") && cache::exists(id + "/" + index)) {
        out.files.push_back(index);
        for (const std::string& shard : detail::index_shards(id + "/" + index, index)) {
          if (!cache::exists(id + "/" + shard))
            throw HubError(ErrorKind::entry_not_found, "shard '" + shard + "' named by '" + index +
                                                           "' is missing from the local folder '" + id + "'");
          out.files.push_back(shard);
        }
        continue;
      }
      if (!f.optional)
        throw HubError(ErrorKind::entry_not_found, "file '" + f.name + "' not found in the local folder '" + id + "'");
    }
    return out;
  }
  bool path_like = id.empty() || id[0] == '/' || id[0] == '.' || id[0] == '~' || std::count(id.begin(), id.end(), '/') > 1;
  if (path_like)
    throw HubError(ErrorKind::invalid_argument, "'" + id + "' is neither a local folder nor a repo id on the Hub " +
                                                    "('name' or 'namespace/name')");

  detail::Call c = detail::call_new(id, opts);
  cache::RepoCache rc = c.repo_cache();
  std::string commit;
  std::mutex mu;
  std::vector<std::string> present;      // relative paths found
  std::vector<std::string> shards;       // to fetch after the indexes

  auto fetch = [&](http::Session& s, const std::string& name, bool optional, const std::string& revision,
                   ProgressBar* bar) -> detail::FileResult {
    detail::FileRequest req;
    req.filename = name;
    req.revision = revision;
    req.asked_revision = c.revision;
    req.force_download = opts.force_download;
    req.optional = optional;
    req.shared_bar = bar;
    detail::FileResult r = detail::download_file(c, s, req);
    std::lock_guard<std::mutex> lock(mu);
    if (r.path) present.push_back(name);
    return r;
  };
  // One wanted file; a missing X.safetensors falls back to X.safetensors.index.json.
  auto fetch_wanted = [&](http::Session& s, const WantedFile& f, const std::string& revision,
                          ProgressBar* bar) -> detail::FileResult {
    bool sharded_candidate = detail::ends_with(f.name, ".safetensors");
    detail::FileResult r = fetch(s, f.name, f.optional || sharded_candidate, revision, bar);
    if (r.path || !sharded_candidate) return r;
    std::string index = f.name + ".index.json";
    detail::FileResult ri = fetch(s, index, true, r.commit.empty() ? revision : r.commit, bar);
    if (ri.path) {
      std::vector<std::string> names = detail::index_shards(*ri.path, index);
      std::lock_guard<std::mutex> lock(mu);
      shards.insert(shards.end(), names.begin(), names.end());
      return ri;
    }
    if (!f.optional)
      throw HubError(ErrorKind::entry_not_found, "file '" + f.name + "' not found in '" + c.repo_id +
                                                     "' at revision '" + c.revision + "' (nor '" + index + "')");
    return ri;
  };

  // The first file pins the commit: every other file comes from that same commit.
  {
    http::Session s;
    s.cancelled = opts.cancelled;
    detail::FileResult first = fetch_wanted(s, files[0], c.revision, nullptr);
    commit = first.commit;
  }
  std::string pinned = commit.empty() ? c.revision : commit;
  auto run_many = [&](size_t n, const std::function<void(size_t, http::Session&, ProgressBar*)>& one) {
    if (n == 0) return;
    std::unique_ptr<ProgressBar> bar;
    if (n > 1) bar = std::make_unique<ProgressBar>(c.repo_id + " (" + std::to_string(n) + " files)", 0, 0,
                                                   c.settings.progress_bars);
    detail::run_parallel(c, detail::kResolveWorkers, n, [&](size_t i, http::Session& s) { one(i, s, bar.get()); });
    if (bar) bar->finish();
  };
  run_many(files.size() - 1, [&](size_t i, http::Session& s, ProgressBar* bar) {
    detail::FileResult r = fetch_wanted(s, files[i + 1], pinned, bar);
    std::lock_guard<std::mutex> lock(mu);
    if (commit.empty()) commit = r.commit;
  });
  std::sort(shards.begin(), shards.end());
  shards.erase(std::unique(shards.begin(), shards.end()), shards.end());
  run_many(shards.size(), [&](size_t i, http::Session& s, ProgressBar* bar) {
    fetch(s, shards[i], false, pinned, bar);
  });

  if (present.empty()) {
    std::string names;
    for (const WantedFile& f : files) names += (names.empty() ? "'" : ", '") + f.name + "'";
    throw HubError(ErrorKind::entry_not_found, "none of " + names + " found in '" + c.repo_id + "' at revision '" +
                                                   c.revision + "'");
  }
  if (commit.empty()) commit = rc.commit_of(c.revision).value_or("");
  out.folder = rc.snapshot_dir(commit);
  out.commit = commit;
  // Wanted order first, then the shards: a stable listing for callers.
  std::vector<std::string> ordered;
  for (const WantedFile& f : files) {
    for (const std::string& name : {f.name, f.name + ".index.json"})
      if (std::find(present.begin(), present.end(), name) != present.end() &&
          std::find(ordered.begin(), ordered.end(), name) == ordered.end())
        ordered.push_back(name);
  }
  for (const std::string& shard : shards) ordered.push_back(shard);
  out.files = std::move(ordered);
  return out;
}

}  // namespace sky::hub
