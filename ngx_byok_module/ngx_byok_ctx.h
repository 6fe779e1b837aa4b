// The per-request state of the glue: the gateway request, the key-test
// subrequest and the upstream both carry, with the metering and limit state
// the gateway request holds. Declarations of the functions that use them
// are in ngx_byok.h.
#pragma once

#include <new>

#include "ngx_byok_module/ngx_byok.h"

// --- metering state (ngx_byok_metering.cpp) -----------------------------------

// Per-request metering state, part of ByokGatewayCtx.
struct ByokMeter {
    bool inject = false;       // include_usage was added to the upstream body
    bool active = false;       // the response body is being scanned
    bool finished = false;     // usage and cost below are final
    byok::StreamFacts stream;  // from the body scan: where include_usage would go
    byok::UsageScanner scanner;
    std::optional<byok::SseUsageDropper> dropper;  // inject + an SSE answer
    ngx_chain_t *free = nullptr, *busy = nullptr;  // dropper output buffers
    byok::TokenUsage usage;
    int64_t cost_micro = 0;
};

// --- project-limit state (ngx_byok_limits.cpp) ----------------------------------

// Per-request limit state, part of ByokGatewayCtx.
struct ByokLimitState {
    bool charged = false;  // this request counts in requests_per_minute already
    std::vector<std::pair<std::string, std::string>> headers;  // x-byok-limit-*
};

// --- per-request state (ngx_byok_ctx.cpp) ---------------------------------------
//
// C++ state of a request is owned by a request-pool cleanup, so nginx runs
// its destructor (which wipes every buffer that carried a secret). Each type
// is found again by its own cleanup handler — type-safe, and it survives the
// named-location jumps that clear r->ctx. The module's ctx slot caches the
// gateway ctx only; admin and key-test state never share it.

// Storage of T objects, reused by the worker's later requests (issue 18: a
// gateway ctx is 2 KB — from the request pool it cost a pool block, i.e. a
// malloc, on every request). Up to kKeep free blocks are kept; the
// destructor has wiped every secret before a block is kept.
template <class T>
struct ByokCtxStorage {
    static constexpr size_t kKeep = 256;
    static inline void *free_list = nullptr;
    static inline size_t n_free = 0;
    static void *take() {
        if (free_list == nullptr) return ::operator new(sizeof(T), std::nothrow);
        void *p = free_list;
        free_list = *static_cast<void **>(p);
        n_free--;
        return p;
    }
    static void give(void *p) {
        if (n_free == kKeep) return ::operator delete(p);
        *static_cast<void **>(p) = free_list;
        free_list = p;
        n_free++;
    }
};

template <class T>
void ngx_byok_ctx_cleanup(void *data) {
    static_cast<T *>(data)->~T();
    ByokCtxStorage<T>::give(data);
}

// The T of request `r` (not of its parent or subrequests), or nullptr.
template <class T>
T *ngx_byok_find_ctx(ngx_http_request_t *r) {
    for (ngx_pool_cleanup_t *cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_byok_ctx_cleanup<T> && static_cast<T *>(cln->data)->r == r)
            return static_cast<T *>(cln->data);
    }
    return nullptr;
}

// A new T for `r`, destroyed by a request-pool cleanup, or nullptr when out
// of memory.
template <class T>
T *ngx_byok_new_ctx(ngx_http_request_t *r) {
    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == nullptr) return nullptr;
    void *mem = ByokCtxStorage<T>::take();
    if (mem == nullptr) return nullptr;  // the cleanup without a handler does nothing
    T *ctx = new (mem) T();
    ctx->r = r;
    cln->data = ctx;
    cln->handler = ngx_byok_ctx_cleanup<T>;
    return ctx;
}

// What a proxy location reads through $byok_upstream, $byok_upstream_host
// and $byok_upstream_method, and the header list it sends: set by gateway
// requests and by the admin's key-test subrequests alike.
struct ByokUpstream {
    // In request-pool memory (set_target), never freed before the request
    // ends: the variables hand these bytes to nginx without a copy, and a
    // value nginx cached stays valid after a later attempt's set_target.
    ngx_str_t url{}, host{}, method = ngx_string("GET");
    ngx_list_t client_headers{};  // the client's header list, before rewriting
    bool have_client_headers = false;
    // Header values that hold a secret, wiped when the request ends. A fixed
    // array (issue 18: no allocation per request): the gateway installs one
    // auth header, a server test two; more fails closed (NGX_ERROR). Each
    // attempt's install wipes the previous attempt's values first.
    std::array<ngx_str_t, 4> secrets{};
    size_t n_secrets = 0;
    bool wipe_on_exit(u_char *p, size_t len) {
        if (n_secrets == secrets.size()) return false;
        secrets[n_secrets++] = {len, p};
        return true;
    }
    void wipe_secrets();
    // url = the parts joined, with `host` and `method`: one pool copy of all
    // three (issue 18: the URL is never built in a std::string first).
    // false when out of memory.
    bool set_target(ngx_pool_t *pool, std::initializer_list<std::string_view> url_parts,
                    std::string_view host_, std::string_view method_ = "GET");
    bool set_target(ngx_pool_t *pool, std::string_view origin, std::string_view path,
                    std::string_view host_, std::string_view method_ = "GET") {
        return set_target(pool, {origin, path}, host_, method_);
    }
    ~ByokUpstream();
};

