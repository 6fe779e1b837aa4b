// Shared declarations of the nginx glue. nginx headers come first, inside
// extern "C"; the C++ core lives in lib/ and is reached only through these
// translation units. Nothing here lets an exception escape into nginx.
#pragma once

extern "C" {
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
}

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lib/admin.h"
#include "lib/body.h"
#include "lib/catalog.h"
#include "lib/client_api.h"
#include "lib/crypto.h"
#include "lib/gateway.h"
#include "lib/key_health.h"
#include "lib/key_select.h"
#include "lib/layout.h"
#include "lib/metering.h"
#include "lib/project.h"
#include "lib/routing.h"

extern "C" ngx_module_t ngx_http_byok_module;

// The per-request state types: ngx_byok_ctx.h.
struct ByokGatewayCtx;
struct ByokKeyTestCtx;
struct ByokUpstream;

#define BYOK_LOG "byok: "

// Everything C++ that the http{} configuration owns. Allocated with new and
// deleted by a cleanup on the configuration pool.
struct ByokMain {
    byok::KeyRing ring;
    bool have_ring = false;
    byok::Catalog catalog = byok::Catalog::builtin();
    struct SystemKey {
        std::string provider;
        byok::SecretString key;
        std::string where;  // "<file>:<line>" of the directive, for errors
    };
    std::vector<SystemKey> system_keys;
    std::string fallback;  // provider id, "" = off
    bool fallback_set = false;
    std::string fallback_where;
    byok::admin::Config admin;

    // byok_redis: the server itself, (with redis_master set) the sentinels
    // that name the current primary, or (redis_cluster) a cluster's seeds.
    struct RedisAddr {
        std::string name;  // as written, for logs
        ngx_sockaddr_t sa;
        socklen_t len;
    };
    std::vector<RedisAddr> redis_addrs;
    std::string redis_master;    // sentinel mode: the monitored master's name
    bool redis_cluster = false;  // cluster mode: redis_addrs are the seed nodes
    std::string redis_user;      // ACL user ("" = AUTH <password> alone)
    byok::SecretString redis_password;
    std::string redis_sentinel_user;             // sentinel_user=, sentinel_password_file=: the
    byok::SecretString redis_sentinel_password;  // sentinels' own AUTH ("" = none)
    int redis_db = 0;
    std::string redis_tls_name;     // tls_server_name (default: the host)
    byok::HealthPolicy key_health;  // byok_key_health (ngx_byok_health.cpp)
    // issue 18: what the route decision needs from the configuration, built
    // on the first gateway request (the directives are all read by then)
    // instead of per request (ngx_byok_access.cpp).
    std::optional<byok::GatewayConfig> gateway;

    const byok::SecretString *system_key(std::string_view provider) const;
};

struct ngx_byok_main_conf_t {
    ByokMain *m;
    ngx_flag_t redis_set;
    ngx_msec_t redis_connect_timeout;
    ngx_msec_t redis_timeout;
    ngx_ssl_t *redis_ssl;
    ngx_uint_t redis_wait_replicas;  // WAIT for this many replicas after admin writes
    ngx_msec_t redis_wait_timeout;   // byok_redis tls: the client context, else nullptr
    ngx_shm_zone_t *zone;
    time_t ttl;
    time_t stale;
    ngx_uint_t unknown_key_rate;  // milli-requests per second, 0 = off
    ngx_uint_t unknown_key_burst;
    ngx_flag_t gateway_used;
    ngx_flag_t log_warned;  // the info-level error_log warning was printed
    ngx_int_t request_id_index;
    ngx_flag_t stream_usage;         // byok_stream_usage: ask OpenAI-style streams for usage
    ngx_flag_t usage_events;         // byok_usage_events: one stream entry per metered request
    ngx_msec_t server_test_timeout;  // byok_server_test_timeout (into m->admin)
};

struct ngx_byok_loc_conf_t {
    ngx_flag_t gateway;
    ngx_str_t console_index;  // byok_console: index.html with its api= path
};

ngx_byok_main_conf_t *ngx_byok_main_conf();  // of the running cycle

// --- directives (ngx_byok_directives.cpp) ---------------------------------------
extern ngx_command_t ngx_byok_commands[];
// A shared zone for the project cache (byok_cache zone=, or the default).
ngx_shm_zone_t *ngx_byok_add_zone(ngx_conf_t *cf, ngx_str_t *name, size_t size);

