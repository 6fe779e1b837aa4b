// http{}-level directives: the command table and the handlers of the
// directives that need more than a stock ngx_conf_set_*_slot. Secret files
// are read with lib's rules (byok::read_secret_file), nowhere else.
#include "ngx_byok_module/ngx_byok.h"

#include "lib/ratelimit.h"

#include <sstream>

static char *ngx_byok_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_byok_master_keys_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_byok_providers_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_byok_cache_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_byok_system_key_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_byok_fallback_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_byok_admin_tokens_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_byok_allow_endpoint_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_byok_gateway_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_byok_check_server_test_timeout(ngx_conf_t *cf, void *post, void *data);

// nginx (C) calls the directive handlers: a handler that may throw (a
// std::string, a vector, a lib parser) is registered through this guard, so
// an exception ends as a configuration error naming the directive.
template <char *(*Handler)(ngx_conf_t *, ngx_command_t *, void *)>
static char *guarded(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    try {
        return Handler(cf, cmd, conf);
    } catch (const std::exception &e) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "%V: %s", &cmd->name, e.what());
        return static_cast<char *>(NGX_CONF_ERROR);
    }
}

static ngx_conf_post_t ngx_byok_server_test_timeout_bounds = {ngx_byok_check_server_test_timeout};

ngx_command_t ngx_byok_commands[] = {
    {ngx_string("byok_redis"), NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE,
     guarded<ngx_byok_redis_directive>, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_master_keys"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     ngx_byok_master_keys_directive, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_providers"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     ngx_byok_providers_directive, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_cache"), NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE, ngx_byok_cache_directive,
     NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_system_key"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE2,
     guarded<ngx_byok_system_key_directive>, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_key_health"), NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE,
     guarded<ngx_byok_key_health_directive>, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_fallback"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     guarded<ngx_byok_fallback_directive>, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_admin_token_file"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     guarded<ngx_byok_admin_tokens_directive>, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_allow_endpoint"), NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE,
     guarded<ngx_byok_allow_endpoint_directive>, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_server_test_timeout"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
     offsetof(ngx_byok_main_conf_t, server_test_timeout), &ngx_byok_server_test_timeout_bounds},
    {ngx_string("byok_stream_usage"), NGX_HTTP_MAIN_CONF | NGX_CONF_FLAG, ngx_conf_set_flag_slot,
     NGX_HTTP_MAIN_CONF_OFFSET, offsetof(ngx_byok_main_conf_t, stream_usage), NULL},
    {ngx_string("byok_usage_events"), NGX_HTTP_MAIN_CONF | NGX_CONF_FLAG, ngx_conf_set_flag_slot,
     NGX_HTTP_MAIN_CONF_OFFSET, offsetof(ngx_byok_main_conf_t, usage_events), NULL},
    {ngx_string("byok_gateway"), NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, ngx_byok_gateway_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_admin"), NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, ngx_byok_admin_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_metrics"), NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, ngx_byok_metrics_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_error"), NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, ngx_byok_error_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_health"), NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, ngx_byok_health_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, NULL},
    {ngx_string("byok_console"), NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS | NGX_CONF_TAKE1,
     ngx_byok_console_directive, NGX_HTTP_LOC_CONF_OFFSET, 0, NULL},
    ngx_null_command};

ngx_shm_zone_t *ngx_byok_add_zone(ngx_conf_t *cf, ngx_str_t *name, size_t size) {
    ngx_shm_zone_t *zone = ngx_shared_memory_add(cf, name, size, &ngx_http_byok_module);
    if (zone == nullptr) return nullptr;
    if (zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "zone \"%V\" is already used", name);
        return nullptr;
    }
    zone->init = ngx_byok_cache_init_zone;
    zone->data = (void *)1;  // replaced by the cache context in init_zone
    return zone;
}

// --- directive parsing -------------------------------------------------------

static std::string ngx_byok_conf_path(ngx_conf_t *cf, ngx_str_t *value) {
    ngx_str_t path = *value;
    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) return std::string(sv(*value));
    return std::string(sv(path));
}

static std::string ngx_byok_conf_where(ngx_conf_t *cf) {
    return std::string(sv(cf->conf_file->file.name)) + ":" + std::to_string(cf->conf_file->line);
}

// Besides root, a secret file may belong to the user nginx reads it as or
// to the worker user when a `user` directive came before http{}.
static std::vector<uint32_t> ngx_byok_secret_owners(ngx_conf_t *cf) {
    std::vector<uint32_t> owners{static_cast<uint32_t>(geteuid())};
    auto *ccf =
        reinterpret_cast<ngx_core_conf_t *>(ngx_get_conf(cf->cycle->conf_ctx, ngx_core_module));
    if (ccf != nullptr && ccf->user != (ngx_uid_t)NGX_CONF_UNSET_UINT)
        owners.push_back(static_cast<uint32_t>(ccf->user));
    return owners;
}

