// Tenant-chosen hosts (custom provider endpoints, execution-server
// endpoints) are resolved here with the location's `resolver`, every
// address is checked against SPEC §10 (no private, loopback or link-local
// targets unless allowed), and the caller connects to the address that was
// checked — so a name cannot pass the check and then resolve elsewhere.
#include "ngx_byok_module/ngx_byok.h"

namespace {

struct Resolution {
    ngx_event_t ev{};  // posted with the outcome: no re-entry from the resolver
    std::string host;
    std::function<void(const std::string &ip, const std::string &error)> done;
    std::string ip, error;
    ByokMain *m = nullptr;
};

std::string check_addresses(ByokMain *m, const std::string &host, ngx_resolver_ctx_t *ctx) {
    if (ctx->state != NGX_OK || ctx->naddrs == 0) return "";
    std::string first;
    for (ngx_uint_t i = 0; i < ctx->naddrs; i++) {
        u_char text[NGX_SOCKADDR_STRLEN];
        size_t n =
            ngx_sock_ntop(ctx->addrs[i].sockaddr, ctx->addrs[i].socklen, text, sizeof(text), 0);
        std::string ip((const char *)text, n);
        std::string why = byok::admin::resolved_address_problem(m->admin, host, ip);
        if (!why.empty()) return "!" + why;  // one bad address refuses the name
        if (first.empty()) first = ip;
    }
    return first;
}

void resolved(ngx_resolver_ctx_t *ctx) {
    auto *res = static_cast<Resolution *>(ctx->data);
    std::string ip;
    try {
        ip = check_addresses(res->m, res->host, ctx);
    } catch (const std::exception &) {
    }
    try {  // a resolver event: nothing may throw into nginx
        if (ip.empty()) {
            res->error =
                ctx->state == NGX_OK ? "the host has no address" : "the host could not be resolved";
        } else if (ip[0] == '!') {
            res->error = ip.substr(1);
        } else {
            res->ip = ip;
        }
    } catch (const std::exception &) {
        res->ip.clear();  // refused (out of memory), never let through unchecked
    }
    ngx_resolve_name_done(ctx);
    ngx_post_event(&res->ev, &ngx_posted_events);
}

void deliver(ngx_event_t *ev) {
    auto *res = static_cast<Resolution *>(ev->data);
    auto done = std::move(res->done);
    std::string ip = std::move(res->ip), error = std::move(res->error);
    delete res;
    try {  // a posted event: the callback's exception must not cross into nginx
        done(ip, error);
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, ev->log, 0, BYOK_LOG "resolve: %s", e.what());
    }
}

}  // namespace

ngx_int_t ngx_byok_resolve_checked(
    ngx_http_request_t *r, const byok::Url &url,
    std::function<void(const std::string &, const std::string &)> done) {
    ByokMain *m =
        static_cast<ngx_byok_main_conf_t *>(ngx_http_get_module_main_conf(r, ngx_http_byok_module))
            ->m;
    if (url.host_is_ip) {
        std::string why = byok::admin::resolved_address_problem(m->admin, url.host, url.host);
        done(why.empty() ? url.host : "", why);
        return NGX_OK;
    }
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(
        ngx_http_get_module_loc_conf(r, ngx_http_core_module));
    ngx_resolver_ctx_t temp{};
    temp.name.data = (u_char *)url.host.data();
    temp.name.len = url.host.size();
    ngx_resolver_ctx_t *ctx = ngx_resolve_start(clcf->resolver, &temp);
    if (ctx == nullptr) return NGX_ERROR;
    if (ctx == NGX_NO_RESOLVER) {
        done("", "a host name needs a `resolver` in the nginx configuration");
        return NGX_OK;
    }
    auto *res = new (std::nothrow) Resolution();
    if (res == nullptr) return NGX_ERROR;
    res->host = url.host;
    res->done = std::move(done);
    res->m = m;
    res->ev.handler = deliver;
    res->ev.data = res;
    res->ev.log = r->connection->log;
    ctx->name.data = (u_char *)res->host.data();
    ctx->name.len = res->host.size();
    ctx->handler = resolved;
    ctx->data = res;
    ctx->timeout = clcf->resolver_timeout;
    if (ngx_resolve_name(ctx) != NGX_OK) {
        // ngx_resolve_name freed ctx on error
        delete res;
        return NGX_ERROR;
    }
    return NGX_OK;
}

std::string ngx_byok_pinned_origin(const byok::Url &url, const std::string &ip) {
    bool v6 = ip.find(':') != std::string::npos;
    return url.scheme + "://" + (v6 ? "[" + ip + "]" : ip) + ":" + std::to_string(url.port);
}
