// Counters in the shared zone (atomics, no lock) and the Prometheus text
// exposition of byok_metrics. Labels are provider ids, routes, status
// classes and fallback reasons: never a project id, key or token.
#include "ngx_byok_module/ngx_byok.h"

#include <iterator>

namespace {

constexpr size_t kMaxProviders = 64;
constexpr size_t kRoutes = std::size(byok::kAllRoutes);
constexpr size_t kClasses = 6;                  // 1xx..5xx, other
const auto &kReasons = byok::kFallbackReasons;  // labels from the one lib list
constexpr size_t kReasonCount = std::size(byok::kFallbackReasons);
const ngx_msec_t kBucketsMs[] = {5,    10,   25,   50,    100,   250,  500,
                                 1000, 2500, 5000, 10000, 30000, 60000};
constexpr size_t kBuckets = sizeof(kBucketsMs) / sizeof(kBucketsMs[0]);
const char *kCounterNames[BYOK_COUNTER_MAX][2] = {
    {"byok_cache_hits_total", "Gateway-key lookups served fresh from shared memory."},
    {"byok_cache_misses_total", "Gateway-key lookups that went to Redis."},
    {"byok_cache_stale_total", "Lookups that found only a stale entry."},
    {"byok_redis_errors_total", "Redis connection errors, timeouts and failed commands."},
    {"byok_redis_reconnects_total", "Successful Redis reconnections."},
    {"byok_decrypt_failures_total", "Stored provider keys that failed to decrypt."},
    {"byok_admin_mutations_total", "Successful admin API mutations."},
    {"byok_auth_failures_total", "Gateway requests refused for a missing, unknown or revoked key."},
    {"byok_usage_events_dropped_total",
     "Usage events not recorded: the worker's unsent events had reached their bound."},
};

struct Metrics {
    ngx_atomic_t counters[BYOK_COUNTER_MAX];
    ngx_atomic_t requests[kMaxProviders + 1][kRoutes][kClasses];  // last row: unknown provider
    ngx_atomic_t fallbacks[kReasonCount];
    ngx_atomic_t latency_buckets[kBuckets + 1];
    ngx_atomic_t latency_sum_ms;
    // Unused since issue 18 (s7): the count is the buckets' sum. Kept so the
    // zone's layout stays the same for the workers of a reload.
    ngx_atomic_t latency_count;
    // Metering (issue 13): tokens by kind (input, output, cached), cost,
    // requests whose usage was unknown — by provider and route.
    ngx_atomic_t tokens[kMaxProviders + 1][kRoutes][3];
    ngx_atomic_t cost_micro[kMaxProviders + 1][kRoutes];
    ngx_atomic_t tokens_unknown[kMaxProviders + 1][kRoutes];
};

Metrics *g_metrics = nullptr;

// A locked add in the shared zone (issue 18, s7: ~20 cycles and a pipeline
// stall each, so a request makes only the adds that change something).
void add(ngx_atomic_t *a, ngx_atomic_int_t v = 1) {
    if (v != 0) (void)ngx_atomic_fetch_add(a, v);
}

// Decisions point into the catalog, so the row is the pointer's offset.
size_t provider_row(const byok::Catalog &cat, const byok::Provider *provider) {
    const auto &providers = cat.providers();
    if (provider != nullptr && !providers.empty() && provider >= &providers.front() &&
        provider <= &providers.back())
        return ngx_min(static_cast<size_t>(provider - &providers.front()), kMaxProviders);
    return kMaxProviders;
}

ngx_int_t metrics_handler(ngx_http_request_t *r) {
    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) return NGX_HTTP_NOT_ALLOWED;
    ngx_byok_main_conf_t *mcf =
        static_cast<ngx_byok_main_conf_t *>(ngx_http_get_module_main_conf(r, ngx_http_byok_module));
    if (g_metrics == nullptr) return NGX_HTTP_SERVICE_UNAVAILABLE;
    std::string out;
    try {
        out.reserve(8192);
        for (int i = 0; i < BYOK_COUNTER_MAX; i++) {
            out += std::string("# HELP ") + kCounterNames[i][0] + " " + kCounterNames[i][1] + "\n";
            out += std::string("# TYPE ") + kCounterNames[i][0] + " counter\n";
            out += std::string(kCounterNames[i][0]) + " " + std::to_string(g_metrics->counters[i]) +
                   "\n";
        }
        out +=
            "# HELP byok_cache_entries Entries in the shared-memory cache.\n"
            "# TYPE byok_cache_entries gauge\nbyok_cache_entries " +
            std::to_string(ngx_byok_cache_entries()) + "\n";
        out +=
            "# HELP byok_requests_total Gateway requests by provider, route and status class.\n"
            "# TYPE byok_requests_total counter\n";
        const auto &providers = mcf->m->catalog.providers();
        static const char *classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
        for (size_t p = 0; p <= kMaxProviders; p++) {
            std::string name =
                p < providers.size() ? providers[p].id : (p == kMaxProviders ? "unknown" : "");
            if (name.empty()) continue;
            for (size_t rt = 0; rt < kRoutes; rt++)
                for (size_t c = 0; c < kClasses; c++) {
                    ngx_atomic_uint_t v = g_metrics->requests[p][rt][c];
                    if (v == 0) continue;
                    out += "byok_requests_total{provider=\"" + name + "\",route=\"" +
                           std::string(byok::route_name(byok::kAllRoutes[rt])) + "\",status=\"" +
                           classes[c] + "\"} " + std::to_string(v) + "\n";
                }
        }
        out +=
            "# HELP byok_tokens_total Tokens metered from provider responses, by provider, "
            "route and kind (cached is part of input).\n"
            "# TYPE byok_tokens_total counter\n";
        static const char *kinds[] = {"input", "output", "cached"};
        std::string cost, unknown;
        for (size_t p = 0; p <= kMaxProviders; p++) {
            std::string name =
                p < providers.size() ? providers[p].id : (p == kMaxProviders ? "unknown" : "");
            if (name.empty()) continue;
            for (size_t rt = 0; rt < kRoutes; rt++) {
                std::string labels = "provider=\"" + name + "\",route=\"" +
                                     std::string(byok::route_name(byok::kAllRoutes[rt])) + "\"";
                for (size_t k = 0; k < 3; k++) {
                    ngx_atomic_uint_t v = g_metrics->tokens[p][rt][k];
                    if (v != 0)
                        out += "byok_tokens_total{" + labels + ",kind=\"" + kinds[k] + "\"} " +
                               std::to_string(v) + "\n";
                }
                if (ngx_atomic_uint_t v = g_metrics->cost_micro[p][rt])
                    cost += "byok_cost_usd_total{" + labels + "} " +
                            byok::micro_usd_string(static_cast<int64_t>(v)) + "\n";
                if (ngx_atomic_uint_t v = g_metrics->tokens_unknown[p][rt])
                    unknown +=
                        "byok_tokens_unknown_total{" + labels + "} " + std::to_string(v) + "\n";
            }
        }
        out +=
            "# HELP byok_cost_usd_total Estimated cost from the catalog's prices, in USD.\n"
            "# TYPE byok_cost_usd_total counter\n" +
            cost +
            "# HELP byok_tokens_unknown_total Proxied requests whose response carried no usage.\n"
            "# TYPE byok_tokens_unknown_total counter\n" +
            unknown;
        out +=
            "# HELP byok_fallbacks_total Requests sent to the fallback provider, by reason.\n"
            "# TYPE byok_fallbacks_total counter\n";
        for (size_t i = 0; i < kReasonCount; i++)
            out += "byok_fallbacks_total{reason=\"" + std::string(kReasons[i]) + "\"} " +
                   std::to_string(g_metrics->fallbacks[i]) + "\n";
        out +=
            "# HELP byok_upstream_latency_seconds Upstream response time of proxied requests.\n"
            "# TYPE byok_upstream_latency_seconds histogram\n";
        ngx_atomic_uint_t cum = 0;
        for (size_t b = 0; b <= kBuckets; b++) {
            cum += g_metrics->latency_buckets[b];
            std::string le = b < kBuckets ? std::to_string(kBucketsMs[b] / 1000.0) : "+Inf";
            out += "byok_upstream_latency_seconds_bucket{le=\"" + le + "\"} " +
                   std::to_string(cum) + "\n";
        }
        out += "byok_upstream_latency_seconds_sum " +
               std::to_string(g_metrics->latency_sum_ms / 1000.0) + "\n";
        out += "byok_upstream_latency_seconds_count " + std::to_string(cum) + "\n";
        out += ngx_byok_limits_metrics();  // byok_limit_alerts_total
        out += ngx_byok_health_metrics();  // byok_key_health, byok_keys_expiring
        out += ngx_byok_usage_metrics();   // issue 18 (s4-meter): the usage flush's slices
    } catch (const std::exception &) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    return ngx_byok_send_body(r, NGX_HTTP_OK, "text/plain; version=0.0.4", out);
}

