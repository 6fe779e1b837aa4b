// Upstream set-up of a gateway request: the request body (read through the
// one body gatherer, the model rewritten in place without copying the
// client's buffers), the header list the proxy module sends (the one place
// that strips client credentials and adds the provider's), and the
// $byok_upstream* values. What to set comes from byok::plan_upstream.
#include "ngx_byok_module/ngx_byok_ctx.h"

#include "lib/multipart.h"
#include "lib/util.h"

namespace {

// Headers that carry client credentials or gateway controls; never forwarded.
bool is_client_secret_header(const ngx_table_elt_t &h) {
    return byok::never_forwarded(byok::request_header(ngx_byok_header_name(h)));
}

// Writes `bytes` over a temp file from offset `at`.
bool blank_in_file(ngx_file_t *file, off_t at, std::string_view bytes) {
    off_t keep = file->offset;  // the request-body code's own write position
    bool ok =
        ngx_write_file(file, (u_char *)bytes.data(), bytes.size(), at) == (ssize_t)bytes.size();
    file->offset = keep;
    return ok;
}

// The body chain with the model value replaced by `token`, built from the
// client's buffers without copying them: slices before the value, one small
// buffer with the token, slices after. Bytes of the old value that sit in
// memory are sliced out; bytes in the temp file are overwritten in place
// with the format's filler (JSON whitespace, a multipart padding header;
// nginx keeps a spilled body whole in the file, so a span is never half in
// memory), so the file pieces stay contiguous from offset 0 — nginx's
// upstream retry (ngx_http_upstream_reinit) rewinds file pieces assuming
// exactly that, and memory slices get start = pos for the same reason.
ngx_int_t splice_model(ngx_http_request_t *r, ByokGatewayCtx *ctx, const std::string &token,
                       ngx_chain_t **out, off_t *len) {
    const off_t s = (off_t)ctx->model->begin, e = (off_t)ctx->model->end;
    ngx_chain_t *head = nullptr, **tail = &head;
    off_t total = 0;
    bool inserted = false;
    const std::string filler = byok::span_filler(*ctx->model);
    auto emit = [&](ngx_buf_t *b) -> bool {
        ngx_chain_t *cl = ngx_alloc_chain_link(r->pool);
        if (cl == nullptr) return false;
        b->last_buf = 0;
        b->last_in_chain = 0;
        cl->buf = b;
        cl->next = nullptr;
        *tail = cl;
        tail = &cl->next;
        total += ngx_buf_size(b);
        return true;
    };
    auto piece = [&](const ngx_buf_t *src, off_t from, off_t to) -> ngx_buf_t * {
        auto *b = static_cast<ngx_buf_t *>(ngx_palloc(r->pool, sizeof(ngx_buf_t)));
        if (b == nullptr) return nullptr;
        *b = *src;
        if (ngx_buf_in_memory(src)) {
            b->start = b->pos = src->pos + from;
            b->end = b->last = src->pos + to;
            b->in_file = 0;
        } else {
            b->file_pos = src->file_pos + from;
            b->file_last = src->file_pos + to;
        }
        return b;
    };
    auto insert_token = [&]() -> bool {
        inserted = true;
        ngx_buf_t *b = ngx_create_temp_buf(r->pool, token.size());
        if (b == nullptr) return false;
        b->last = ngx_cpymem(b->pos, token.data(), token.size());
        return emit(b);
    };

    off_t at = 0;
    ngx_buf_t *last = nullptr;
    for (ngx_chain_t *cl = ctx->orig_bufs; cl; cl = cl->next) {
        ngx_buf_t *src = cl->buf;
        last = src;
        off_t size = ngx_buf_size(src);
        bool memory = ngx_buf_in_memory(src);
        if (size == 0 || (!memory && !src->in_file)) continue;
        // Up to three parts of this buffer: before, inside and after the value.
        off_t cut[4] = {0, ngx_max(0, ngx_min(size, s - at)), ngx_max(0, ngx_min(size, e - at)),
                        size};
        for (int part = 0; part < 3; part++) {
            off_t from = cut[part], to = cut[part + 1];
            if (from == to) continue;
            if (part == 2 && !inserted && !insert_token()) return NGX_ERROR;
            if (part == 1 && memory) continue;  // the old value, left out
            if (part == 1) {
                std::string_view fill(filler);
                if (!blank_in_file(src->file, src->file_pos + from,
                                   fill.substr((size_t)(at + from - s), (size_t)(to - from))))
                    return NGX_ERROR;
                ctx->body_blanked = true;
            }
            ngx_buf_t *b = piece(src, from, to);
            if (b == nullptr || !emit(b)) return NGX_ERROR;
        }
        at += size;
    }
    if (!inserted && !insert_token()) return NGX_ERROR;
    if (last != nullptr) {
        for (ngx_chain_t *cl = head; cl; cl = cl->next) {
            if (cl->next == nullptr) {
                cl->buf->last_buf = last->last_buf;
                cl->buf->last_in_chain = last->last_in_chain;
            }
        }
    }
    *out = head;
    *len = total;
    return NGX_OK;
}

}  // namespace