// Reads a small secret file with lib's rules (read_secret_file).
static bool ngx_byok_read_secret_file(ngx_conf_t *cf, const std::string &path, std::string *out,
                                      const char *what) {
    try {
        byok::SecretString text = byok::read_secret_file(path, ngx_byok_secret_owners(cf));
        out->assign(text.view());
    } catch (const std::exception &e) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "%s: %s", what, e.what());
        return false;
    }
    return true;
}

static std::vector<std::string> ngx_byok_lines(const std::string &text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
            line.pop_back();
        size_t i = line.find_first_not_of(" \t");
        if (i == std::string::npos || line[i] == '#') continue;
        lines.push_back(line.substr(i));
    }
    return lines;
}

// "<ip>:<port>", "[<ipv6>]:<port>" or "unix:<path>"; host names are not
// resolved (a worker must not block on DNS).
static bool ngx_byok_parse_addr(ngx_conf_t *cf, const std::string &v, ByokMain::RedisAddr *out) {
    out->name = v;
    ngx_memzero(&out->sa, sizeof(out->sa));
    if (v.rfind("unix:", 0) == 0) {
        std::string path = v.substr(5);
        if (path.empty() || path.size() >= sizeof(out->sa.sockaddr_un.sun_path)) return false;
        out->sa.sockaddr_un.sun_family = AF_UNIX;
        ngx_memcpy(out->sa.sockaddr_un.sun_path, path.data(), path.size());
        out->len = sizeof(struct sockaddr_un);
        return true;
    }
    size_t colon = v.rfind(':');
    if (colon == std::string::npos || colon == 0) return false;
    ngx_int_t port = ngx_atoi((u_char *)v.data() + colon + 1, v.size() - colon - 1);
    if (port <= 0 || port > 65535) return false;
    std::string host = v.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    ngx_addr_t addr;
    if (ngx_parse_addr(cf->pool, &addr, (u_char *)host.data(), host.size()) != NGX_OK) return false;
    ngx_memcpy(&out->sa, addr.sockaddr, addr.socklen);
    out->len = addr.socklen;
    ngx_inet_set_port(&out->sa.sockaddr, (in_port_t)port);
    return true;
}

// byok_redis tls: a client context that always verifies the server's
// certificate chain (the name is checked per connection).
static bool ngx_byok_redis_ssl(ngx_conf_t *cf, ngx_byok_main_conf_t *mcf,
                               const std::string &ca_path, const std::string &cert_path,
                               const std::string &key_path) {
    auto str = [cf](const std::string &v) {
        ngx_str_t out = {v.size(), static_cast<u_char *>(ngx_pnalloc(cf->pool, v.size() + 1))};
        if (out.data) ngx_cpystrn(out.data, (u_char *)v.c_str(), v.size() + 1);
        return out;
    };
    ngx_str_t ca = str(ca_path), cert = str(cert_path), key = str(key_path);
    if (!ca.data || !cert.data || !key.data) return false;
    auto *ssl = static_cast<ngx_ssl_t *>(ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t)));
    if (ssl == nullptr) return false;
    ssl->log = cf->log;
    if (ngx_ssl_create(ssl, NGX_SSL_TLSv1_2 | NGX_SSL_TLSv1_3, nullptr) != NGX_OK) return false;
    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == nullptr) {
        ngx_ssl_cleanup_ctx(ssl);
        return false;
    }
    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = ssl;
    if (cert.len && ngx_ssl_certificate(cf, ssl, &cert, &key, nullptr) != NGX_OK) return false;
    if (ngx_ssl_trusted_certificate(cf, ssl, &ca, 4) != NGX_OK) return false;
    mcf->redis_ssl = ssl;
    return true;
}

