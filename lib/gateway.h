// The gateway request path as plans (SPEC §3–§5): the glue reads nginx's
// request into plain values, asks here what to do, and carries the answer
// out. Nothing in this file knows nginx; every rule of the request path that
// is not a route decision (lib/routing.h) lives here: the URI grammar, which
// credential counts, the error each failure answers with, the decrypt-and-
// retry loop, the upstream URL, headers and body edit, the retry reason.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/body.h"
#include "lib/catalog.h"
#include "lib/client_api.h"
#include "lib/key_health.h"
#include "lib/key_select.h"
#include "lib/layout.h"
#include "lib/multipart.h"
#include "lib/project.h"
#include "lib/redis_reply.h"
#include "lib/routing.h"

namespace byok {

// Every Route in enum order: the metrics index their rows by position and
// label them with route_name().
constexpr Route kAllRoutes[] = {Route::Byok, Route::System, Route::Fallback, Route::Denied};
// The fallback reasons the metrics label: decide_route's, then
// upstream_failure_reason()'s for the statuses a retry follows; "other"
// (last) counts anything else.
constexpr std::string_view kFallbackReasons[] = {
    "no_key",        "tier",           "inactive",     "decrypt_error", "expired",
    "key_unhealthy", "upstream_429",   "upstream_500", "upstream_502",  "upstream_503",
    "upstream_504",  "upstream_error", "other"};

// An answer the gateway sends itself, in the client's API error shape.
struct GatewayError {
    int status = 0;
    std::string code;
    std::string message;
    std::string type;           // OpenAI-style error type, see gateway_error_type()
    bool auth_failure = false;  // counted in byok_auth_failures_total
    int64_t retry_after = 0;    // seconds for Retry-After (0 = no header)
};

// The OpenAI error `type` of a gateway answer: byok::error_type(status)
// (lib/util.h, the table shared with the admin API and nginx's own error
// pages), except the two places where OpenAI's API differs and SDKs follow
// it: 429 is "rate_limit_error", 404 (unknown route or provider) stays
// "invalid_request_error".
std::string_view gateway_error_type(int status);
GatewayError gateway_error(int status, std::string_view code, std::string_view message);

// The request as the glue read it from nginx (views into nginx's buffers).
struct GatewayRequestIn {
    std::string_view uri;                            // unparsed URI, query included
    ClientCredentials creds;                         // headers; query_key is filled by the parse
    std::string_view retry_count;                    // x-stainless-retry-count, "" when absent
    std::string_view content_type;                   // "" when absent
    std::vector<std::string_view> provider_headers;  // every x-byok-provider, in order
};

// What the URI and the headers say, before Redis is asked.
struct GatewayRequest {
    bool unified = false;  // /v1/...
    ApiFamily api = ApiFamily::OpenAI;
    bool client_retrying = false;
    std::string native_provider;  // "<id>" of /<id>/...
    std::string header_provider;  // x-byok-provider
    // Path after /v1 or /<id>, query without key=: a view into `in` (issue
    // 18: no copy), or into rest_built when dropping `key=` changed it.
    std::string_view rest;
    std::shared_ptr<const std::string> rest_built;  // stable when the request moves
    std::string_view content_type;        // of the body, for BodyScanner (a view into `in`)
    BodyKind body_kind = BodyKind::Json;  // how a /v1 body is read (lib/multipart.h)
    // Set when a `key=` parameter was dropped: the URI without it. The glue
    // puts it into the request line first, before any error is logged.
    std::optional<std::string> clean_uri;
    std::string_view key;               // the gateway key (a view into `in`)
    std::optional<GatewayError> error;  // answer this and stop
};
GatewayRequest parse_gateway_request(const GatewayRequestIn &in);
// The same into `*out`, a default-constructed request (issue 18: the glue's
// request state is parsed in place, not moved into).
void parse_gateway_request(const GatewayRequestIn &in, GatewayRequest *out);

// The answer to a request refused before the Redis lookup because the
// client sends too many unknown keys (byok_cache unknown_key_rate).
GatewayError too_many_unknown_keys(int64_t retry_after);

// The Redis lookup of a cache miss (scripts in admin_scripts.cpp).
// Standalone: one round trip, the gateway key's hash then the project's
// settings and key records. Cluster mode (Layout::cluster()): the key's hash
// byok:apikey:<sha> is in its own slot, so this is its HGETALL and
// read_lookup_reply asks for a second step in the project's `{pid}` slot.
std::vector<std::string> gateway_lookup_command(const Layout &layout, const std::string &sha_hex);
// Cluster mode, the second step: the project's settings, key records, key
// health and the gateway key's metadata (byok:{pid}:apikeys field `key_id`).
std::vector<std::string> gateway_lookup_project_command(const Layout &layout,
                                                        const std::string &pid,
                                                        const std::string &key_id);

// The lookup's reply read: Failed (Redis unavailable or a malformed reply:
// serve a stale entry or 503), Unknown (no such key: cache briefly), Found,
// or Next (cluster mode, after the first step: send `next`, then read its
// reply with this outcome as `first`).
struct LookupOutcome {
    enum class Kind { Failed, Unknown, Found, Next };
    Kind kind = Kind::Failed;
    std::string project;  // the key's project id (Found), for the cache's invalidation
    GatewaySnapshot snap;
    std::vector<std::string> next;  // Next: the second command
    FieldMap apikey;                // Next: the gateway key's hash, for the second step
    // Found: the health verdicts stored for the project's keys (key id →
    // health; unreadable entries are skipped), for a node that started after
    // they were published.
    std::vector<std::pair<std::string, KeyHealth>> health;
};
LookupOutcome read_lookup_reply(const Reply &reply);  // standalone, the one step
LookupOutcome read_lookup_reply(const Layout &layout, const std::string &sha_hex,
                                const Reply &reply, const LookupOutcome *first = nullptr);

// Cluster mode: a gateway key's metadata in byok:{pid}:apikeys is the
// authority — its own hash is written before it at creation and revoked
// after it, in another slot. The key is usable only when the metadata
// exists, names this key's hash and is not revoked.
enum class KeyMetaVerdict { Ok, Missing, Revoked };
KeyMetaVerdict gateway_key_meta(std::string_view meta_json, std::string_view sha_hex);
// How long an Unknown answer is cached: a guessed key is refused quickly
// again, while a key minted a moment later works within seconds.
int64_t unknown_key_ttl(int64_t ttl);
GatewayError key_store_unavailable();
// The 401 for a snapshot that is not Ok, or whose gateway key has expired
// by `now_s` (unix seconds; 0 = do not check), nullopt when it is usable.
std::optional<GatewayError> snapshot_error(const GatewaySnapshot &snap, int64_t now_s = 0);

// The request body's model, as the body scanner found it (`bad`: the
// BodyScanner's error, nullptr when the body was read fine).
std::optional<GatewayError> body_error(const BodyError *bad, const std::optional<ModelSpan> &model);

// Everything the route decision needs from the configuration.
struct GatewayConfig {
    const Catalog *catalog = nullptr;
    const KeyRing *ring = nullptr;
    std::vector<std::string> system_key_providers;
    std::function<const SecretString *(std::string_view provider)> system_key;
    std::string fallback_provider;
    // Several keys per provider (issue 14). Set by the glue, since key health
    // lives in shared memory; unset, every active key counts and the first
    // one not tried serves.
    // Plain function pointers (issue 18): called on every request, and the
    // glue's pool keeps its state in the worker, not in a closure.
    struct KeyPool {
        // input->project_keys (and keys_retry_in_s) for the route decision,
        // and attempts->usable for the pick that follows it.
        void (*states)(const GatewaySnapshot &, RouteInput *, KeyAttempts *) = nullptr;
        // The next key of `provider` to try (added to attempts->tried), or
        // nullptr when none is left.
        const StoredKey *(*pick)(const GatewaySnapshot &, std::string_view provider,
                                 KeyAttempts *) = nullptr;
    } keys;
};

// Opens a stored key of the snapshot for one request into `*out` (empty
// before the call; issue 18: written in place, not moved through a
// temporary): the glue's key cache, which needs per-request state (`arg`);
// unset: open_stored_key. Throws Error like it, leaving `*out` empty.
// Passed per call so the GatewayConfig is built once (issue 18), not per
// request.
struct KeyOpener {
    void (*open)(const void *arg, const KeyRing &ring, std::string_view pid, const StoredKey &k,
                 SecretString *out) = nullptr;
    const void *arg = nullptr;
};

// The decision with the key to use, or the answer to send.
struct RoutePlan {
    enum class Action { Answer, Error, Proxy };
    Action action = Action::Error;
    std::string answer;  // Answer: 200 JSON body (the unified model list)
    GatewayError error;  // Error
    RouteDecision decision;
    bool decided = false;  // decision is meaningful (variables, headers, metrics)
    SecretString key;
    // The stored key's hint: a view of the snapshot's record, which outlives
    // the plan (issue 18: no copy per request); empty for an operator key.
    std::string_view key_hint;
    // One line per stored key that did not decrypt (counted, logged by the glue).
    std::vector<std::string> decrypt_failures;
    bool fallback_taken = false;    // counted and logged by the glue
    bool resolve_endpoint = false;  // tenant endpoint: resolve and check it first
};

// Fills `in` from the snapshot and the request, decides, opens the stored
// key (a key that does not decrypt is marked and the decision made again),
// and takes the operator's key for routes system and fallback.
// `attempts` (may be null) records which of the provider's keys was taken.
RoutePlan plan_route(const GatewayConfig &cfg, const GatewaySnapshot &snap,
                     const GatewayRequest &req, std::string_view method, bool body_read,
                     std::string_view model, RouteInput *in, KeyAttempts *attempts = nullptr,
                     const KeyOpener &opener = {});

// Issue 14: an answer that may be the key's own fault (401, 402, 403, 429,
// 5xx; 0 = no answer) — worth one retry on a sibling key.
bool key_failure(int status);
// That retry: the same decision on the next key of the provider (the glue
// checked that a usable one is left), or nullopt when none opens.
std::optional<RoutePlan> plan_sibling(const GatewayConfig &cfg, const GatewaySnapshot &snap,
                                      const RouteDecision &first, KeyAttempts *attempts,
                                      const KeyOpener &opener = {});

// After the first call failed before any byte: the next decision with the
// operator's key, or the error to send. `status` and `got_bytes` describe
// the last upstream attempt (0 = none).
RoutePlan plan_retry(const GatewayConfig &cfg, const RouteInput &in, const RouteDecision &first,
                     int status, bool got_bytes);
// "upstream_<status>" when the provider answered, else "upstream_error".
std::string upstream_failure_reason(int status, bool got_bytes);

// Where and how the proxy module calls the target.
// issue 18: views of the catalog and the request where it can (a hit copies
// no URL and builds no path string); the glue writes the URL once, into
// request memory: base().scheme "://" host base().path rest.
struct UpstreamPlan {
    const Url *provider_base = nullptr;  // the catalog's base URL of the target
    std::optional<Url> endpoint;         // the tenant's endpoint, when the target has one
    const Url &base() const { return endpoint ? *endpoint : *provider_base; }
    std::string_view rest;  // the request's path after the base (a view of the request)
    // base().authority(): $byok_upstream_host (Host, SNI). issue 18: the
    // URL's own host when that is the whole authority (no string per hit),
    // else host_built.
    std::string_view host() const {
        return host_built.empty() ? std::string_view(base().host) : std::string_view(host_built);
    }
    std::string host_built;
    bool pin = false;         // connect to the checked address of `base()`
    UpstreamHeaders headers;  // auth and fixed headers: views of the key and snapshot
    // Set when the body's "model" value must be replaced by this token.
    std::optional<std::string> model_token;
};
// `body_rewritten`: an earlier attempt already changed the body in place.
// `key_id`: the stored key in use (its endpoint), "" = the provider's first.
UpstreamPlan plan_upstream(const GatewayRequest &req, const GatewaySnapshot &snap,
                           const RouteDecision &d, const SecretString &key,
                           const std::optional<ModelSpan> &model, bool body_rewritten,
                           std::string_view key_id = "");
// The tenant endpoint to resolve and check, or the 422 when there is none.
std::optional<GatewayError> endpoint_error(const GatewaySnapshot &snap, const RouteDecision &d,
                                           std::string_view key_id = "");
// The stored key the request uses for the decision's target.
const StoredKey *key_in_use(const GatewaySnapshot &snap, const RouteDecision &d,
                            std::string_view key_id);
GatewayError endpoint_refused(std::string_view why);

// Which named location the proxying continues in ("" = stay in location /,
// which intercepts 429 and 5xx). With a sibling key left (issue 14):
// @byok_keys, which also intercepts the key's own failures.
std::string_view proxy_location(const RouteInput &in, const RouteDecision &d,
                                bool sibling_left = false);
// Where the attempt on the sibling key runs (after an error_page, so never
// location /): the failures a fallback may follow are intercepted.
std::string_view sibling_location(const RouteInput &in, const RouteDecision &d);

}  // namespace byok
