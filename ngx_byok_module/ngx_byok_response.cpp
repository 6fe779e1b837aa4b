// Responses the module sends itself: the one body writer shared by the
// gateway, the admin API, /metrics, /healthz, the console and the JSON error pages, the
// one header-element builder, and `byok_error;`, the content handler
// of the internal location that error_page sends nginx's own errors to.
#include "ngx_byok_module/ngx_byok.h"

#include "lib/util.h"

ngx_table_elt_t *ngx_byok_push_header(ngx_pool_t *pool, ngx_list_t *list, std::string_view name,
                                      std::string_view value, std::string_view value_prefix) {
    auto *h = static_cast<ngx_table_elt_t *>(ngx_list_push(list));
    if (h == nullptr) return nullptr;
    ngx_memzero(h, sizeof(*h));
    size_t value_len = value_prefix.size() + value.size();
    auto *p = static_cast<u_char *>(ngx_pnalloc(pool, 2 * name.size() + value_len + 2));
    if (p == nullptr) {
        h->hash = 0;  // an element nobody reads
        return nullptr;
    }
    h->hash = 1;
    h->key = {name.size(), p};
    p = ngx_cpymem(p, name.data(), name.size());
    *p++ = '\0';
    h->value = {value_len, p};
    p = ngx_cpymem(p, value_prefix.data(), value_prefix.size());
    p = ngx_cpymem(p, value.data(), value.size());
    *p++ = '\0';
    h->lowcase_key = p;
    ngx_strlow(h->lowcase_key, h->key.data, h->key.len);
    return h;
}

ngx_table_elt_t *ngx_byok_push_header_ref(ngx_list_t *list, std::string_view lowcase_name,
                                          std::string_view value) {
    auto *h = static_cast<ngx_table_elt_t *>(ngx_list_push(list));
    if (h == nullptr) return nullptr;
    ngx_memzero(h, sizeof(*h));
    h->hash = 1;
    h->key = {lowcase_name.size(), (u_char *)lowcase_name.data()};
    h->lowcase_key = h->key.data;
    h->value = {value.size(), (u_char *)value.data()};
    return h;
}

namespace {

// The writer behind both entry points: a copy of `body` in the pool, or
// (copy == false) a buffer pointing at `body` itself, which must then outlive
// the request. `content_type` must outlive it too (a literal).
ngx_int_t send_body(ngx_http_request_t *r, ngx_uint_t status, std::string_view content_type,
                    std::string_view body, const std::vector<byok::Header> *extra, bool copy) {
    if (r->header_sent) return NGX_ERROR;
    // An unread body would be parsed as the next request on a keep-alive
    // connection.
    if (ngx_http_discard_request_body(r) != NGX_OK) r->keepalive = 0;
    r->headers_out.status = status;
    r->headers_out.content_type.data = (u_char *)content_type.data();
    r->headers_out.content_type.len = content_type.size();
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_length_n = body.size();
    if (extra) {
        for (const auto &h : *extra) {
            if (ngx_byok_push_header(r->pool, &r->headers_out.headers, h.name, h.value) == nullptr)
                return NGX_ERROR;
        }
    }
    ngx_int_t rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only || body.empty()) return rc;
    ngx_buf_t *b;
    if (copy) {
        b = ngx_create_temp_buf(r->pool, body.size());
        if (b == nullptr) return NGX_ERROR;
        b->last = ngx_cpymem(b->pos, body.data(), body.size());
    } else {
        b = static_cast<ngx_buf_t *>(ngx_calloc_buf(r->pool));
        if (b == nullptr) return NGX_ERROR;
        b->pos = (u_char *)body.data();
        b->last = b->pos + body.size();
        b->memory = 1;  // read-only: nginx must not write into it
    }
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;
    ngx_chain_t cl = {b, nullptr};
    return ngx_http_output_filter(r, &cl);
}

}  // namespace

ngx_int_t ngx_byok_send_body(ngx_http_request_t *r, ngx_uint_t status, const char *content_type,
                             const std::string &body, const std::vector<byok::Header> *extra) {
    return send_body(r, status, content_type, body, extra, true);
}

ngx_int_t ngx_byok_send_static(ngx_http_request_t *r, ngx_uint_t status,
                               std::string_view content_type, std::string_view body,
                               const std::vector<byok::Header> *extra) {
    return send_body(r, status, content_type, body, extra, false);
}

ngx_int_t ngx_byok_send_error(ngx_http_request_t *r, ngx_uint_t status, std::string_view code,
                              std::string_view message, std::string_view type) {
    try {
        return ngx_byok_send_json(r, status, byok::json_error(code, message, type));
    } catch (const std::exception &) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}

namespace {

// error_page without "=" keeps the status nginx produced in r->err_status.
// nginx's private 49x codes (request header too large, certificate
// problems) go out as 400, as nginx's own page would.
ngx_int_t error_handler(ngx_http_request_t *r) {
    // nginx discards the request body only when no error_page applies; an
    // error page's handler must do it (ngx_byok_send_body does).
    try {
        ngx_uint_t status = r->err_status ? r->err_status : r->headers_out.status;
        if (status < NGX_HTTP_BAD_REQUEST) status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        std::string body = byok::status_error_json(static_cast<int>(status));
        if (status >= NGX_HTTP_REQUEST_HEADER_TOO_LARGE && status <= NGX_HTTP_TO_HTTPS)
            status = NGX_HTTP_BAD_REQUEST;
        r->err_status = status;
        // The original request's headers (e.g. an upstream's) do not belong
        // to this answer; nginx clears the length, we clear the rest we set.
        ngx_http_clear_accept_ranges(r);
        ngx_http_clear_last_modified(r);
        ngx_http_clear_etag(r);
        return ngx_byok_send_body(r, status, "application/json", body);
    } catch (const std::exception &) {
        return NGX_ERROR;
    }
}

}  // namespace

char *ngx_byok_error_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(
        ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    clcf->handler = error_handler;
    return NGX_CONF_OK;
}