// --- redis (ngx_byok_redis.cpp) ---------------------------------------------
// Config phase only: NGX_ERROR when records use a master key the ring lacks.
ngx_int_t ngx_byok_check_ring_in_use(ngx_conf_t *cf, ByokMain *m, ngx_msec_t timeout, bool tls);

// A pending Redis command on behalf of a request (or the worker). The
// callback runs from a posted event, never from inside hiredis. When the
// owner goes away first it sets `cancelled`; the waiter frees itself.
struct ByokRedisWaiter {
    ngx_event_t ev;  // posted when the reply is in
    void (*done)(ByokRedisWaiter *w);
    void *data;
    bool cancelled = false;
    byok::admin::Reply reply;
    int node = -1;  // Redis Cluster: the node that answered (for a WAIT after a write)
};

ngx_int_t ngx_byok_redis_init_process(ngx_cycle_t *cycle);
void ngx_byok_redis_exit_process(ngx_cycle_t *cycle);
bool ngx_byok_redis_available();
// Sends one command. Returns a waiter (done() will be called exactly once,
// unless cancelled) or nullptr when Redis is unavailable right now. Redis
// Cluster: a keyless command (ROLE, WAIT) goes to node `near` (a previous
// waiter's `node`: the WAIT of a write goes where the write went).
ByokRedisWaiter *ngx_byok_redis_send(const std::vector<std::string> &argv,
                                     void (*done)(ByokRedisWaiter *), void *data, int near = -1);
// Fire and forget (usage counters): no waiter, errors only counted.
void ngx_byok_redis_send_noreply(const std::vector<std::string> &argv);
// Fire and forget of `commands` whole commands already in RESP (usage
// events, formatted by lib/metering.h without a per-request allocation).
void ngx_byok_redis_send_raw_noreply(std::string_view resp, size_t commands);
// Every command sent is answered and nothing waits to be sent (the usage
// flush's last round before the worker exits).
bool ngx_byok_redis_noreply_drained();
// Request pool cleanup helper: cancel a waiter the request no longer needs.
void ngx_byok_redis_cancel(ByokRedisWaiter *w);

// --- usage counters (ngx_byok_usage.cpp) ---------------------------------------

void ngx_byok_usage_init_process(ngx_cycle_t *cycle);
// Today's UTC date as yyyymmdd (counter keys), formatted once a second.
const std::string &ngx_byok_today();
void ngx_byok_usage_exit_process();

// One finished request's request, token and cost counters and its usage
// event (lib/metering.h), batched and flushed once a second.
void ngx_byok_meter_record(const byok::Layout &layout, const byok::MeterRecord &rec);
// issue 18: the flush's slicing, for /metrics (ngx_byok_metrics.cpp).
std::string ngx_byok_usage_metrics();

// --- cache (ngx_byok_cache.cpp) ----------------------------------------------

ngx_int_t ngx_byok_cache_init_zone(ngx_shm_zone_t *zone, void *data);
// The worker's cache entry (ngx_byok_keycache.cpp) a request's snapshot
// came from, so that opening its key finds the entry without a second
// lookup (issue 18). Valid while no entry has been dropped since it was
// taken (`drops`); else the key cache looks it up again.
struct ByokKeyEntry {
    const void *entry = nullptr;
    uint64_t drops = 0;
};
enum class ByokCacheResult { Miss, Fresh, Stale };
// The entry of `key_sha` (32 raw bytes): Fresh fills `snap` (from the
// worker's decoded copy of that exact blob when it has one); Stale copies
// the blob into `stale_blob` (used only when Redis cannot answer).
// issue 18: `snap` shares the worker's decoded copy (no copy per request);
// the request's reference keeps it alive when the worker's cache drops it.
// `entry` gets the worker's cache entry of a Fresh snapshot.
ByokCacheResult ngx_byok_cache_get_snapshot(const u_char *key_sha,
                                            std::shared_ptr<const byok::GatewaySnapshot> *snap,
                                            std::string *stale_blob, ByokKeyEntry *entry);
// `generation`: ngx_byok_cache_generation() read before the Redis lookup
// was sent, so a read that raced a resubscription is not trusted later.
void ngx_byok_cache_put(const u_char *key_sha, std::string_view pid, std::string_view blob,
                        time_t ttl, uint64_t generation);