// The empty snapshot a gateway request starts with (shared, immutable).
const std::shared_ptr<const byok::GatewaySnapshot> &ngx_byok_no_snapshot();

// A gateway request (byok_gateway locations), from the access phase to the
// log phase.
struct ByokGatewayCtx {
    enum class Stage { Start, WaitKey, WaitBody, WaitResolve, Proxying, Fallback, Done };
    // User-provided (issue 18): ngx_byok_new_ctx's `T()` then
    // runs the members' own initializers only, without first zero-filling
    // the 2 KB object. Every member below has an initializer or a class type.
    ByokGatewayCtx() {}
    ngx_http_request_t *r = nullptr;
    Stage stage = Stage::Start;
    bool resumed = false;       // a Redis reply or the body arrived
    bool waiting_body = false;  // body read went async
    ByokRedisWaiter *waiter = nullptr;
    byok::admin::Reply reply;

    u_char sha[32]{};
    ByokKeyEntry key_entry;         // the worker's cache entry of a Fresh snapshot
    uint64_t cache_generation = 0;  // when the lookup was sent
    std::string stale_blob;
    // What the gateway key resolves to, never null (an empty Unknown
    // snapshot until the lookup): on a hit the worker's decoded copy,
    // shared rather than copied (issue 18).
    std::shared_ptr<const byok::GatewaySnapshot> snap = ngx_byok_no_snapshot();
    // issue 16, cluster mode: the lookup's first step while the second runs
    // (set = the second step is out; issue 18: a hit constructs no outcome)
    std::optional<byok::LookupOutcome> lookup_first;

    byok::GatewayRequest req;  // URI and headers, parsed
    bool body_read = false;
    size_t body_len = 0;               // bytes of the client's body
    ngx_chain_t *orig_bufs = nullptr;  // nginx's buffers of it (never copied)
    bool body_blanked = false;         // the old model value was blanked in the temp file
    std::optional<byok::ModelSpan> model;
    byok::RouteInput input;
    byok::RouteDecision decision;
    bool decided = false;
    byok::SecretString key;
    std::string_view key_hint;  // a view of *snap (RoutePlan::key_hint)
    byok::KeyAttempts keys;     // which of the provider's keys (issue 14)

    bool resolve_endpoint = false;  // the plan's tenant endpoint: resolve and check it first
    std::string pinned_ip;          // checked address of a custom endpoint
    std::string resolve_error;
    bool waiting_resolve = false;
    ByokUpstream up;
    ByokMeter meter;
    ByokLimitState limit;

    ~ByokGatewayCtx();
};

// The admin API's live key test: the /_byok/key-test subrequest.
struct ByokKeyTestCtx {
    ngx_http_request_t *r = nullptr;
    ByokUpstream up;

    ~ByokKeyTestCtx();
};

// The gateway ctx of `r` when the module's ctx slot no longer holds it (a
// named-location jump cleared r->ctx), created when `create`; else nullptr.
ByokGatewayCtx *ngx_byok_gateway_ctx_slow(ngx_http_request_t *r, bool create);
// The gateway ctx of `r` (created when `create`), or nullptr. Inline (issue
// 18): the access handler, the variables, the filters and the log phase ask
// ~9 times a request, and all but the first find it in the ctx slot.
inline ByokGatewayCtx *ngx_byok_gateway_ctx(ngx_http_request_t *r, bool create) {
    auto *ctx = static_cast<ByokGatewayCtx *>(ngx_http_get_module_ctx(r, ngx_http_byok_module));
    return ctx != nullptr ? ctx : ngx_byok_gateway_ctx_slow(r, create);
}
ByokKeyTestCtx *ngx_byok_key_test_ctx(ngx_http_request_t *r);
// The upstream state of `r`, gateway request or key test, or nullptr.
const ByokUpstream *ngx_byok_upstream_of(ngx_http_request_t *r);