static char *ngx_byok_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    auto *mcf = static_cast<ngx_byok_main_conf_t *>(conf);
    ByokMain *m = mcf->m;
    if (mcf->redis_set) return (char *)"is duplicate";
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    bool tls = false;
    std::string ca, cert, key;
    std::string sentinels;  // sentinel= or cluster=: a list of <ip>:<port>
    bool cluster = false;

    for (ngx_uint_t i = 1; i < cf->args->nelts; i++) {
        std::string arg(sv(value[i]));
        size_t eq = arg.find('=');
        std::string name = arg.substr(0, eq),
                    val = eq == std::string::npos ? "" : arg.substr(eq + 1);
        ngx_str_t nv = {val.size(), (u_char *)val.data()};
        if (i == 1 && eq == std::string::npos) {
            m->redis_addrs.emplace_back();
            if (!ngx_byok_parse_addr(cf, arg, &m->redis_addrs.back())) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   BYOK_LOG
                                   "byok_redis: invalid address \"%V\" (expected <ip>:<port> or "
                                   "unix:<path>; host names are not resolved in workers)",
                                   &value[i]);
                return static_cast<char *>(NGX_CONF_ERROR);
            }
        } else if (i == 1 && (name == "sentinel" || name == "cluster") && !val.empty()) {
            sentinels = val;
            cluster = name == "cluster";
        } else if (name == "master" && !val.empty()) {
            m->redis_master = val;
        } else if (name == "user" && !val.empty()) {
            m->redis_user = val;
        } else if (name == "sentinel_user" && !val.empty()) {
            m->redis_sentinel_user = val;
        } else if ((name == "password_file" || name == "sentinel_password_file") && !val.empty()) {
            std::string secret;
            if (!ngx_byok_read_secret_file(cf, ngx_byok_conf_path(cf, &nv), &secret,
                                           name == "password_file"
                                               ? "byok_redis password_file"
                                               : "byok_redis sentinel_password_file"))
                return static_cast<char *>(NGX_CONF_ERROR);
            auto lines = ngx_byok_lines(secret);
            byok::wipe(secret.data(), secret.size());
            (name == "password_file" ? m->redis_password : m->redis_sentinel_password) =
                byok::SecretString(lines.empty() ? "" : lines[0]);
            for (auto &l : lines) byok::wipe(l.data(), l.size());
        } else if (name == "db" && !val.empty()) {
            ngx_int_t db = ngx_atoi(nv.data, nv.len);
            if (db < 0 || db > 1000000) goto invalid;
            m->redis_db = (int)db;
        } else if (name == "connect_timeout" && !val.empty()) {
            mcf->redis_connect_timeout = ngx_parse_time(&nv, 0);
            if (mcf->redis_connect_timeout == (ngx_msec_t)NGX_ERROR) goto invalid;
        } else if (name == "timeout" && !val.empty()) {
            mcf->redis_timeout = ngx_parse_time(&nv, 0);
            if (mcf->redis_timeout == (ngx_msec_t)NGX_ERROR) goto invalid;
        } else if (name == "wait_replicas" && !val.empty()) {
            ngx_int_t n = ngx_atoi(nv.data, nv.len);
            if (n < 0 || n > 100) goto invalid;
            mcf->redis_wait_replicas = (ngx_uint_t)n;
        } else if (name == "wait_timeout" && !val.empty()) {
            mcf->redis_wait_timeout = ngx_parse_time(&nv, 0);
            if (mcf->redis_wait_timeout == (ngx_msec_t)NGX_ERROR) goto invalid;
        } else if (name == "prefix" && !val.empty()) {
            m->admin.layout = byok::Layout(val);
        } else if (arg == "tls") {
            tls = true;
        } else if (name == "tls_trusted_certificate" && !val.empty()) {
            ca = ngx_byok_conf_path(cf, &nv);
        } else if (name == "tls_certificate" && !val.empty()) {
            cert = ngx_byok_conf_path(cf, &nv);
        } else if (name == "tls_certificate_key" && !val.empty()) {
            key = ngx_byok_conf_path(cf, &nv);
        } else if (name == "tls_server_name" && !val.empty()) {
            m->redis_tls_name = val;
        } else {
            goto invalid;
        }
        continue;
    invalid:
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "byok_redis: invalid parameter \"%V\"",
                           &value[i]);
        return static_cast<char *>(NGX_CONF_ERROR);
    }

    for (size_t at = 0; !sentinels.empty() && at <= sentinels.size();) {
        size_t end = sentinels.find(',', at);
        if (end == std::string::npos) end = sentinels.size();
        m->redis_addrs.emplace_back();
        if (!ngx_byok_parse_addr(cf, sentinels.substr(at, end - at), &m->redis_addrs.back()) ||
            m->redis_addrs.back().sa.sockaddr.sa_family == AF_UNIX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               BYOK_LOG
                               "byok_redis: invalid %s address \"%s\" (expected "
                               "<ip>:<port>,...)",
                               cluster ? "cluster" : "sentinel",
                               m->redis_addrs.back().name.c_str());
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        at = end + 1;
    }
    if (cluster) {
        // Redis Cluster: the addresses are seeds the slot map is read from;
        // the key layout keeps every script inside one project's slot.
        if (!m->redis_master.empty() || m->redis_db != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               BYOK_LOG
                               "byok_redis: \"cluster=\" takes neither \"master=\" nor "
                               "\"db=\" (a cluster has one database)");
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        m->redis_cluster = true;
        m->admin.layout.set_cluster(true);
    } else if (sentinels.empty() != m->redis_master.empty()) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           BYOK_LOG "byok_redis: \"sentinel=\" and \"master=\" go together");
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    if (m->redis_addrs.empty()) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "byok_redis: no address");
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    if (!m->redis_user.empty() && m->redis_password.empty()) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           BYOK_LOG "byok_redis: \"user=\" needs \"password_file=\"");
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    if (m->redis_master.empty() &&
        (!m->redis_sentinel_user.empty() || !m->redis_sentinel_password.empty())) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           BYOK_LOG "byok_redis: sentinel_* parameters need \"sentinel=\"");
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    if (!m->redis_sentinel_user.empty() && m->redis_sentinel_password.empty()) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           BYOK_LOG
                           "byok_redis: \"sentinel_user=\" needs \"sentinel_password_file=\"");
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    if (!tls && (!ca.empty() || !cert.empty() || !key.empty() || !m->redis_tls_name.empty())) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           BYOK_LOG "byok_redis: tls_* parameters need \"tls\"");
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    if (tls) {
        if (ca.empty() || cert.empty() != key.empty()) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               BYOK_LOG
                               "byok_redis: \"tls\" needs \"tls_trusted_certificate=\" (the server "
                               "is always verified), and tls_certificate= with "
                               "tls_certificate_key=");
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        if (!ngx_byok_redis_ssl(cf, mcf, ca, cert, key)) return static_cast<char *>(NGX_CONF_ERROR);
    }
    mcf->redis_set = 1;
    return NGX_CONF_OK;
}

