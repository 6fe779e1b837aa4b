// Admin API semantics (SPEC §7): routing, auth, strict input, Redis scripts
// and response rendering. Pure logic: the nginx glue executes the Steps this
// returns (Redis commands, outbound HTTP calls) and feeds the results back.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "lib/catalog.h"
#include "lib/crypto.h"
#include "lib/layout.h"
#include "lib/redis_reply.h"

namespace byok::admin {

using Reply = byok::Reply;  // lib/redis_reply.h; the admin API answers 503 on Unavailable

struct Response {
    int status = 200;
    std::string body;             // JSON
    std::vector<Header> headers;  // extra headers, e.g. WWW-Authenticate
};

struct HttpResult {
    int status = 0;          // 0 = connect error or timeout
    std::string body;        // at most kHttpExcerpt bytes of the answer
    bool truncated = false;  // the answer was longer than `body`
    int64_t latency_ms = 0;
};
// The glue keeps no more of an outbound answer than this: a status line and
// a short excerpt are all a live test needs, whatever the provider sends.
constexpr size_t kHttpExcerpt = 4096;

struct Step;
struct RedisCall {
    std::vector<std::string> argv;  // one command, e.g. {"EVAL", script, "2", k1, k2, a1}
    std::function<Step(const Reply &)> next;
};
struct HttpCall {
    std::string method;           // "GET" / "POST"
    std::string url;              // absolute URL
    std::vector<Header> headers;  // from upstream_headers(); holds a secret
    int timeout_ms = 10000;
    // The target was chosen by a tenant (custom endpoint, server endpoint):
    // the glue resolves the host itself and refuses private addresses
    // (resolved_address_problem) before connecting to the address it checked.
    bool check_resolved_address = false;
    std::function<Step(const HttpResult &)> next;
};
// A blocking connection test of an execution server (SPEC §8), run by the
// glue on nginx's thread pool: "ssh" (libssh: connect, host key, auth,
// workspace via sftp, or `test -d` on an exec channel when the server has
// no sftp subsystem) or "local" (path exists and is a directory).
struct ProbeResult {
    bool ok = false;
    std::string stage;                  // connect | host_key | auth | workspace | done
    std::string message;                // detail; lib redacts it before showing it
    std::string host_key_fingerprint;   // "SHA256:..." seen (ssh)
    bool trusted_on_first_use = false;  // nothing was pinned; record the one seen
    std::string workspace_check;        // ssh: "sftp" | "exec" once the check ran
    int64_t latency_ms = 0;
};
struct ProbeCall {
    std::string kind;  // "ssh" | "local"
    std::string host;
    int port = 22;
    std::string username;
    std::string auth_method;               // "key" | "password"
    std::shared_ptr<SecretString> secret;  // private key text or password
    std::string host_key_fingerprint;      // pinned, or "" (trust on first use)
    std::string workspace_path;            // ssh: checked remotely; local: the path
    // ssh without an sftp subsystem: the command whose exit status 0 / 1
    // says whether workspace_path is a directory (the path shell-quoted).
    std::string workspace_exec;
    int timeout_ms = 10000;
    // ssh, chosen by a tenant: the glue resolves `host` itself, refuses it
    // unless every address passes resolved_address_problem(), and hands
    // libssh the checked address (the name stays for messages).
    bool check_resolved_address = false;
    std::function<Step(const ProbeResult &)> next;
};

struct Step {
    std::variant<Response, RedisCall, HttpCall, ProbeCall> action;
};

struct Request {
    std::string_view method;         // "GET", "POST", ...
    std::string_view path;           // after the location prefix, e.g. "/projects/p1/keys"
    std::string_view query;          // raw query string without '?'
    std::string_view content_type;   // header value or empty
    std::string_view authorization;  // raw Authorization header value or empty
    std::string_view api_key;        // raw x-api-key header value or empty
    std::string_view body;
};

struct Clock {
    std::function<int64_t()> now = nullptr;  // unix seconds; nullptr = time(nullptr)
};

struct Config {
    const Catalog *catalog = nullptr;
    const KeyRing *ring = nullptr;
    Layout layout;
    // Admin tokens as read from byok_admin_token_file; each token's id for
    // the audit trail is "admin:" + first 8 hex chars of its sha256.
    std::vector<std::string> admin_tokens;
    std::vector<std::string> allow_endpoint;  // byok_allow_endpoint entries
    size_t max_body = 64 * 1024;
    int server_test_timeout_ms = 10000;  // byok_server_test_timeout
    Clock clock;
};

// SPEC §10 after resolution: "" when the resolved `ip` (a literal) of a
// tenant-chosen `host` may be contacted, else the reason. Hosts and CIDRs in
// cfg.allow_endpoint are always allowed.
std::string resolved_address_problem(const Config &cfg, std::string_view host, std::string_view ip);

// True when `host` (any case) or, for an IP literal, an address in a listed
// CIDR is named by byok_allow_endpoint (cfg.allow_endpoint).
bool allow_listed(const Config &cfg, std::string_view host);

// Records per master-key id over every project: provider keys and sealed
// execution-server secrets. One walk (SMEMBERS projects, then each project's
// keys and servers hashes) serves GET /keyring, the before/after counts of
// POST /rotate and the config test of nginx -t (run there with a blocking
// connection). `unreadable` counts records too malformed to name a kid.
struct KidCount {
    long long keys = 0;
    long long servers = 0;
};
struct KidCounts {
    std::map<std::string, KidCount> by_kid;
    long long unreadable = 0;
};
Step count_records_by_kid(const Layout &layout, std::function<Step(const KidCounts &)> done);
// "" when every kid that records use is in `ring`; else the reason nginx -t
// fails, e.g. "master key 'k1' is still used by 3 records (2 provider keys, 1
// server secret): keep it in the ring until POST /rotate leaves it unused".
std::string ring_gap(const KeyRing &ring, const KidCounts &counts);

// The commands of an audit entry the gateway writes on its own (limit
// alerts, issue 13), sent in order without reading replies: the same script
// body as the admin API's entries (both the global and the project's
// stream), without an invalidation; in cluster mode the script writes the
// project's stream and a second command the global one.
std::vector<std::vector<std::string>> audit_entry_commands(
    const Layout &layout, std::string_view actor, std::string_view at, std::string_view pid,
    std::string_view action, std::string_view target);

// The project a write (any method but GET/HEAD) to …/projects/{pid}[/…]
// changes, or "" (also for an invalid id). Once such a write succeeded, the
// node that answers drops the project's cached entries itself, before the
// answer leaves: the change is in force there for the very next request,
// whether or not its own invalidation message has arrived (every other node
// still learns it from that message).
std::string changed_project(std::string_view method, std::string_view path);

// Entry point: one call per admin HTTP request. Never throws; every failure
// becomes a Response with the JSON error shape of json_error().
Step handle(const Config &cfg, const Request &req);

}  // namespace byok::admin
