// Module definition: configuration structures, their checks, process hooks.
// The directives are in ngx_byok_directives.cpp.
#include "ngx_byok_module/ngx_byok.h"

#include <new>

static void *ngx_byok_create_main_conf(ngx_conf_t *cf);
static char *ngx_byok_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_byok_create_loc_conf(ngx_conf_t *cf);
static char *ngx_byok_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child);
static bool ngx_byok_check_log(ngx_conf_t *cf, ngx_log_t *log);
static ngx_int_t ngx_byok_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_byok_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_byok_init_process(ngx_cycle_t *cycle);
static void ngx_byok_exit_process(ngx_cycle_t *cycle);

static ngx_http_module_t ngx_byok_module_ctx = {
    NULL,                       /* preconfiguration */
    ngx_byok_postconfiguration, /* postconfiguration */
    ngx_byok_create_main_conf,  /* create main configuration */
    ngx_byok_init_main_conf,    /* init main configuration */
    NULL,                       /* create server configuration */
    NULL,                       /* merge server configuration */
    ngx_byok_create_loc_conf,   /* create location configuration */
    ngx_byok_merge_loc_conf     /* merge location configuration */
};

ngx_module_t ngx_http_byok_module = {NGX_MODULE_V1,
                                     &ngx_byok_module_ctx,
                                     ngx_byok_commands,
                                     NGX_HTTP_MODULE,
                                     NULL,                  /* init master */
                                     ngx_byok_init_module,  /* init module */
                                     ngx_byok_init_process, /* init process */
                                     NULL,                  /* init thread */
                                     NULL,                  /* exit thread */
                                     ngx_byok_exit_process, /* exit process */
                                     NULL,                  /* exit master */
                                     NGX_MODULE_V1_PADDING};

const byok::SecretString *ByokMain::system_key(std::string_view provider) const {
    for (const auto &k : system_keys) {
        if (k.provider == provider) return &k.key;
    }
    return nullptr;
}

ngx_byok_main_conf_t *ngx_byok_main_conf() {
    if (ngx_cycle == nullptr || ngx_cycle->conf_ctx == nullptr) return nullptr;
    return static_cast<ngx_byok_main_conf_t *>(
        ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_byok_module));
}

static void ngx_byok_delete_main(void *data) { delete static_cast<ByokMain *>(data); }

static void *ngx_byok_create_main_conf(ngx_conf_t *cf) {
    auto *mcf =
        static_cast<ngx_byok_main_conf_t *>(ngx_pcalloc(cf->pool, sizeof(ngx_byok_main_conf_t)));
    if (mcf == nullptr) return nullptr;
    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == nullptr) return nullptr;
    try {
        mcf->m = new ByokMain();
    } catch (const std::exception &e) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "%s", e.what());
        return nullptr;
    }
    cln->handler = ngx_byok_delete_main;
    cln->data = mcf->m;
    mcf->redis_connect_timeout = NGX_CONF_UNSET_MSEC;
    mcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    mcf->redis_wait_timeout = NGX_CONF_UNSET_MSEC;
    mcf->ttl = NGX_CONF_UNSET;
    mcf->stale = NGX_CONF_UNSET;
    mcf->unknown_key_rate = NGX_CONF_UNSET_UINT;
    mcf->unknown_key_burst = NGX_CONF_UNSET_UINT;
    mcf->request_id_index = NGX_ERROR;
    mcf->stream_usage = NGX_CONF_UNSET;
    mcf->usage_events = NGX_CONF_UNSET;
    mcf->server_test_timeout = NGX_CONF_UNSET_MSEC;
    return mcf;
}

