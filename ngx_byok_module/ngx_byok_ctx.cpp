// Per-request state of the gateway and of the admin's key tests (types and
// lookup in ngx_byok.h).
#include "ngx_byok_module/ngx_byok_ctx.h"

#include "lib/util.h"

const std::shared_ptr<const byok::GatewaySnapshot> &ngx_byok_no_snapshot() {
    static const auto none = std::make_shared<const byok::GatewaySnapshot>();
    return none;
}

void ByokUpstream::wipe_secrets() {
    for (size_t i = 0; i < n_secrets; ++i) byok::wipe(secrets[i].data, secrets[i].len);
    n_secrets = 0;
}

bool ByokUpstream::set_target(ngx_pool_t *pool, std::initializer_list<std::string_view> url_parts,
                              std::string_view host_, std::string_view method_) {
    size_t url_len = 0;
    for (std::string_view part : url_parts) url_len += part.size();
    auto *p = static_cast<u_char *>(ngx_pnalloc(pool, url_len + host_.size() + method_.size()));
    if (p == nullptr) return false;
    url = {url_len, p};
    for (std::string_view part : url_parts) p = ngx_cpymem(p, part.data(), part.size());
    host = {host_.size(), p};
    p = ngx_cpymem(p, host_.data(), host_.size());
    method = {method_.size(), p};
    ngx_memcpy(p, method_.data(), method_.size());
    return true;
}

ByokUpstream::~ByokUpstream() { wipe_secrets(); }

ByokGatewayCtx::~ByokGatewayCtx() {
    ngx_byok_redis_cancel(waiter);
    if (r != nullptr) ngx_byok_wipe_upstream_request(r);  // issue 18
    ngx_byok_keycache_keep_block(&key);
}

ByokKeyTestCtx::~ByokKeyTestCtx() {
    if (r != nullptr) ngx_byok_wipe_upstream_request(r);  // issue 18
}

ByokGatewayCtx *ngx_byok_gateway_ctx_slow(ngx_http_request_t *r, bool create) {
    // r->ctx is cleared by named-location jumps; the cleanup entry survives.
    ByokGatewayCtx *ctx = ngx_byok_find_ctx<ByokGatewayCtx>(r);
    if (ctx == nullptr && create) ctx = ngx_byok_new_ctx<ByokGatewayCtx>(r);
    if (ctx != nullptr) ngx_http_set_ctx(r, ctx, ngx_http_byok_module);
    return ctx;
}

ByokKeyTestCtx *ngx_byok_key_test_ctx(ngx_http_request_t *r) {
    return ngx_byok_find_ctx<ByokKeyTestCtx>(r);
}

const ByokUpstream *ngx_byok_upstream_of(ngx_http_request_t *r) {
    if (ByokGatewayCtx *g = ngx_byok_gateway_ctx(r, false)) return &g->up;
    if (r != r->main) {
        if (ByokKeyTestCtx *t = ngx_byok_key_test_ctx(r)) return &t->up;
    }
    return nullptr;
}