uint64_t ngx_byok_cache_generation();
// Called when a subscriber is (re)subscribed: invalidations may have been
// lost, so every entry cached so far must be revalidated before use.
void ngx_byok_cache_new_generation();
// Unknown-key lookup limit per client address (byok_cache unknown_key_rate):
// checked before Redis is asked (0 = go ahead, else the seconds to tell the
// client in Retry-After), charged when the key turned out unknown.
int64_t ngx_byok_cache_lookup_wait(ngx_connection_t *c);
void ngx_byok_cache_charge_unknown(ngx_connection_t *c);
void ngx_byok_cache_invalidate(std::string_view pid);
size_t ngx_byok_cache_entries();

// --- per-worker caches of the hit path (ngx_byok_keycache.cpp) ---------------
// Decoded snapshots by (key hash, zone version) and decrypted provider keys
// in a locked, undumped arena; see the file's header for the wipe rules.

void ngx_byok_keycache_init_process(ngx_cycle_t *cycle);
void ngx_byok_keycache_exit_process();
// The decoded snapshot of version `version` of the entry, or nullptr.
std::shared_ptr<const byok::GatewaySnapshot> ngx_byok_keycache_snapshot(const u_char *sha,
                                                                        uint64_t version,
                                                                        ByokKeyEntry *found);
std::shared_ptr<const byok::GatewaySnapshot> ngx_byok_keycache_store(
    const u_char *sha, uint64_t version, uint64_t generation, int64_t stale_until,
    byok::GatewaySnapshot snap, ByokKeyEntry *stored);
// The plaintext of `k` (a record of the snapshot cached for `sha`, found
// through `hint` when it is still valid) into the empty `*out`: from the
// arena, else decrypted (open_stored_key, which throws byok::Error and
// leaves `*out` empty).
void ngx_byok_keycache_open(const u_char *sha, const ByokKeyEntry &hint, const byok::KeyRing &ring,
                            std::string_view pid, const byok::StoredKey &k,
                            byok::SecretString *out);
void ngx_byok_keycache_invalidate(std::string_view pid);  // wipes the project's entries
void ngx_byok_keycache_clear();                           // wipes everything
size_t ngx_byok_keycache_keys();                          // plaintext keys held
// The end of a request's use of its provider key `*key`: wiped, and its heap
// block kept for the next request's copy (issue 18: no malloc per hit).
void ngx_byok_keycache_keep_block(byok::SecretString *key);
// Wipes the in-memory buffers of the request nginx's proxy module built for
// the upstream (it copied the provider's auth header there): at the end of
// the request and before a fallback attempt replaces the upstream.
void ngx_byok_wipe_upstream_request(ngx_http_request_t *r);

// --- metrics (ngx_byok_metrics.cpp) ------------------------------------------

enum ByokCounter {
    BYOK_CACHE_HIT,
    BYOK_CACHE_MISS,
    BYOK_CACHE_STALE,
    BYOK_REDIS_ERROR,
    BYOK_REDIS_RECONNECT,
    BYOK_DECRYPT_FAILURE,
    BYOK_ADMIN_MUTATION,
    BYOK_AUTH_FAILURE,
    BYOK_USAGE_EVENT_DROPPED,
    BYOK_COUNTER_MAX
};
void ngx_byok_count(ByokCounter c);
void ngx_byok_count_request(const byok::Catalog &cat, const byok::Provider *provider,
                            byok::Route route, ngx_uint_t status, ngx_msec_t upstream_ms,
                            bool had_upstream);
void ngx_byok_count_fallback(std::string_view reason);
void ngx_byok_count_usage(const byok::Catalog &cat, const byok::Provider *provider,
                          byok::Route route, const byok::TokenUsage &u, int64_t cost_micro);
size_t ngx_byok_metrics_size();
void ngx_byok_metrics_attach(void *shm_area);

// --- Idempotency-Key table (ngx_byok_idempotency.cpp) -------------------------------

// Bytes of the table in a cache zone of `zone_size` bytes.
size_t ngx_byok_idempotency_size(size_t zone_size);
void ngx_byok_idempotency_attach(void *area, size_t size, ngx_shmtx_t *mutex);
// True when the request's Idempotency-Key came with the same gateway key
// within the last minute (the client is retrying); records it either way.
bool ngx_byok_idempotency_repeat(ngx_http_request_t *r, const u_char *key_sha);
char *ngx_byok_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_byok_health_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