constexpr size_t kFilePiece = 64 * 1024;

bool ngx_byok_each_body_piece(ngx_http_request_t *r, ngx_chain_t *bufs,
                              void (*f)(const void *arg, std::string_view piece), const void *arg) {
    u_char *piece = nullptr;
    bool ok = true;
    for (ngx_chain_t *cl = bufs; cl && ok; cl = cl->next) {
        ngx_buf_t *b = cl->buf;
        if (ngx_buf_in_memory(b)) {
            f(arg, {(const char *)b->pos, (size_t)(b->last - b->pos)});
            continue;
        }
        if (!b->in_file) continue;
        if (piece == nullptr) piece = static_cast<u_char *>(ngx_palloc(r->pool, kFilePiece));
        if (piece == nullptr) return false;
        for (off_t at = b->file_pos; at < b->file_last && ok;) {
            size_t want = (size_t)ngx_min((off_t)kFilePiece, b->file_last - at);
            ok = ngx_read_file(b->file, piece, want, at) == (ssize_t)want;
            if (ok) f(arg, {(const char *)piece, want});
            at += want;
        }
    }
    if (piece != nullptr) ngx_pfree(r->pool, piece);
    return ok;
}

bool ngx_byok_scan_body(ngx_http_request_t *r, ByokGatewayCtx *ctx) {
    if (r->request_body == nullptr || r->request_body->bufs == nullptr) return true;
    ctx->orig_bufs = r->request_body->bufs;
    // The Content-Type picks the format (JSON, multipart upload, opaque);
    // the request's parse already named it.
    byok::BodyScanner scanner(ctx->req.body_kind, ctx->req.content_type);
    if (!scanner.reads_bytes()) {
        // An opaque body goes through untouched: counted, never read back
        // from the temp file.
        for (ngx_chain_t *cl = ctx->orig_bufs; cl; cl = cl->next)
            scanner.skip((size_t)ngx_buf_size(cl->buf));
    } else if (!ngx_byok_each_body_piece(r, ctx->orig_bufs,
                                         [&](std::string_view piece) { scanner.feed(piece); })) {
        return false;
    }
    ctx->body_len = scanner.offset();
    // An empty body is not validated (nothing to route on).
    if (ctx->body_len > 0) ctx->model = scanner.finish();
    ctx->meter.stream = scanner.stream_facts();  // issue 13: where include_usage goes
    return true;
}

ngx_int_t ngx_byok_setup_upstream(ngx_http_request_t *r, ByokGatewayCtx *ctx) {
    byok::UpstreamPlan plan = byok::plan_upstream(ctx->req, *ctx->snap, ctx->decision, ctx->key,
                                                  ctx->model, ctx->body_blanked, ctx->keys.current);
    const byok::Url &base = plan.base();
    std::string_view host = plan.host();
    bool ok =
        plan.pin
            ? ctx->up.set_target(
                  r->pool, {ngx_byok_pinned_origin(base, ctx->pinned_ip), base.path, plan.rest},
                  host)
            // base.origin() is scheme "://" authority, and host is the authority
            : ctx->up.set_target(r->pool, {base.scheme, "://", host, base.path, plan.rest}, host);
    if (!ok) return NGX_HTTP_INTERNAL_SERVER_ERROR;
    // plan.headers are views of ctx->key (wiped with the ctx) and the snapshot.
    if (ngx_byok_install_headers(r, &ctx->up, plan.headers, true) != NGX_OK)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;

    if (ctx->body_read && r->request_body != nullptr && ctx->orig_bufs != nullptr) {
        // The client's buffers go upstream as they are unless the model
        // changes (restored if a first attempt rewrote them).
        ngx_chain_t *bufs = ctx->orig_bufs;
        off_t len = (off_t)ctx->body_len;
        if (plan.model_token && splice_model(r, ctx, *plan.model_token, &bufs, &len) != NGX_OK)
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        if (ngx_byok_meter_prepare_body(r, ctx, &bufs, &len) != NGX_OK)
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        r->request_body->bufs = bufs;
        r->headers_in.content_length_n = len;
        r->headers_in.chunked = 0;
    }
    return NGX_OK;
}