// GET /healthz for load balancers and container health checks, without auth:
// 200 when this worker can serve (master keys loaded, cache zone attached),
// else 503; the body also says whether Redis is connected (cached projects
// are served without it, so a Redis outage alone is not unhealthy).
ngx_int_t health_handler(ngx_http_request_t *r) {
    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) return NGX_HTTP_NOT_ALLOWED;
    if (ngx_http_discard_request_body(r) != NGX_OK) return NGX_HTTP_INTERNAL_SERVER_ERROR;
    auto *mcf =
        static_cast<ngx_byok_main_conf_t *>(ngx_http_get_module_main_conf(r, ngx_http_byok_module));
    bool keys = mcf != nullptr && mcf->m != nullptr && mcf->m->have_ring;
    bool zone = g_metrics != nullptr;
    bool redis = ngx_byok_redis_available();
    try {  // std::string may throw bad_alloc; it must not cross into nginx
        std::string body = std::string("{\"status\":\"") + (keys && zone ? "ok" : "unavailable") +
                           "\",\"master_keys\":" + (keys ? "true" : "false") +
                           ",\"cache_zone\":" + (zone ? "true" : "false") + ",\"redis\":\"" +
                           (redis ? "connected" : "disconnected") + "\"}";
        return ngx_byok_send_body(r, keys && zone ? NGX_HTTP_OK : NGX_HTTP_SERVICE_UNAVAILABLE,
                                  "application/json", body);
    } catch (const std::exception &) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}

}  // namespace