static char *ngx_byok_master_keys_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    ByokMain *m = static_cast<ngx_byok_main_conf_t *>(conf)->m;
    if (m->have_ring) return (char *)"is duplicate";
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    try {
        m->ring =
            byok::KeyRing::load_file(ngx_byok_conf_path(cf, &value[1]), ngx_byok_secret_owners(cf));
        m->have_ring = true;
    } catch (const std::exception &e) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "byok_master_keys: %s", e.what());
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    return NGX_CONF_OK;
}

static char *ngx_byok_providers_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    ByokMain *m = static_cast<ngx_byok_main_conf_t *>(conf)->m;
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    try {
        m->catalog = byok::Catalog::load_file(ngx_byok_conf_path(cf, &value[1]));
    } catch (const std::exception &e) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "byok_providers: %s", e.what());
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    return NGX_CONF_OK;
}

static char *ngx_byok_cache_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    auto *mcf = static_cast<ngx_byok_main_conf_t *>(conf);
    if (mcf->zone) return (char *)"is duplicate";
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    ngx_str_t name = ngx_null_string;
    ssize_t size = 0;

    for (ngx_uint_t i = 1; i < cf->args->nelts; i++) {
        ngx_str_t *v = &value[i];
        if (v->len > 5 && ngx_strncmp(v->data, "zone=", 5) == 0) {
            u_char *colon = (u_char *)ngx_strlchr(v->data + 5, v->data + v->len, ':');
            if (colon == nullptr || colon == v->data + 5) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   BYOK_LOG "byok_cache: expected zone=<name>:<size> in \"%V\"", v);
                return static_cast<char *>(NGX_CONF_ERROR);
            }
            name.data = v->data + 5;
            name.len = colon - name.data;
            ngx_str_t s = {(size_t)(v->data + v->len - colon - 1), colon + 1};
            size = ngx_parse_size(&s);
            if (size == NGX_ERROR || size < (ssize_t)(8 * ngx_pagesize)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   BYOK_LOG "byok_cache: invalid zone size \"%V\" (at least %uzk)",
                                   &s, 8 * ngx_pagesize / 1024);
                return static_cast<char *>(NGX_CONF_ERROR);
            }
        } else if (v->len > 4 && ngx_strncmp(v->data, "ttl=", 4) == 0) {
            ngx_str_t s = {v->len - 4, v->data + 4};
            mcf->ttl = ngx_parse_time(&s, 1);
            if (mcf->ttl == (time_t)NGX_ERROR || mcf->ttl == 0) goto invalid;
        } else if (v->len > 6 && ngx_strncmp(v->data, "stale=", 6) == 0) {
            ngx_str_t s = {v->len - 6, v->data + 6};
            mcf->stale = ngx_parse_time(&s, 1);
            if (mcf->stale == (time_t)NGX_ERROR) goto invalid;
        } else if (v->len > 17 && ngx_strncmp(v->data, "unknown_key_rate=", 17) == 0) {
            auto rate = byok::parse_rate(std::string_view((const char *)v->data + 17, v->len - 17));
            if (!rate) goto invalid;
            mcf->unknown_key_rate = (ngx_uint_t)*rate;
        } else if (v->len > 18 && ngx_strncmp(v->data, "unknown_key_burst=", 18) == 0) {
            ngx_int_t n = ngx_atoi(v->data + 18, v->len - 18);
            if (n == NGX_ERROR || n > 1000000) goto invalid;
            mcf->unknown_key_burst = (ngx_uint_t)n;
        } else {
            goto invalid;
        }
        continue;
    invalid:
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "byok_cache: invalid parameter \"%V\"",
                           v);
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    if (name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "byok_cache: \"zone=\" is required");
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    mcf->zone = ngx_byok_add_zone(cf, &name, size);
    return mcf->zone ? NGX_CONF_OK : static_cast<char *>(NGX_CONF_ERROR);
}