static char *ngx_byok_init_main_conf(ngx_conf_t *cf, void *conf) {
    auto *mcf = static_cast<ngx_byok_main_conf_t *>(conf);
    ByokMain *m = mcf->m;

    ngx_conf_init_msec_value(mcf->redis_connect_timeout, 1000);
    ngx_conf_init_msec_value(mcf->redis_timeout, 500);
    ngx_conf_init_msec_value(mcf->redis_wait_timeout, 200);
    if (mcf->ttl == NGX_CONF_UNSET) mcf->ttl = 300;
    if (mcf->stale == NGX_CONF_UNSET) mcf->stale = 15 * 60;
    if (mcf->unknown_key_rate == NGX_CONF_UNSET_UINT) mcf->unknown_key_rate = 10 * 1000;  // 10r/s
    if (mcf->unknown_key_burst == NGX_CONF_UNSET_UINT) mcf->unknown_key_burst = 20;
    ngx_conf_init_value(mcf->stream_usage, 1);
    ngx_conf_init_value(mcf->usage_events, 1);
    ngx_conf_init_msec_value(mcf->server_test_timeout, 10000);
    m->admin.server_test_timeout_ms = (int)mcf->server_test_timeout;

    if (!m->fallback_set && m->system_key("openrouter") != nullptr) m->fallback = "openrouter";
    // Checked here because byok_providers may come after these directives;
    // the errors still point at the directive's own line.
    if (!m->fallback.empty()) {
        std::string why = byok::operator_provider_problem(m->catalog, m->fallback);
        if (!why.empty()) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          BYOK_LOG "byok_fallback: provider \"%s\" %s in %s", m->fallback.c_str(),
                          why.c_str(), m->fallback_where.c_str());
            return static_cast<char *>(NGX_CONF_ERROR);
        }
    }
    for (const auto &k : m->system_keys) {
        std::string why = byok::operator_provider_problem(m->catalog, k.provider);
        if (!why.empty()) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          BYOK_LOG "byok_system_key: provider \"%s\" %s in %s", k.provider.c_str(),
                          why.c_str(), k.where.c_str());
            return static_cast<char *>(NGX_CONF_ERROR);
        }
    }

    if (mcf->gateway_used) {
        if (!m->have_ring) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               BYOK_LOG
                               "\"byok_master_keys\" is required by byok_gateway/byok_admin");
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        if (!mcf->redis_set) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               BYOK_LOG "\"byok_redis\" is required by byok_gateway/byok_admin");
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        if (ngx_byok_check_ring_in_use(cf, m, mcf->redis_connect_timeout,
                                       mcf->redis_ssl != nullptr) != NGX_OK)
            return static_cast<char *>(NGX_CONF_ERROR);
    }
    if (mcf->zone == nullptr) {
        ngx_str_t name = ngx_string("byok");
        mcf->zone = ngx_byok_add_zone(cf, &name, 16 * 1024 * 1024);
        if (mcf->zone == nullptr) return static_cast<char *>(NGX_CONF_ERROR);
    }

    m->admin.catalog = &m->catalog;
    m->admin.ring = &m->ring;
    // Local providers (ollama) are off unless byok_allow_endpoint names them.
    m->catalog.allow_local(
        [m](std::string_view host) { return byok::admin::allow_listed(m->admin, host); });

    ngx_str_t rid = ngx_string("request_id");
    mcf->request_id_index = ngx_http_get_variable_index(cf, &rid);
    if (mcf->request_id_index == NGX_ERROR) return static_cast<char *>(NGX_CONF_ERROR);
    return NGX_CONF_OK;
}

static void *ngx_byok_create_loc_conf(ngx_conf_t *cf) {
    auto *lcf =
        static_cast<ngx_byok_loc_conf_t *>(ngx_pcalloc(cf->pool, sizeof(ngx_byok_loc_conf_t)));
    if (lcf == nullptr) return nullptr;
    lcf->gateway = NGX_CONF_UNSET;
    return lcf;
}

static char *ngx_byok_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child) {
    auto *prev = static_cast<ngx_byok_loc_conf_t *>(parent);
    auto *conf = static_cast<ngx_byok_loc_conf_t *>(child);
    ngx_conf_merge_value(conf->gateway, prev->gateway, 0);
    // nginx merges its core module first, so the error_log this server or
    // location will write to (its own or the one it inherits) is known here.
    auto *ctx = static_cast<ngx_http_conf_ctx_t *>(cf->ctx);
    auto *clcf =
        static_cast<ngx_http_core_loc_conf_t *>(ctx->loc_conf[ngx_http_core_module.ctx_index]);
    if (clcf != nullptr && !ngx_byok_check_log(cf, clcf->error_log))
        return static_cast<char *>(NGX_CONF_ERROR);
    return NGX_CONF_OK;
}