ngx_int_t ngx_byok_enter_location(ngx_http_request_t *r, std::string_view name) {
    auto *cscf = static_cast<ngx_http_core_srv_conf_t *>(
        ngx_http_get_module_srv_conf(r, ngx_http_core_module));
    for (ngx_http_core_loc_conf_t **clcf = cscf->named_locations; clcf && *clcf; clcf++) {
        if (sv((*clcf)->name) != name) continue;
        // What ngx_http_named_location sets, minus clearing r->ctx and
        // restarting at the rewrite phase.
        r->internal = 1;
        r->content_handler = nullptr;
        r->uri_changed = 0;
        r->loc_conf = (*clcf)->loc_conf;
        ngx_http_update_location_config(r);
        return NGX_DECLINED;
    }
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  BYOK_LOG "no location \"%*s\" in this server: include byok_gateway.conf",
                  name.size(), name.data());
    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}

namespace {

// A key test's header list in the shape install_headers reads.
struct HeaderList {
    const std::vector<byok::Header> &v;
    template <class F>
    void each(F f) const {
        for (const auto &h : v) f(byok::HeaderRef{h.name, {}, h.value, h.default_only});
    }
};

// The one installer behind both entry points: `add.each(f)` calls
// f(HeaderRef) for every header to add.
template <class Headers>
ngx_int_t install_headers(ngx_http_request_t *r, ByokUpstream *up, const Headers &add,
                          bool keep_client) {
    if (!up->have_client_headers) {
        up->client_headers = r->headers_in.headers;
        up->have_client_headers = true;
    }
    // A later attempt replaces the whole list, built again from the client's
    // headers: the earlier attempt's auth value is referenced by nothing now.
    up->wipe_secrets();
    // One list part of the size needed (issue 18: the request pool is tight).
    ngx_uint_t n = 0;
    if (keep_client) {
        for (const ngx_list_part_t *part = &up->client_headers.part; part; part = part->next)
            n += part->nelts;
    }
    add.each([&](const byok::HeaderRef &) { n++; });
    ngx_list_t list;
    if (ngx_list_init(&list, r->pool, ngx_max(n, 1), sizeof(ngx_table_elt_t)) != NGX_OK)
        return NGX_ERROR;

    auto push = [&](const ngx_table_elt_t &src) -> bool {
        auto *h = static_cast<ngx_table_elt_t *>(ngx_list_push(&list));
        if (h == nullptr) return false;
        *h = src;
        return true;
    };
    // A default header the client sent itself is kept as the client's.
    auto client_has = [&](std::string_view name) {
        bool seen = false;
        ngx_byok_each_header(up->client_headers, [&](const ngx_table_elt_t &h) {
            seen = seen || ngx_byok_header_is(h, name);
            return !seen;
        });
        return seen;
    };
    if (keep_client) {
        bool ok = ngx_byok_each_header(up->client_headers, [&](const ngx_table_elt_t &h) {
            if (is_client_secret_header(h)) return true;
            bool ours = false;
            add.each([&](const byok::HeaderRef &a) {
                ours = ours || (!a.default_only && ngx_byok_header_is(h, a.name));  // ours wins
            });
            return ours || push(h);
        });
        if (!ok) return NGX_ERROR;
    }
    bool ok = true;
    add.each([&](const byok::HeaderRef &a) {
        if (!ok || (keep_client && a.default_only && client_has(a.name))) return;
        // The value is prefix + value, written once into the pool (issue 18).
        ngx_table_elt_t *h = ngx_byok_push_header(r->pool, &list, a.name, a.value, a.prefix);
        if (h == nullptr) {
            ok = false;
            return;
        }
        // Only the auth header holds the key; the fixed defaults are catalog
        // text (a key test's own headers are never default_only: all wiped).
        if (!a.default_only) ok = up->wipe_on_exit(h->value.data, h->value.len);
    });
    if (!ok) return NGX_ERROR;
    r->headers_in.headers = list;
    r->headers_in.authorization = nullptr;
    return NGX_OK;
}

}  // namespace

ngx_int_t ngx_byok_install_headers(ngx_http_request_t *r, ByokUpstream *up,
                                   const byok::UpstreamHeaders &add, bool keep_client) {
    return install_headers(r, up, add, keep_client);
}

ngx_int_t ngx_byok_install_headers(ngx_http_request_t *r, ByokUpstream *up,
                                   const std::vector<byok::Header> &add, bool keep_client) {
    return install_headers(r, up, HeaderList{add}, keep_client);
}
