// byok_admin content handler: reads the body, hands the request to
// byok::admin::handle() and executes the Steps it returns — Redis commands
// on the worker's async link, outbound HTTP as an in-memory subrequest to
// /_byok/key-test (same proxy settings and header builder as real traffic),
// connection tests on the thread pool. Every resumption of the step chain
// (Redis reply, subrequest end, resolver, thread-pool result) goes through
// resume(), which catches what run() throws.
#include "ngx_byok_module/ngx_byok_ctx.h"

#include <functional>

#include "lib/util.h"

extern "C" {
#include <ngx_thread_pool.h>
}

namespace {

struct AdminCtx {
    ngx_http_request_t *r = nullptr;
    ngx_http_request_t *sr = nullptr;  // the running /_byok/key-test subrequest
    std::string body;
    ByokRedisWaiter *waiter = nullptr;
    std::function<byok::admin::Step(const byok::admin::Reply &)> redis_next;
    std::function<byok::admin::Step(const byok::admin::HttpResult &)> http_next;
    byok::admin::HttpResult http_result;
    ngx_msec_t http_started = 0;
    bool http_done = false;
    bool replicated = false;  // the WAIT after a write was sent
    int redis_node = -1;      // Redis Cluster: the node of the last command (issue 16)
    std::string changed;      // the project a write changes (byok::admin::changed_project)
    ~AdminCtx() {
        ngx_byok_redis_cancel(waiter);
        // The body may carry a provider key or a server secret.
        byok::wipe(body.data(), body.size());
        if (r != nullptr && r->request_body != nullptr) {
            for (ngx_chain_t *cl = r->request_body->bufs; cl; cl = cl->next) {
                if (!cl->buf->in_file && cl->buf->pos)
                    byok::wipe(cl->buf->pos, cl->buf->last - cl->buf->pos);
            }
        }
    }
};

void run(AdminCtx *ctx, byok::admin::Step step);

void fail_internal(ngx_http_request_t *r, const char *what) {
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, BYOK_LOG "admin: %s", what);
    ngx_http_finalize_request(
        r, ngx_byok_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR, "internal_error",
                               "internal error", "api_error"));
}

// Continues the step chain with `next(result)`: the one way back into run()
// from an event, with the try/catch every entry point from nginx has.
template <class Next, class Result>
void resume(AdminCtx *ctx, Next &next, const Result &result) {
    try {
        run(ctx, next(result));
    } catch (const std::exception &e) {
        fail_internal(ctx->r, e.what());
    }
}

void redis_done(ByokRedisWaiter *w) {
    auto *ctx = static_cast<AdminCtx *>(w->data);
    ctx->waiter = nullptr;
    ctx->redis_node = w->node;  // issue 16: a following ROLE / WAIT goes to the same node
    ngx_connection_t *c = ctx->r->connection;
    auto next = std::move(ctx->redis_next);
    resume(ctx, next, w->reply);
    ngx_http_run_posted_requests(c);
}

ngx_int_t subrequest_done(ngx_http_request_t *sr, void *data, ngx_int_t rc) {
    auto *ctx = static_cast<AdminCtx *>(data);
    byok::admin::HttpResult &res = ctx->http_result;
    res.latency_ms = (int64_t)(ngx_current_msec - ctx->http_started);
    // Trust a status only when the provider actually sent a status line;
    // nginx's own 502/504 pages (connect error, timeout) mean "no answer".
    // The body excerpt was captured by body_filter.
    ngx_http_upstream_t *u = sr->upstream;
    if (u != nullptr && u->headers_in.status_n != 0) {
        res.status = (int)u->headers_in.status_n;
    } else {
        res.status = 0;
        res.body.clear();
        res.truncated = false;
    }
    ctx->sr = nullptr;
    ctx->http_done = true;
    return rc;
}

ngx_http_output_body_filter_pt g_next_body_filter;

// The admin request whose key-test subrequest `r` is, or nullptr.
AdminCtx *key_test_parent(ngx_http_request_t *r) {
    if (r == r->main || r->parent == nullptr) return nullptr;
    AdminCtx *ctx = ngx_byok_find_ctx<AdminCtx>(r->parent);
    return ctx != nullptr && ctx->sr == r ? ctx : nullptr;
}