size_t ngx_byok_metrics_size() { return sizeof(Metrics); }
void ngx_byok_metrics_attach(void *area) { g_metrics = static_cast<Metrics *>(area); }

void ngx_byok_count(ByokCounter c) {
    if (g_metrics) add(&g_metrics->counters[c]);
}

void ngx_byok_count_request(const byok::Catalog &cat, const byok::Provider *provider,
                            byok::Route route, ngx_uint_t status, ngx_msec_t upstream_ms,
                            bool had_upstream) {
    if (g_metrics == nullptr) return;
    size_t p = provider_row(cat, provider);
    size_t cls = status >= 100 && status < 600 ? status / 100 - 1 : 5;
    add(&g_metrics->requests[p][static_cast<size_t>(route)][cls]);
    if (!had_upstream) return;
    size_t b = 0;
    while (b < kBuckets && upstream_ms > kBucketsMs[b]) b++;
    add(&g_metrics->latency_buckets[b]);
    add(&g_metrics->latency_sum_ms, upstream_ms);
}

void ngx_byok_count_usage(const byok::Catalog &cat, const byok::Provider *provider,
                          byok::Route route, const byok::TokenUsage &u, int64_t cost_micro) {
    if (g_metrics == nullptr) return;
    size_t p = provider_row(cat, provider), rt = static_cast<size_t>(route);
    if (!u.known) {
        add(&g_metrics->tokens_unknown[p][rt]);
        return;
    }
    add(&g_metrics->tokens[p][rt][0], static_cast<ngx_atomic_int_t>(u.input));
    add(&g_metrics->tokens[p][rt][1], static_cast<ngx_atomic_int_t>(u.output));
    add(&g_metrics->tokens[p][rt][2], static_cast<ngx_atomic_int_t>(u.cached));
    add(&g_metrics->cost_micro[p][rt], static_cast<ngx_atomic_int_t>(cost_micro));
}

void ngx_byok_count_fallback(std::string_view reason) {
    if (g_metrics == nullptr) return;
    size_t i = 0;
    while (i < kReasonCount - 1 && reason != kReasons[i]) i++;
    add(&g_metrics->fallbacks[i]);
}

char *ngx_byok_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(
        ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    clcf->handler = metrics_handler;
    return NGX_CONF_OK;
}

char *ngx_byok_health_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(
        ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    clcf->handler = health_handler;
    return NGX_CONF_OK;
}