// --- responses (ngx_byok_response.cpp) ---------------------------------------
// The one writer of every answer the module generates itself (gateway and
// admin JSON, /metrics, /healthz, error pages): `body` with `status`,
// `content_type` and the `extra` headers; the request body is discarded.
ngx_int_t ngx_byok_send_body(ngx_http_request_t *r, ngx_uint_t status, const char *content_type,
                             const std::string &body,
                             const std::vector<byok::Header> *extra = nullptr);
inline ngx_int_t ngx_byok_send_json(ngx_http_request_t *r, ngx_uint_t status,
                                    const std::string &body,
                                    const std::vector<byok::Header> *extra = nullptr) {
    return ngx_byok_send_body(r, status, "application/json", body, extra);
}
// The same without a copy, for bytes that outlive the request (embedded
// console assets, configuration memory): the console's writer.
ngx_int_t ngx_byok_send_static(ngx_http_request_t *r, ngx_uint_t status,
                               std::string_view content_type, std::string_view body,
                               const std::vector<byok::Header> *extra = nullptr);
// A JSON error in the OpenAI shape (byok::json_error); never throws.
ngx_int_t ngx_byok_send_error(ngx_http_request_t *r, ngx_uint_t status, std::string_view code,
                              std::string_view message, std::string_view type);
// The one header-element builder: appends name: value_prefix + value
// (copied into the pool, NUL-terminated, with its lower-case key) to `list`;
// nullptr when out of memory.
ngx_table_elt_t *ngx_byok_push_header(ngx_pool_t *pool, ngx_list_t *list, std::string_view name,
                                      std::string_view value, std::string_view value_prefix = {});
// The same without copies (issue 18: the x-byok-* response headers): the
// element points at `lowcase_name` and `value`, which must outlive the
// request's logging (literals, the configuration, the request's ctx).
ngx_table_elt_t *ngx_byok_push_header_ref(ngx_list_t *list, std::string_view lowcase_name,
                                          std::string_view value);
// byok_error; — content handler of the internal location error_page points at.
char *ngx_byok_error_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

// --- thread pool work (ngx_byok_thread.cpp) ------------------------------------

// Runs `work` on nginx's "default" thread pool, then `done` on the event
// loop. NGX_ERROR when no thread pool is available.
ngx_int_t ngx_byok_run_in_thread(ngx_http_request_t *r, std::function<void()> work,
                                 std::function<void()> done);

// Blocking; call only from a thread-pool task.
// `address`: the checked IP to connect to, or "" to let libssh resolve in.host.
void ngx_byok_ssh_probe(const byok::admin::ProbeCall &in, const std::string &address,
                        byok::admin::ProbeResult *out);
void ngx_byok_local_probe(const std::string &path, byok::admin::ProbeResult *out);
int64_t ngx_byok_monotonic_ms();

// --- tenant-chosen hosts (ngx_byok_resolve.cpp) -------------------------------

// Resolves url.host with the location's resolver (IP literals directly),
// checks every address against the endpoint rules and calls done(ip, "") or
// done("", reason) — from a posted event, or at once for literals and
// configuration errors. NGX_ERROR only when nothing could be started.
ngx_int_t ngx_byok_resolve_checked(
    ngx_http_request_t *r, const byok::Url &url,
    std::function<void(const std::string &, const std::string &)> done);
// "scheme://<ip>:<port>" — connect to the checked address; Host and SNI keep
// the name.
std::string ngx_byok_pinned_origin(const byok::Url &url, const std::string &ip);

// --- handlers ----------------------------------------------------------------

ngx_int_t ngx_byok_gateway_init(ngx_conf_t *cf);  // phase handler, variables, filter
ngx_int_t ngx_byok_admin_init(ngx_conf_t *cf);    // key-test capture filter
char *ngx_byok_admin_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