// The key-test answer is captured here, bounded: the first kHttpExcerpt
// bytes are kept and the rest is read and dropped. Nothing reaches nginx's
// in-memory subrequest buffer, which fails the whole admin request ("too
// big subrequest response") for answers over subrequest_output_buffer_size
// — a real provider's model list is far bigger.
ngx_int_t body_filter(ngx_http_request_t *r, ngx_chain_t *in) {
    AdminCtx *ctx = key_test_parent(r);
    if (ctx == nullptr) return g_next_body_filter(r, in);
    byok::admin::HttpResult &res = ctx->http_result;
    for (ngx_chain_t *cl = in; cl; cl = cl->next) {
        ngx_buf_t *b = cl->buf;
        if (ngx_buf_in_memory(b)) {
            size_t n = b->last - b->pos;
            size_t room = byok::admin::kHttpExcerpt - res.body.size();
            if (n > room) res.truncated = true;
            try {  // an nginx filter: bad_alloc must not cross into C
                res.body.append((const char *)b->pos, ngx_min(n, room));
            } catch (const std::exception &) {
                return NGX_ERROR;
            }
            b->pos = b->last;
        }
        if (b->in_file) {  // not read: proxy_max_temp_file_size 0 avoids this
            if (b->file_last > b->file_pos) res.truncated = true;
            b->file_pos = b->file_last;
        }
    }
    return NGX_OK;
}

void resume_after_subrequest(ngx_http_request_t *r) {
    AdminCtx *ctx = ngx_byok_find_ctx<AdminCtx>(r);
    if (ctx == nullptr || !ctx->http_done) return;
    ctx->http_done = false;
    r->write_event_handler = ngx_http_request_empty_handler;
    auto next = std::move(ctx->http_next);
    resume(ctx, next, ctx->http_result);
}

bool launch_subrequest(AdminCtx *ctx, byok::admin::HttpCall &call, const std::string &url_text) {
    ngx_http_request_t *r = ctx->r;
    auto *ps = static_cast<ngx_http_post_subrequest_t *>(
        ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t)));
    if (ps == nullptr) return false;
    ps->handler = subrequest_done;
    ps->data = ctx;
    ngx_str_t uri = ngx_string("/_byok/key-test");
    ngx_http_request_t *sr;
    if (ngx_http_subrequest(r, &uri, nullptr, &sr, ps,
                            NGX_HTTP_SUBREQUEST_IN_MEMORY | NGX_HTTP_SUBREQUEST_WAITED) != NGX_OK)
        return false;
    ByokKeyTestCtx *sctx = ngx_byok_new_ctx<ByokKeyTestCtx>(sr);
    if (sctx == nullptr) return false;
    byok::Url url = byok::parse_url(call.url, "test URL");
    sctx->up.url = url_text;
    sctx->up.host = url.authority();
    sctx->up.method = call.method;
    if (ngx_byok_install_headers(sr, &sctx->up, call.headers, false) != NGX_OK) return false;
    for (auto &h : call.headers) byok::wipe(h.value.data(), h.value.size());
    ctx->http_started = ngx_current_msec;
    ctx->http_done = false;
    ctx->http_result = {};
    ctx->sr = sr;
    ctx->http_next = std::move(call.next);
    r->write_event_handler = resume_after_subrequest;
    return true;
}

// Tenant-chosen targets (a key test's URL, an ssh host) are resolved and
// checked first (SPEC §10) on the event loop; `launch(ip)` then starts the
// work against the checked address only. When the target is refused or the
// work cannot start, the chain goes on with `refused(why)`. false when
// nothing was started (`call` is left as it was).
template <class Call, class Result>
bool start_checked(AdminCtx *ctx, Call &call, const byok::Url &url,
                   bool (*launch)(AdminCtx *, Call &, const std::string &ip),
                   Result (*refused)(const std::string &why), const char *cannot_start) {
    auto pending = std::make_shared<Call>(std::move(call));
    ngx_int_t rc = ngx_byok_resolve_checked(
        ctx->r, url,
        [ctx, pending, launch, refused, cannot_start](const std::string &ip,
                                                      const std::string &error) {
            ngx_connection_t *c = ctx->r->connection;
            bool started = false;
            try {
                started = !ip.empty() && launch(ctx, *pending, ip);
            } catch (const std::exception &) {
                started = false;
            }
            if (!started) {
                try {  // the refusal text is built here: inside the guard too
                    auto next = std::move(pending->next);
                    resume(ctx, next,
                           refused(ip.empty() ? "the target was refused: " + error
                                              : std::string(cannot_start)));
                } catch (const std::exception &e) {
                    fail_internal(ctx->r, e.what());
                }
            }
            ngx_http_run_posted_requests(c);
        });
    if (rc != NGX_OK) {
        call = std::move(*pending);
        return false;
    }
    return true;
}

bool launch_http_pinned(AdminCtx *ctx, byok::admin::HttpCall &call, const std::string &ip) {
    byok::Url url = byok::parse_url(call.url, "test URL");
    return launch_subrequest(ctx, call, ngx_byok_pinned_origin(url, ip) + url.path);
}

