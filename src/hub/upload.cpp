// Writing to the Hub: whoami, create_repo and create_commit, with the requests huggingface_hub's
// hf_api.py, _commit_api.py and lfs.py send (their URLs, payloads and headers).
#include "hub/upload.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>

#include "host/digest.hpp"
#include "host/fs.hpp"
#include "host/json.hpp"
#include "hub/call.hpp"

namespace sky::hub {

namespace {

using detail::Call;
using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

constexpr size_t kPreuploadChunk = 256;  // files per preupload request, as huggingface_hub
constexpr size_t kLfsBatchChunk = 256;   // objects per LFS batch request
constexpr const char* kLfsMedia = "application/vnd.git-lfs+json";

void key_string(JsonWriter& w, const char* key, std::string_view value) {
  w.Key(key);
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

rapidjson::Document parse_reply(const Call& c, const http::Response& r, const std::string& what) {
  rapidjson::Document doc;
  if (JsonParsed p = json_parse(doc, r.body); !p || !doc.IsObject())
    throw HubError(ErrorKind::http, "the Hub at " + c.endpoint + " sent " +
                                        (p ? std::string("a non-object") : "invalid JSON (" + p.reason() + ")") +
                                        " for " + what + " of '" + c.repo_id + "'");
  return doc;
}

std::string member_string(const rapidjson::Value& v, const char* key) {
  if (v.IsObject() && v.HasMember(key) && v[key].IsString()) return v[key].GetString();
  return "";
}

// A write needs a token: say how to give one (never what it is).
void require_token(const Call& c, const char* what) {
  if (c.token.empty())
    throw HubError(ErrorKind::gated, std::string(what) + " on " + c.endpoint +
                                         " needs a token with write access: pass token=, call huggingface_hub.login{ token = ... }"
                                         " or set HF_TOKEN");
}

http::Timeouts api_timeouts(const Call& c) {
  http::Timeouts t;
  t.connect_s = c.settings.etag_timeout_s;
  t.stall_s = 60;  // the Hub may take a while to answer a commit of many files
  return t;
}

// A JSON (or NDJSON) POST with the token, retried on 5xx/429 and timeouts as http_backoff does.
http::Response post(const Call& c, http::Session& s, const std::string& url, const std::string& body,
                    const std::string& content_type, bool with_auth = true, const std::string& accept = "") {
  http::Headers h = c.headers(with_auth);
  h.emplace_back("content-type", content_type);
  if (!accept.empty()) h.emplace_back("accept", accept);
  double wait = 1;
  for (int attempt = 0;; ++attempt) {
    bool last = attempt >= 4;
    try {
      http::Response r = s.request("POST", url, h, api_timeouts(c), false, &body);
      if (last || !detail::retryable_status(r.status)) return r;
    } catch (const http::TransportError& e) {
      if (last || e.kind() != http::TransportError::Kind::timeout) detail::rethrow_transport(c, e);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(wait * 1000)));
    wait = std::min(wait * 2, 8.0);
  }
}

// The Hub's answer >= 400 to a write, as a HubError naming the repository and what was asked.
[[noreturn]] void raise_write(const Call& c, const http::Response& r, const std::string& what) {
  std::string msg = c.mask(r.header("x-error-message").value_or(""));
  if (msg.empty()) {
    rapidjson::Document doc;
    if (json_parse(doc, r.body) && doc.IsObject()) msg = c.mask(member_string(doc, "error"));
  }
  std::string status = "HTTP " + std::to_string(r.status);
  if (r.status == 401 || r.status == 403)
    throw HubError(ErrorKind::gated, what + " of '" + c.repo_id + "' at " + c.endpoint + " was refused (" + status +
                                         (msg.empty() ? "" : ": " + msg) +
                                         "): the token must have write access to the repository", r.status);
  if (r.status == 404 && r.header("x-error-code").value_or("") == "RepoNotFound")
    throw HubError(ErrorKind::repo_not_found, "repository '" + c.repo_id + "' not found at " + c.endpoint +
                                                  ": create it first (create_repo)", r.status);
  if (r.header("x-error-code").value_or("") == "RevisionNotFound")
    throw HubError(ErrorKind::revision_not_found, "revision '" + c.revision + "' not found in '" + c.repo_id + "' at " +
                                                      c.endpoint + " (" + what + ")", r.status);
  throw HubError(ErrorKind::http, what + " of '" + c.repo_id + "' at " + c.endpoint + " failed (" + status +
                                      (msg.empty() ? "" : ": " + msg) + ")", r.status);
}

// huggingface_hub's _validate_path_in_repo: relative, no "..", nothing under .git/ or .cache/.
std::string clean_path_in_repo(std::string p) {
  if (!p.empty() && p.front() == '/') p.erase(0, 1);
  if (p.rfind("./", 0) == 0) p.erase(0, 2);
  if (p.empty() || p == "." || p == ".." || p.rfind("../", 0) == 0)
    throw HubError(ErrorKind::invalid_argument, "invalid path_in_repo '" + p + "': it must name a file inside the repository");
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find('/', start);
    std::string part = p.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (part == ".." || part == ".git" || part == ".cache")
      throw HubError(ErrorKind::invalid_argument, "invalid path_in_repo '" + p + "': '" + part +
                                                      "' is not allowed in a repository path");
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return p;
}

struct Addition {
  std::string path;   // in the repository
  std::string local;  // on disk
  digest::FileDigests d;
  bool lfs = false;
  bool ignore = false;
};

// POST .../preupload/<revision>: which files the Hub wants through LFS, and which it ignores.
void preupload(const Call& c, http::Session& s, std::vector<Addition>& adds) {
  std::string url = c.api_url("/preupload/" + http::url_quote(c.revision, ""));
  for (size_t at = 0; at < adds.size(); at += kPreuploadChunk) {
    size_t end = std::min(adds.size(), at + kPreuploadChunk);
    rapidjson::StringBuffer sb;
    JsonWriter w(sb);
    w.StartObject();
    w.Key("files");
    w.StartArray();
    for (size_t i = at; i < end; ++i) {
      w.StartObject();
      key_string(w, "path", adds[i].path);
      key_string(w, "sample", digest::base64_encode(adds[i].d.sample));
      w.Key("size");
      w.Uint64(adds[i].d.size);
      key_string(w, "sha", adds[i].d.sha256);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    http::Response r = post(c, s, url, sb.GetString(), "application/json");
    if (r.status >= 400) raise_write(c, r, "preupload");
    rapidjson::Document doc = parse_reply(c, r, "the preupload answer");
    if (!doc.HasMember("files") || !doc["files"].IsArray())
      throw HubError(ErrorKind::http, "the Hub at " + c.endpoint + " sent no 'files' in its preupload answer for '" +
                                          c.repo_id + "'");
    for (const auto& f : doc["files"].GetArray()) {
      std::string path = member_string(f, "path");
      auto it = std::find_if(adds.begin() + at, adds.begin() + end, [&](const Addition& a) { return a.path == path; });
      if (it == adds.begin() + end) continue;
      it->lfs = member_string(f, "uploadMode") == "lfs";
      it->ignore = f.HasMember("shouldIgnore") && f["shouldIgnore"].IsBool() && f["shouldIgnore"].GetBool();
    }
  }
}

// A PUT of a file slice, retried on 5xx/429/timeouts; returns the answer.
http::Response put_slice(const Call& c, http::Session& s, const std::string& url, const http::Headers& headers,
                         const Addition& a, uint64_t offset, uint64_t length) {
  double wait = 1;
  for (int attempt = 0;; ++attempt) {
    bool last = attempt >= 4;
    try {
      http::Timeouts t;
      t.connect_s = c.settings.etag_timeout_s;
      t.stall_s = 60;
      http::Response r = s.send("PUT", url, headers, t, http::Body::file_slice(a.local, offset, length));
      if (last || !detail::retryable_status(r.status)) return r;
    } catch (const http::TransportError& e) {
      bool transient = e.kind() == http::TransportError::Kind::timeout || e.kind() == http::TransportError::Kind::broken;
      if (last || !transient) detail::rethrow_transport(c, e);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(wait * 1000)));
    wait = std::min(wait * 2, 8.0);
  }
}

// The upload and verify actions of one LFS object (lfs.py's lfs_upload).
void lfs_upload_one(const Call& c, http::Session& s, const Addition& a, const rapidjson::Value& actions) {
  std::string what = "the LFS upload of '" + a.path + "'";
  const rapidjson::Value& up = actions["upload"];
  std::string href = member_string(up, "href");
  if (href.empty()) throw HubError(ErrorKind::http, "the Hub at " + c.endpoint + " gave no upload URL for '" + a.path + "'");
  http::Headers plain;  // the storage URLs are pre-signed: no token goes there
  plain.emplace_back("user-agent", c.headers(false).front().second);
  const rapidjson::Value* header = up.HasMember("header") && up["header"].IsObject() ? &up["header"] : nullptr;
  uint64_t chunk = 0;
  if (header && header->HasMember("chunk_size")) {
    const rapidjson::Value& cs = (*header)["chunk_size"];
    chunk = cs.IsUint64() ? cs.GetUint64() : cs.IsString() ? std::strtoull(cs.GetString(), nullptr, 10) : 0;
    if (chunk == 0) throw HubError(ErrorKind::http, "the Hub at " + c.endpoint + " sent a bad chunk_size for '" + a.path + "'");
  }
  if (chunk == 0) {
    http::Response r = put_slice(c, s, href, plain, a, 0, a.d.size);
    if (r.status >= 400) raise_write(c, r, what);
  } else {
    // Multipart: the header's other keys are part numbers ("1", "2", ...) with their URLs.
    std::vector<std::pair<int, std::string>> parts;
    for (auto it = header->MemberBegin(); it != header->MemberEnd(); ++it) {
      std::string k = it->name.GetString();
      if (k == "chunk_size") continue;
      char* endp = nullptr;
      long n = std::strtol(k.c_str(), &endp, 10);
      if (!*k.c_str() || *endp || n < 1 || !it->value.IsString())
        throw HubError(ErrorKind::http, "the Hub at " + c.endpoint + " sent a bad multipart header '" + k + "' for '" + a.path + "'");
      parts.emplace_back(static_cast<int>(n), it->value.GetString());
    }
    std::sort(parts.begin(), parts.end());
    uint64_t expected = (a.d.size + chunk - 1) / chunk;
    if (parts.size() != expected)
      throw HubError(ErrorKind::http, "the Hub at " + c.endpoint + " sent " + std::to_string(parts.size()) +
                                          " part URLs for '" + a.path + "', " + std::to_string(expected) + " expected");
    rapidjson::StringBuffer sb;
    JsonWriter w(sb);
    w.StartObject();
    key_string(w, "oid", a.d.sha256);
    w.Key("parts");
    w.StartArray();
    for (size_t i = 0; i < parts.size(); ++i) {
      uint64_t off = i * chunk;
      http::Response r = put_slice(c, s, parts[i].second, plain, a, off, std::min(chunk, a.d.size - off));
      if (r.status >= 400) raise_write(c, r, what + " (part " + std::to_string(i + 1) + ")");
      w.StartObject();
      w.Key("partNumber");
      w.Int(static_cast<int>(i + 1));
      key_string(w, "etag", r.header("etag").value_or(""));
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    http::Response r = post(c, s, href, sb.GetString(), kLfsMedia, false, kLfsMedia);
    if (r.status >= 400) raise_write(c, r, what + " (completion)");
  }
  if (actions.HasMember("verify") && actions["verify"].IsObject()) {
    rapidjson::StringBuffer sb;
    JsonWriter w(sb);
    w.StartObject();
    key_string(w, "oid", a.d.sha256);
    w.Key("size");
    w.Uint64(a.d.size);
    w.EndObject();
    http::Response r = post(c, s, member_string(actions["verify"], "href"), sb.GetString(), kLfsMedia, true, kLfsMedia);
    if (r.status >= 400) raise_write(c, r, what + " (verify)");
  }
}

// POST <repo>.git/info/lfs/objects/batch, then the transfers the Hub asks for, in parallel.
// Returns the paths whose bytes were sent (the others the Hub already had).
std::vector<std::string> lfs_upload(const Call& c, http::Session& s, const std::vector<const Addition*>& objs,
                                    int workers) {
  std::vector<std::string> sent;
  std::string url = c.repo_url() + ".git/info/lfs/objects/batch";
  for (size_t at = 0; at < objs.size(); at += kLfsBatchChunk) {
    size_t end = std::min(objs.size(), at + kLfsBatchChunk);
    rapidjson::StringBuffer sb;
    JsonWriter w(sb);
    w.StartObject();
    key_string(w, "operation", "upload");
    w.Key("transfers");
    w.StartArray();
    w.String("basic");
    w.String("multipart");
    w.EndArray();
    w.Key("objects");
    w.StartArray();
    for (size_t i = at; i < end; ++i) {
      w.StartObject();
      key_string(w, "oid", objs[i]->d.sha256);
      w.Key("size");
      w.Uint64(objs[i]->d.size);
      w.EndObject();
    }
    w.EndArray();
    key_string(w, "hash_algo", "sha256");
    w.Key("ref");
    w.StartObject();
    key_string(w, "name", c.revision);
    w.EndObject();
    w.EndObject();
    http::Response r = post(c, s, url, sb.GetString(), kLfsMedia, true, kLfsMedia);
    if (r.status >= 400) raise_write(c, r, "the LFS batch request");
    rapidjson::Document doc = parse_reply(c, r, "the LFS batch answer");
    if (!doc.HasMember("objects") || !doc["objects"].IsArray())
      throw HubError(ErrorKind::http, "the Hub at " + c.endpoint + " sent no 'objects' in its LFS batch answer for '" +
                                          c.repo_id + "'");
    std::vector<std::pair<const Addition*, const rapidjson::Value*>> uploads;
    for (const auto& o : doc["objects"].GetArray()) {
      std::string oid = member_string(o, "oid");
      auto it = std::find_if(objs.begin() + at, objs.begin() + end, [&](const Addition* a) { return a->d.sha256 == oid; });
      if (it == objs.begin() + end) continue;
      if (o.HasMember("error") && o["error"].IsObject())
        throw HubError(ErrorKind::http, "the Hub at " + c.endpoint + " refused the LFS object of '" + (*it)->path +
                                            "': " + c.mask(member_string(o["error"], "message")));
      if (o.HasMember("actions") && o["actions"].IsObject() && o["actions"].HasMember("upload")) {
        uploads.emplace_back(*it, &o["actions"]);
        sent.push_back((*it)->path);
      }
    }
    detail::run_parallel(c, workers, uploads.size(),
                         [&](size_t i, http::Session& ws) { lfs_upload_one(c, ws, *uploads[i].first, *uploads[i].second); });
  }
  return sent;
}

Call bare_call(const RepoOptions& opts) {
  Call c;
  c.settings = Settings::from_env();
  c.endpoint = opts.endpoint.empty() ? c.settings.endpoint : opts.endpoint;
  while (!c.endpoint.empty() && c.endpoint.back() == '/') c.endpoint.pop_back();
  if (opts.token) c.token = *opts.token;
  else c.token = get_token().value_or("");
  c.cancelled = opts.cancelled;
  return c;
}

void refuse_offline(const Call& c, const std::string& what) {
  if (c.offline()) throw HubError(ErrorKind::not_cached, what + " needs the network, but " + c.offline_reason());
}

}  // namespace

std::string whoami(const RepoOptions& opts) {
  Call c = bare_call(opts);
  c.local_files_only = opts.local_files_only;
  refuse_offline(c, "whoami");
  if (c.token.empty())
    throw HubError(ErrorKind::gated, "whoami needs a token: pass token=, call huggingface_hub.login{ token = ... } or set HF_TOKEN");
  http::Session s;
  s.cancelled = c.cancelled;
  http::Response r = detail::request_with_backoff(c, s, "GET", c.endpoint + "/api/whoami-v2", c.headers(true), false);
  if (r.status == 401)
    throw HubError(ErrorKind::gated, "the token was refused by " + c.endpoint + " (HTTP 401): it is invalid or expired", 401);
  if (r.status >= 400) raise_write(c, r, "whoami");
  parse_reply(c, r, "whoami");
  return r.body;
}

std::string create_repo(std::string_view repo_id, const CreateRepoOptions& opts) {
  Call c = detail::call_new(repo_id, opts);
  refuse_offline(c, "create_repo");
  require_token(c, "creating a repository");
  size_t slash = c.repo_id.find('/');
  rapidjson::StringBuffer sb;
  JsonWriter w(sb);
  w.StartObject();
  key_string(w, "name", slash == std::string::npos ? c.repo_id : c.repo_id.substr(slash + 1));
  w.Key("organization");
  if (slash == std::string::npos) w.Null();
  else w.String(c.repo_id.substr(0, slash).c_str());
  if (opts.is_private) {
    w.Key("private");
    w.Bool(*opts.is_private);
  }
  if (c.type != RepoType::model) key_string(w, "type", repo_type_name(c.type));
  w.EndObject();
  http::Session s;
  s.cancelled = c.cancelled;
  http::Response r = post(c, s, c.endpoint + "/api/repos/create", sb.GetString(), "application/json");
  if (r.status == 409 && opts.exist_ok) return c.repo_url();
  if (r.status == 409)
    throw HubError(ErrorKind::http, "repository '" + c.repo_id + "' already exists at " + c.endpoint +
                                        " (pass exist_ok=true to use it)", 409);
  if (r.status >= 400) raise_write(c, r, "creating the repository");
  rapidjson::Document doc = parse_reply(c, r, "create_repo");
  std::string url = member_string(doc, "url");
  return url.empty() ? c.repo_url() : url;
}

CommitInfo create_commit(std::string_view repo_id, const std::vector<CommitOperation>& ops, const CommitOptions& opts) {
  Call c = detail::call_new(repo_id, opts);
  refuse_offline(c, "create_commit");
  require_token(c, "a commit");
  if (opts.commit_message.empty()) throw HubError(ErrorKind::invalid_argument, "create_commit: commit_message must not be empty");
  std::vector<Addition> adds;
  std::vector<std::string> deletions;
  for (const auto& op : ops) {
    if (op.local_path.empty()) {
      deletions.push_back(op.path_in_repo);
      continue;
    }
    Addition a;
    a.path = clean_path_in_repo(op.path_in_repo);
    a.local = op.local_path;
    try {
      a.d = digest::file_digests(op.local_path);
    } catch (const std::exception& e) {
      throw HubError(ErrorKind::io, std::string(e.what()) + " (to upload as '" + a.path + "' to '" + c.repo_id + "')");
    }
    adds.push_back(std::move(a));
  }
  http::Session s;
  s.cancelled = c.cancelled;
  if (!adds.empty()) preupload(c, s, adds);
  std::vector<const Addition*> lfs;
  for (const auto& a : adds)
    if (a.lfs && !a.ignore) lfs.push_back(&a);
  CommitInfo info;
  if (!lfs.empty()) info.lfs_uploaded = lfs_upload(c, s, lfs, std::max(1, opts.max_workers));

  // The NDJSON commit: a header line, then one line per operation.
  std::string body;
  auto line = [&](const char* key, const std::function<void(JsonWriter&)>& value) {
    rapidjson::StringBuffer sb;
    JsonWriter w(sb);
    w.StartObject();
    key_string(w, "key", key);
    w.Key("value");
    w.StartObject();
    value(w);
    w.EndObject();
    w.EndObject();
    body.append(sb.GetString(), sb.GetSize());
    body += '\n';
  };
  line("header", [&](JsonWriter& w) {
    key_string(w, "summary", opts.commit_message);
    key_string(w, "description", opts.commit_description);
    if (!opts.parent_commit.empty()) key_string(w, "parentCommit", opts.parent_commit);
  });
  for (const auto& a : adds) {
    if (a.ignore) {
      info.ignored.push_back(a.path);
      continue;
    }
    if (a.lfs) {
      line("lfsFile", [&](JsonWriter& w) {
        key_string(w, "path", a.path);
        key_string(w, "algo", "sha256");
        key_string(w, "oid", a.d.sha256);
        w.Key("size");
        w.Uint64(a.d.size);
      });
    } else {
      std::string content;
      try {
        content = digest::base64_encode(fs::read_file(a.local));
      } catch (const std::exception& e) {
        throw HubError(ErrorKind::io, std::string(e.what()) + " (to upload as '" + a.path + "' to '" + c.repo_id + "')");
      }
      line("file", [&](JsonWriter& w) {
        key_string(w, "content", content);
        key_string(w, "path", a.path);
        key_string(w, "encoding", "base64");
      });
    }
  }
  for (const auto& d : deletions) {
    bool folder = !d.empty() && d.back() == '/';
    line(folder ? "deletedFolder" : "deletedFile", [&](JsonWriter& w) { key_string(w, "path", d); });
  }
  http::Response r = post(c, s, c.api_url("/commit/" + http::url_quote(c.revision, "")), body, "application/x-ndjson");
  if (r.status >= 400) raise_write(c, r, "the commit");
  rapidjson::Document doc = parse_reply(c, r, "the commit answer");
  info.commit_url = member_string(doc, "commitUrl");
  info.oid = member_string(doc, "commitOid");
  if (info.oid.empty())
    throw HubError(ErrorKind::http, "the Hub at " + c.endpoint + " sent no commitOid for the commit to '" + c.repo_id + "'");
  return info;
}

}  // namespace sky::hub