static char *ngx_byok_system_key_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    ByokMain *m = static_cast<ngx_byok_main_conf_t *>(conf)->m;
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    std::string provider(sv(value[1]));
    if (m->system_key(provider) != nullptr) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           BYOK_LOG "byok_system_key: duplicate provider \"%V\"", &value[1]);
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    std::string text;
    if (!ngx_byok_read_secret_file(cf, ngx_byok_conf_path(cf, &value[2]), &text, "byok_system_key"))
        return static_cast<char *>(NGX_CONF_ERROR);
    auto lines = ngx_byok_lines(text);
    byok::wipe(text.data(), text.size());
    if (lines.empty() || !byok::safe_header_value(lines[0]) ||
        lines[0].find(' ') != std::string::npos) {
        for (auto &l : lines) byok::wipe(l.data(), l.size());
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           BYOK_LOG "byok_system_key: \"%V\" must hold one key on its first line",
                           &value[2]);
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    m->system_keys.push_back({provider, byok::SecretString(lines[0]), ngx_byok_conf_where(cf)});
    for (auto &l : lines) byok::wipe(l.data(), l.size());
    return NGX_CONF_OK;
}

static char *ngx_byok_fallback_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    ByokMain *m = static_cast<ngx_byok_main_conf_t *>(conf)->m;
    if (m->fallback_set) return (char *)"is duplicate";
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    m->fallback_set = true;
    m->fallback_where = ngx_byok_conf_where(cf);
    m->fallback = sv(value[1]) == "off" ? "" : std::string(sv(value[1]));
    return NGX_CONF_OK;
}

static char *ngx_byok_admin_tokens_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    ByokMain *m = static_cast<ngx_byok_main_conf_t *>(conf)->m;
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    std::string text;
    if (!ngx_byok_read_secret_file(cf, ngx_byok_conf_path(cf, &value[1]), &text,
                                   "byok_admin_token_file"))
        return static_cast<char *>(NGX_CONF_ERROR);
    for (auto &line : ngx_byok_lines(text)) {
        if (line.size() < 16 || !byok::safe_header_value(line) ||
            line.find(' ') != std::string::npos) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               BYOK_LOG
                               "byok_admin_token_file: tokens must be at least 16 "
                               "printable characters without spaces, one per line");
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        m->admin.admin_tokens.push_back(line);
        byok::wipe(line.data(), line.size());
    }
    byok::wipe(text.data(), text.size());
    return NGX_CONF_OK;
}

static char *ngx_byok_allow_endpoint_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    ByokMain *m = static_cast<ngx_byok_main_conf_t *>(conf)->m;
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    for (ngx_uint_t i = 1; i < cf->args->nelts; i++)
        m->admin.allow_endpoint.emplace_back(sv(value[i]));
    return NGX_CONF_OK;
}

static char *ngx_byok_gateway_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    auto *lcf = static_cast<ngx_byok_loc_conf_t *>(conf);
    if (lcf->gateway != NGX_CONF_UNSET) return (char *)"is duplicate";
    lcf->gateway = 1;
    auto *mcf = static_cast<ngx_byok_main_conf_t *>(
        ngx_http_conf_get_module_main_conf(cf, ngx_http_byok_module));
    mcf->gateway_used = 1;
    return NGX_CONF_OK;
}

static char *ngx_byok_check_server_test_timeout(ngx_conf_t *cf, void *post, void *data) {
    ngx_msec_t t = *static_cast<ngx_msec_t *>(data);
    if (t == 0 || t > 300000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           BYOK_LOG "byok_server_test_timeout: invalid time (1ms..300s)");
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    return NGX_CONF_OK;
}