byok::admin::HttpResult http_refused(const std::string &why) {
    byok::admin::HttpResult refused;
    refused.body = why;
    return refused;
}

bool launch_probe(AdminCtx *ctx, byok::admin::ProbeCall &call, const std::string &address);

byok::admin::ProbeResult probe_refused(const std::string &why) {
    byok::admin::ProbeResult refused;
    refused.stage = "connect";
    refused.message = why;
    return refused;
}

bool start_http(AdminCtx *ctx, byok::admin::HttpCall &call) {
    if (!call.check_resolved_address) return launch_subrequest(ctx, call, call.url);
    byok::Url url = byok::parse_url(call.url, "test URL");
    return start_checked(ctx, call, url, launch_http_pinned, http_refused,
                         "cannot start the request");
}

bool start_probe(AdminCtx *ctx, byok::admin::ProbeCall &call) {
    if (!call.check_resolved_address) return launch_probe(ctx, call, "");
    bool v6 = call.host.find(':') != std::string::npos;
    byok::Url url =
        byok::parse_url("https://" + (v6 ? "[" + call.host + "]" : call.host), "ssh host");
    return start_checked(ctx, call, url, launch_probe, probe_refused, "cannot start the test");
}

// Connection tests block (TCP, SSH handshake), so they run on the thread
// pool; the result comes back to the event loop and the step chain.
// `address` is the checked IP for tenant-chosen hosts ("" = libssh resolves).
bool launch_probe(AdminCtx *ctx, byok::admin::ProbeCall &call, const std::string &address) {
    auto probe = std::make_shared<byok::admin::ProbeCall>(std::move(call));
    auto result = std::make_shared<byok::admin::ProbeResult>();
    auto next =
        std::make_shared<std::function<byok::admin::Step(const byok::admin::ProbeResult &)>>(
            std::move(probe->next));
    probe->next = nullptr;
    ngx_int_t rc = ngx_byok_run_in_thread(
        ctx->r,
        [probe, result, address] {
            if (probe->kind == "ssh") {
                ngx_byok_ssh_probe(*probe, address, result.get());
            } else {
                ngx_byok_local_probe(probe->workspace_path, result.get());
            }
        },
        [ctx, result, next] { resume(ctx, *next, *result); });
    if (rc != NGX_OK) {
        call = std::move(*probe);
        call.next = std::move(*next);
        return false;
    }
    return true;
}

// byok_redis wait_replicas=N: a write is acknowledged only once the
// primary's replicas (up to N of those connected, per ROLE) have it (WAIT),
// so a failover right after the answer cannot lose it. A primary without a
// connected replica (the survivor of a failover) acknowledges alone. When
// the replicas do not confirm in time the write stays on the primary and
// the client gets 503: it may have to check and retry, but never trusts a
// write that a failover could undo.
byok::admin::Step replicated(byok::admin::Response resp) {
    using byok::admin::Reply;
    using byok::admin::Step;
    ngx_byok_main_conf_t *mcf = ngx_byok_main_conf();
    auto saved = std::make_shared<byok::admin::Response>(std::move(resp));
    auto not_confirmed = [] {
        return Step{byok::admin::Response{
            503,
            byok::json_error("not_replicated",
                             "the change was not confirmed by a replica in time; check and retry",
                             "api_error"),
            {}}};
    };
    byok::admin::RedisCall role;
    role.argv = {"ROLE"};
    role.next = [saved, not_confirmed, mcf](const Reply &r) {
        // ["master", offset, [[ip, port, offset], ...]]
        if (r.type != Reply::Type::Array || r.elements.size() < 3 ||
            r.elements[0].str != "master" || r.elements[2].type != Reply::Type::Array)
            return not_confirmed();
        long long want =
            std::min<long long>((long long)mcf->redis_wait_replicas, r.elements[2].elements.size());
        if (want == 0) return Step{std::move(*saved)};
        byok::admin::RedisCall wait;
        wait.argv = {"WAIT", std::to_string(want), std::to_string(mcf->redis_wait_timeout)};
        wait.next = [saved, want, not_confirmed](const Reply &w) {
            if (w.type == Reply::Type::Integer && w.integer >= want) return Step{std::move(*saved)};
            return not_confirmed();
        };
        return Step{std::move(wait)};
    };
    return Step{std::move(role)};
}

