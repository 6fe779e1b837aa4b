// Responses the module sends itself: one body writer shared by /metrics,
// /healthz and the JSON error pages, and `byok_error;`, the content handler
// of the internal location that error_page sends nginx's own errors to.
#include "ngx_byok_module/ngx_byok.h"

#include "lib/util.h"

ngx_int_t ngx_byok_send_body(ngx_http_request_t *r, ngx_uint_t status, const char *content_type,
                             const std::string &out) {
    r->headers_out.status = status;
    r->headers_out.content_type.data = (u_char *)content_type;
    r->headers_out.content_type.len = ngx_strlen(content_type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_length_n = out.size();
    ngx_int_t rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) return rc;
    ngx_buf_t *b = ngx_create_temp_buf(r->pool, out.size());
    if (b == nullptr) return NGX_ERROR;
    b->last = ngx_cpymem(b->pos, out.data(), out.size());
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;
    ngx_chain_t cl = {b, nullptr};
    return ngx_http_output_filter(r, &cl);
}

namespace {

// error_page without "=" keeps the status nginx produced in r->err_status.
// nginx's private 49x codes (request header too large, certificate
// problems) go out as 400, as nginx's own page would.
ngx_int_t error_handler(ngx_http_request_t *r) {
    // nginx discards the request body only when no error_page applies; an
    // error page's handler must do it, or the unread body would be parsed as
    // the next request on a keep-alive connection.
    if (ngx_http_discard_request_body(r) != NGX_OK) r->keepalive = 0;
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