static ngx_int_t ngx_byok_postconfiguration(ngx_conf_t *cf) {
    if (ngx_byok_admin_init(cf) != NGX_OK) return NGX_ERROR;
    if (ngx_byok_gateway_init(cf) != NGX_OK) return NGX_ERROR;
    return ngx_byok_metering_init(cf);
}

// nginx's proxy module writes every upstream request header at debug level;
// with byok_gateway those carry provider keys, so debug logging is refused
// wherever it is configured (main, http, server, location, debug_connection).
// At info, nginx logs the whole line of an invalid or over-long client
// header, which may hold a gateway key: that is worth a warning.
enum class ByokLogRisk { None, ClientHeaders, UpstreamKeys };

static ByokLogRisk ngx_byok_log_risk(ngx_log_t *log) {
    ByokLogRisk risk = ByokLogRisk::None;
    for (; log != nullptr; log = log->next) {
        if (log->log_level & NGX_LOG_DEBUG_ALL || log->log_level >= NGX_LOG_DEBUG)
            return ByokLogRisk::UpstreamKeys;
        if (log->log_level >= NGX_LOG_INFO) risk = ByokLogRisk::ClientHeaders;
    }
    return risk;
}

static const char ngx_byok_debug_refused[] = BYOK_LOG
    "%s at \"debug\" level would write upstream request headers (provider keys) "
    "to the log; refusing to start with byok_gateway";

// An http-, server- or location-level error_log; false refuses the
// configuration. The client-header warning is printed once.
static bool ngx_byok_check_log(ngx_conf_t *cf, ngx_log_t *log) {
    auto *mcf = static_cast<ngx_byok_main_conf_t *>(
        ngx_http_conf_get_module_main_conf(cf, ngx_http_byok_module));
    if (mcf == nullptr || !mcf->gateway_used) return true;
    switch (ngx_byok_log_risk(log)) {
        case ByokLogRisk::UpstreamKeys:
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0, ngx_byok_debug_refused,
                          "an http, server or location error_log");
            return false;
        case ByokLogRisk::ClientHeaders:
            if (!mcf->log_warned) {
                mcf->log_warned = 1;
                ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                              BYOK_LOG
                              "error_log at \"info\" level logs whole invalid or over-long client "
                              "header lines, which may hold gateway keys; use \"notice\" or higher "
                              "with byok_gateway");
            }
            return true;
        case ByokLogRisk::None:
            break;
    }
    return true;
}

static ngx_int_t ngx_byok_init_module(ngx_cycle_t *cycle) {
    auto *mcf = static_cast<ngx_byok_main_conf_t *>(
        ngx_http_cycle_get_module_main_conf(cycle, ngx_http_byok_module));
    if (mcf == nullptr || !mcf->gateway_used) return NGX_OK;
    if (ngx_byok_log_risk(&cycle->new_log) == ByokLogRisk::UpstreamKeys) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, ngx_byok_debug_refused, "error_log");
        return NGX_ERROR;
    }
#if (NGX_DEBUG)
    auto *ecf = reinterpret_cast<ngx_event_conf_t *>(
        ngx_event_get_conf(cycle->conf_ctx, ngx_event_core_module));
    if (ecf != nullptr && ecf->debug_connection.nelts > 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, ngx_byok_debug_refused, "debug_connection");
        return NGX_ERROR;
    }
#endif
    return NGX_OK;
}

static ngx_int_t ngx_byok_init_process(ngx_cycle_t *cycle) {
    auto *mcf = static_cast<ngx_byok_main_conf_t *>(
        ngx_http_cycle_get_module_main_conf(cycle, ngx_http_byok_module));
    if (mcf == nullptr || !mcf->redis_set) return NGX_OK;
    ngx_byok_usage_init_process(cycle);
    ngx_byok_keycache_init_process(cycle);  // issue 18
    return ngx_byok_redis_init_process(cycle);
}

static void ngx_byok_exit_process(ngx_cycle_t *cycle) {
    ngx_byok_usage_exit_process();
    ngx_byok_redis_exit_process(cycle);
    ngx_byok_keycache_exit_process();  // issue 18: wipes the worker's plaintext keys
}