void run(AdminCtx *ctx, byok::admin::Step step) {
    ngx_http_request_t *r = ctx->r;
    for (;;) {
        if (auto *resp = std::get_if<byok::admin::Response>(&step.action)) {
            bool mutation = resp->status < 300 && !(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD));
            if (mutation && !ctx->replicated && ngx_byok_main_conf()->redis_wait_replicas > 0) {
                ctx->replicated = true;
                step = replicated(std::move(*resp));
                continue;
            }
            if (mutation) {
                ngx_byok_count(BYOK_ADMIN_MUTATION);
                if (!ctx->changed.empty()) ngx_byok_cache_invalidate(ctx->changed);
            }
            ngx_http_finalize_request(
                r, ngx_byok_send_json(r, resp->status, resp->body, &resp->headers));
            return;
        }
        if (auto *call = std::get_if<byok::admin::RedisCall>(&step.action)) {
            ctx->waiter = ngx_byok_redis_send(call->argv, redis_done, ctx, ctx->redis_node);
            if (ctx->waiter != nullptr) {
                ctx->redis_next = std::move(call->next);
                return;
            }
            byok::admin::Reply unavailable;
            unavailable.type = byok::admin::Reply::Type::Unavailable;
            auto next = std::move(call->next);
            step = next(unavailable);
            continue;
        }
        if (auto *probe = std::get_if<byok::admin::ProbeCall>(&step.action)) {
            bool started = false;
            try {
                started = start_probe(ctx, *probe);
            } catch (const std::exception &) {
                started = false;
            }
            if (started) return;
            byok::admin::ProbeResult failed;
            failed.stage = "connect";
            failed.message = "no thread pool available for connection tests";
            auto next = std::move(probe->next);
            step = next(failed);
            continue;
        }
        auto &http = std::get<byok::admin::HttpCall>(step.action);
        bool started = false;
        try {
            started = start_http(ctx, http);
        } catch (const std::exception &) {
            started = false;
        }
        if (started) return;
        byok::admin::HttpResult failed;
        auto next = std::move(http.next);
        step = next(failed);
    }
}

void body_ready(ngx_http_request_t *r) {
    AdminCtx *ctx = ngx_byok_find_ctx<AdminCtx>(r);
    if (ctx == nullptr) return;
    ByokMain *m =
        static_cast<ngx_byok_main_conf_t *>(ngx_http_get_module_main_conf(r, ngx_http_byok_module))
            ->m;
    try {
        if (r->request_body &&
            !ngx_byok_each_body_piece(r, r->request_body->bufs,
                                      [ctx](std::string_view piece) { ctx->body.append(piece); }))
            throw byok::Error("cannot read the request body");
        auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(
            ngx_http_get_module_loc_conf(r, ngx_http_core_module));
        std::string_view uri = sv(r->uri), loc = sv(clcf->name);
        if (!loc.empty() && loc.back() == '/') loc.remove_suffix(1);
        std::string_view path = uri.substr(0, loc.size()) == loc ? uri.substr(loc.size()) : uri;
        std::string_view auth =
            r->headers_in.authorization ? sv(r->headers_in.authorization->value) : "";
        std::string_view api_key, content_type;
        if (r->headers_in.content_type) content_type = sv(r->headers_in.content_type->value);
        ngx_byok_each_header(r->headers_in.headers, [&](const ngx_table_elt_t &h) {
            if (ngx_byok_header_is(h, "x-api-key")) api_key = sv(h.value);
            return true;
        });
        byok::admin::Request req;
        req.method = sv(r->method_name);
        req.path = path.empty() ? "/" : path;
        req.query = sv(r->args);
        req.content_type = content_type;
        req.authorization = auth;
        req.api_key = api_key;
        req.body = ctx->body;
        ctx->changed = byok::admin::changed_project(req.method, req.path);
        run(ctx, byok::admin::handle(m->admin, req));
    } catch (const std::exception &e) {
        fail_internal(r, e.what());
    }
}

ngx_int_t admin_handler(ngx_http_request_t *r) {
    if (r != r->main) return NGX_HTTP_NOT_FOUND;
    if (ngx_byok_new_ctx<AdminCtx>(r) == nullptr) return NGX_HTTP_INTERNAL_SERVER_ERROR;
    ngx_int_t rc = ngx_http_read_client_request_body(r, body_ready);
    if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) return rc;
    return NGX_DONE;
}

}  // namespace

ngx_int_t ngx_byok_admin_init(ngx_conf_t *) {
    g_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = body_filter;
    return NGX_OK;
}

char *ngx_byok_admin_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(
        ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    clcf->handler = admin_handler;
    auto *mcf = static_cast<ngx_byok_main_conf_t *>(
        ngx_http_conf_get_module_main_conf(cf, ngx_http_byok_module));
    mcf->gateway_used = 1;
    // Connection tests of execution servers run on the default thread pool.
    if (ngx_thread_pool_add(cf, nullptr) == nullptr) return static_cast<char *>(NGX_CONF_ERROR);
    return NGX_CONF_OK;
}