// Case-insensitive header-name test; `lowcase` is the lower-case name.
// Issue 18: nginx keeps a parsed header's name lower-cased
// beside it (lowcase_key), so that is one memcmp; a header some module
// built without it is folded as before.
inline bool ngx_byok_header_is(const ngx_table_elt_t &h, std::string_view lowcase) {
    if (h.key.len != lowcase.size()) return false;
    if (h.lowcase_key != nullptr) return ngx_memcmp(h.lowcase_key, lowcase.data(), h.key.len) == 0;
    return ngx_strncasecmp(h.key.data, (u_char *)lowcase.data(), lowcase.size()) == 0;
}
// The header's name, lower-cased when nginx has it so (for lib/'s
// case-insensitive compares, which are cheapest on equal bytes).
inline std::string_view ngx_byok_header_name(const ngx_table_elt_t &h) {
    return {reinterpret_cast<const char *>(h.lowcase_key != nullptr ? h.lowcase_key : h.key.data),
            h.key.len};
}

// Calls f(header) for every live header of a header list until f returns
// false; returns false when f stopped the walk.
template <class F>
bool ngx_byok_each_header(const ngx_list_t &list, F f) {
    for (const ngx_list_part_t *part = &list.part; part != nullptr; part = part->next) {
        auto *h = static_cast<ngx_table_elt_t *>(part->elts);
        for (ngx_uint_t i = 0; i < part->nelts; i++) {
            if (h[i].hash != 0 && !f(h[i])) return false;
        }
    }
    return true;
}

inline std::string_view sv(const ngx_str_t &s) {
    return {reinterpret_cast<const char *>(s.data), s.len};
}

// --- metering (ngx_byok_metering.cpp) ------------------------------------------

ngx_int_t ngx_byok_metering_init(ngx_conf_t *cf);  // filters, log handler, variables

// --- project limits (ngx_byok_limits.cpp) --------------------------------------

// The counter table lives in the cache zone, after the metrics.
size_t ngx_byok_limits_size(size_t zone_size);
void ngx_byok_limits_attach(void *area, size_t zone_size, ngx_slab_pool_t *shpool);
// Before any upstream call, once the route is planned (first call and
// fallback retry): sets the x-byok-limit-* headers and returns the 429 to
// send when a counted limit is spent (the route becomes denied), else
// nullopt.
std::optional<byok::GatewayError> ngx_byok_limits_admit(ngx_http_request_t *r, ByokGatewayCtx *ctx);
// Log phase: the tokens and cost of a finished request.
void ngx_byok_limits_charge(const ByokGatewayCtx *ctx, const byok::TokenUsage &u,
                            int64_t cost_micro);
// From the once-a-second usage flush: sync the counters with Redis.
void ngx_byok_limits_sync();
void ngx_byok_limits_init_process();
// byok_limit_alerts_total for /metrics.
std::string ngx_byok_limits_metrics();

// --- upstream set-up (ngx_byok_upstream.cpp) --------------------------------------

// Replaces the request's header list with the client's headers minus every
// credential header (unless keep_client is false: then only `add`), plus
// `add` (the provider's auth and fixed headers). Values are wiped when the
// request ends.
ngx_int_t ngx_byok_install_headers(ngx_http_request_t *r, ByokUpstream *up,
                                   const std::vector<byok::Header> &add, bool keep_client);
ngx_int_t ngx_byok_install_headers(ngx_http_request_t *r, ByokUpstream *up,
                                   const byok::UpstreamHeaders &add, bool keep_client);
// The one body gatherer: calls f(piece) for the whole body in order —
// memory buffers in place, file buffers in bounded pieces through one
// reused buffer, so a body nginx spilled to its temp file never comes back
// into worker memory whole. false when the temp file is unreadable.
// f(arg, piece) for each piece; the template below takes any callable
// (issue 18: no std::function on the hot path).
bool ngx_byok_each_body_piece(ngx_http_request_t *r, ngx_chain_t *bufs,
                              void (*f)(const void *arg, std::string_view piece), const void *arg);
