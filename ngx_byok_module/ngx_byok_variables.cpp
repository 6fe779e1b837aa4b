// The gateway's nginx variables ($byok_project, $byok_route, ...,
// $byok_upstream*): values read from the request's ctx, copied into the
// request pool. README.md lists which are safe to log.
#include "ngx_byok_module/ngx_byok_ctx.h"

namespace {

enum class Var {
    Project,
    Provider,
    Model,
    Route,
    Reason,
    KeyHint,
    RequestId,
    ExecServer,
    Upstream,
    UpstreamHost,
    UpstreamMethod
};

// The value of a gateway variable; nullopt = not found.
std::optional<std::string_view> gateway_value(const ByokGatewayCtx &ctx, Var which) {
    const byok::RouteDecision &d = ctx.decision;
    std::string_view val;
    switch (which) {
        case Var::Project:
            return std::string_view(ctx.snap->project);
        case Var::Provider:
            if (ctx.decided && d.provider) val = d.provider->id;
            return val;
        case Var::Model:
            return ctx.decided && !d.model.empty() ? std::string_view(d.model) : ctx.input.model;
        case Var::Route:
            if (ctx.decided) val = byok::route_name(d.route);
            return val;
        case Var::Reason:
            if (ctx.decided && d.route == byok::Route::Fallback) val = d.reason;
            return val;
        case Var::KeyHint:
            if (ctx.decided && d.route == byok::Route::Byok) val = ctx.key_hint;
            return val;
        case Var::ExecServer:
            return std::string_view(ctx.snap->default_server);
        default:
            return val;
    }
}

ngx_int_t ngx_byok_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data) {
    auto which = static_cast<Var>(data);
    v->not_found = 1;
    if (which == Var::RequestId) {
        auto *mcf = static_cast<ngx_byok_main_conf_t *>(
            ngx_http_get_module_main_conf(r, ngx_http_byok_module));
        ngx_http_variable_value_t *rid = ngx_http_get_indexed_variable(r, mcf->request_id_index);
        if (rid != nullptr && !rid->not_found) *v = *rid;
        return NGX_OK;
    }
    // The upstream values belong to a gateway request or a key test; the
    // others to a gateway request only (empty in a key test).
    const ByokUpstream *up = ngx_byok_upstream_of(r);
    if (up == nullptr) return NGX_OK;
    // The upstream values are request-pool bytes already (ByokUpstream::
    // set_target): handed over as they are (issue 18: proxy_pass reads
    // $byok_upstream on every request).
    const ngx_str_t *pooled = nullptr;
    switch (which) {
        case Var::Upstream:
            if (up->url.len == 0) return NGX_OK;
            pooled = &up->url;
            break;
        case Var::UpstreamHost:
            pooled = &up->host;
            break;
        case Var::UpstreamMethod:
            pooled = &up->method;
            break;
        default:
            break;
    }
    if (pooled != nullptr) {
        v->data = pooled->data;
        v->len = pooled->len;
        v->valid = 1;
        v->no_cacheable = 1;
        v->not_found = 0;
        return NGX_OK;
    }
    std::optional<std::string_view> val;
    if (ByokGatewayCtx *ctx = ngx_byok_gateway_ctx(r, false)) {
        val = gateway_value(*ctx, which);
    } else {
        val = std::string_view();
    }
    if (!val) return NGX_OK;
    return ngx_byok_variable_value(r, v, *val);
}

struct VarDef {
    ngx_str_t name;
    Var which;
};
VarDef g_vars[] = {
    {ngx_string("byok_project"), Var::Project},
    {ngx_string("byok_provider"), Var::Provider},
    {ngx_string("byok_model"), Var::Model},
    {ngx_string("byok_route"), Var::Route},
    {ngx_string("byok_fallback_reason"), Var::Reason},
    {ngx_string("byok_key_hint"), Var::KeyHint},
    {ngx_string("byok_request_id"), Var::RequestId},
    {ngx_string("byok_execution_server"), Var::ExecServer},
    {ngx_string("byok_upstream"), Var::Upstream},
    {ngx_string("byok_upstream_host"), Var::UpstreamHost},
    {ngx_string("byok_upstream_method"), Var::UpstreamMethod},
};

}  // namespace

ngx_int_t ngx_byok_variable_value(ngx_http_request_t *r, ngx_http_variable_value_t *v,
                                  std::string_view val) {
    u_char *p = static_cast<u_char *>(ngx_pnalloc(r->pool, val.size() + 1));
    if (p == nullptr) return NGX_ERROR;
    ngx_memcpy(p, val.data(), val.size());
    v->data = p;
    v->len = val.size();
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    return NGX_OK;
}

ngx_int_t ngx_byok_add_phase_handler(ngx_conf_t *cf, ngx_http_phases phase,
                                     ngx_http_handler_pt handler) {
    auto *cmcf = static_cast<ngx_http_core_main_conf_t *>(
        ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module));
    auto *h = static_cast<ngx_http_handler_pt *>(ngx_array_push(&cmcf->phases[phase].handlers));
    if (h == nullptr) return NGX_ERROR;
    *h = handler;
    return NGX_OK;
}

ngx_int_t ngx_byok_variables_init(ngx_conf_t *cf) {
    return ngx_byok_add_variables(cf, g_vars, ngx_byok_variable);
}
