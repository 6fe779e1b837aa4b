// Log phase of gateway requests: the request counters of /metrics, then
// metering (ngx_byok_metering.cpp: the per-project request, token and cost
// counters and the usage event) with the same ctx: one lookup for the phase.
#include "ngx_byok_module/ngx_byok_ctx.h"

ngx_int_t ngx_byok_log_handler(ngx_http_request_t *r) {
    ByokGatewayCtx *ctx = ngx_byok_gateway_ctx(r, false);
    if (ctx == nullptr || !ctx->decided) return NGX_OK;
    try {
        ByokMain *m = static_cast<ngx_byok_main_conf_t *>(
                          ngx_http_get_module_main_conf(r, ngx_http_byok_module))
                          ->m;
        const byok::RouteDecision &d = ctx->decision;
        ngx_msec_t upstream_ms = 0;
        bool had_upstream = r->upstream_states && r->upstream_states->nelts;
        if (had_upstream) {
            auto *st = static_cast<ngx_http_upstream_state_t *>(r->upstream_states->elts);
            for (ngx_uint_t i = 0; i < r->upstream_states->nelts; i++)
                if (st[i].response_time != (ngx_msec_t)-1) upstream_ms += st[i].response_time;
        }
        ngx_byok_count_request(m->catalog, d.provider, d.route, r->headers_out.status, upstream_ms,
                               had_upstream);
    } catch (const std::exception &) {
    }
    ngx_byok_meter_log(r, ctx);  // tokens, cost, the usage event (ngx_byok_metering.cpp)
    return NGX_OK;
}