template <class F>
bool ngx_byok_each_body_piece(ngx_http_request_t *r, ngx_chain_t *bufs, const F &f) {
    return ngx_byok_each_body_piece(
        r, bufs,
        [](const void *arg, std::string_view piece) { (*static_cast<const F *>(arg))(piece); }, &f);
}
// Feeds the request body to the scanner its Content-Type picks (JSON,
// multipart upload; an opaque body is only counted). Throws byok::BodyError
// for a bad body; false when the temp file is unreadable.
bool ngx_byok_scan_body(ngx_http_request_t *r, ByokGatewayCtx *ctx);
// Points the proxy at ctx->decision's target with ctx->key: upstream URL,
// headers, body (model rewrite, include_usage). NGX_OK or an HTTP status.
ngx_int_t ngx_byok_setup_upstream(ngx_http_request_t *r, ByokGatewayCtx *ctx);
// From the access phase: the request goes on in the named location `name`
// (its error_page lines, its proxy settings) without a second pass through
// the rewrite, preaccess and access phases — it passed them in the gateway
// location — and with r->ctx kept (issue 18). Returns NGX_DECLINED for the
// phase engine to continue, or an HTTP status.
ngx_int_t ngx_byok_enter_location(ngx_http_request_t *r, std::string_view name);
// The include_usage hook of the body preparation: when the request is an
// OpenAI-style stream without usage, `*bufs`/`*len` become the body plus
// the inserted stream_options (ctx->meter.stream says where), of any size,
// as long as the buffer at the insert is in memory (a body spilled to the
// temp file is left alone: its usage is counted when the provider reports
// it). NGX_OK or NGX_ERROR.
ngx_int_t ngx_byok_meter_prepare_body(ngx_http_request_t *r, ByokGatewayCtx *ctx,
                                      ngx_chain_t **bufs, off_t *len);

// --- glue registration (ngx_byok_variables.cpp, ngx_byok_filter.cpp, ngx_byok_log.cpp) ---

// Appends `handler` to an http phase (postconfiguration only).
ngx_int_t ngx_byok_add_phase_handler(ngx_conf_t *cf, ngx_http_phases phase,
                                     ngx_http_handler_pt handler);
// Sets a variable to a copy of `val` in the request pool (not cacheable).
ngx_int_t ngx_byok_variable_value(ngx_http_request_t *r, ngx_http_variable_value_t *v,
                                  std::string_view val);
// Registers every {name, which} of `defs` as a non-cacheable variable read
// by `get`, which finds `which` in its `data` argument.
template <class Def, size_t N>
ngx_int_t ngx_byok_add_variables(ngx_conf_t *cf, Def (&defs)[N], ngx_http_get_variable_pt get) {
    for (auto &def : defs) {
        ngx_http_variable_t *v = ngx_http_add_variable(cf, &def.name, NGX_HTTP_VAR_NOCACHEABLE);
        if (v == nullptr) return NGX_ERROR;
        v->get_handler = get;
        v->data = static_cast<uintptr_t>(def.which);
    }
    return NGX_OK;
}
ngx_int_t ngx_byok_variables_init(ngx_conf_t *cf);
ngx_int_t ngx_byok_filter_init(ngx_conf_t *cf);  // x-byok-* response headers
ngx_int_t ngx_byok_access_handler(ngx_http_request_t *r);
ngx_int_t ngx_byok_log_handler(ngx_http_request_t *r);
// The metering part of the log phase (ngx_byok_metering.cpp).
void ngx_byok_meter_log(ngx_http_request_t *r, ByokGatewayCtx *ctx);

// --- provider-key selection and health (ngx_byok_health.cpp, issue 14) ----------

// Its area at the end of the cache zone, sized by the zone.
size_t ngx_byok_health_size(size_t zone_size);
void ngx_byok_health_attach(u_char *area, size_t zone_size, ngx_shmtx_t *mutex);
// A "~health ..." message of the invalidation channel; false for others.
bool ngx_byok_health_message(std::string_view payload);
// issue 16: a verdict the cold lookup read from byok:{<pid>}:key_health.
void ngx_byok_health_learn(std::string_view pid, std::string_view key_id, const byok::KeyHealth &h);
// The gateway's key pool (byok::GatewayConfig::keys): states from the
// health table and expiry, smooth weighted round robin for the pick; notes
// the use of provider keys and gateway keys.
void ngx_byok_key_pool(byok::GatewayConfig *cfg);
// Another usable key remains for the one retry on a sibling key.
bool ngx_byok_sibling_possible(const ByokGatewayCtx *ctx);
// Applies the attempt's answer (`status`, 0 = none) to its key's health.
char *ngx_byok_key_health_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
void ngx_byok_health_observe(ngx_http_request_t *r, ByokGatewayCtx *ctx, ngx_uint_t status);
void ngx_byok_last_used_flush();        // with the usage counters
std::string ngx_byok_health_metrics();  // byok_key_health, byok_keys_expiring

// --- web console (ngx_byok_console.cpp) -----------------------------------------

char *ngx_byok_console_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
