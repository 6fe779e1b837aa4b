// The gateway's response headers: x-byok-route, x-byok-provider and
// x-byok-fallback-reason tell the client how its request was served;
// x-byok-limit-* what remains of the project's limits (issue 13, set at
// admission by ngx_byok_limits.cpp).
#include "ngx_byok_module/ngx_byok_ctx.h"

namespace {

ngx_http_output_header_filter_pt g_next_header_filter;

ngx_int_t ngx_byok_header_filter(ngx_http_request_t *r) {
    if (r != r->main) return g_next_header_filter(r);
    ByokGatewayCtx *ctx = ngx_byok_gateway_ctx(r, false);
    if (ctx != nullptr && ctx->decided) {
        if (r->upstream != nullptr && r->upstream->headers_in.status_n)  // issue 14: key health
            ngx_byok_health_observe(r, ctx, r->upstream->headers_in.status_n);
        // Names are literals, values the catalog's or the ctx's (the
        // decision is final once a response goes out): no copies.
        const byok::RouteDecision &d = ctx->decision;
        ngx_list_t *out = &r->headers_out.headers;
        bool ok = ngx_byok_push_header_ref(out, "x-byok-route", byok::route_name(d.route));
        if (ok && d.provider) ok = ngx_byok_push_header_ref(out, "x-byok-provider", d.provider->id);
        if (ok && d.route == byok::Route::Fallback)
            ok = ngx_byok_push_header_ref(out, "x-byok-fallback-reason", d.reason);
        for (const auto &[name, value] : ctx->limit.headers)
            ok = ok && ngx_byok_push_header_ref(out, name, value) != nullptr;
        if (!ok) return NGX_ERROR;
    }
    return g_next_header_filter(r);
}

}  // namespace

ngx_int_t ngx_byok_filter_init(ngx_conf_t *) {
    g_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_byok_header_filter;
    return NGX_OK;
}
