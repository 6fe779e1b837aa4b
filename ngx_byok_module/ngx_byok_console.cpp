// byok_console: serves the web console's assets, embedded in the module at
// build time (scripts/embed_console.py → byok_console_assets), from memory.
// lib/console decides which asset answers and with which headers; this file
// only puts them on the wire.
#include "lib/console.h"
#include "ngx_byok_module/ngx_byok.h"

// Generated from console/ (build/console/console_assets.cpp).
extern const byok::console::Asset byok_console_assets[];
extern const size_t byok_console_asset_count;

namespace {

constexpr std::string_view kDefaultApi = "/admin/v1/";

// The headers of every console response; built once per process (they are
// static text) so each request only links them in.
const std::vector<byok::Header> &security_headers() {
    static const std::vector<byok::Header> headers = byok::console::security_headers();
    return headers;
}

// `body` must outlive the request (embedded data or configuration memory);
// the shared writer links it in without a copy.
ngx_int_t send(ngx_http_request_t *r, ngx_uint_t status, std::string_view content_type,
               std::string_view cache_control, std::string_view body) {
    if (ngx_byok_push_header(r->pool, &r->headers_out.headers, "Cache-Control", cache_control) ==
        nullptr)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    return ngx_byok_send_static(r, status, content_type, body, &security_headers());
}

ngx_int_t console_handler(ngx_http_request_t *r) {
    constexpr std::string_view kText = "text/plain; charset=utf-8";
    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) {
        if (ngx_byok_push_header(r->pool, &r->headers_out.headers, "Allow", "GET, HEAD") == nullptr)
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        return send(r, NGX_HTTP_NOT_ALLOWED, kText, "no-store", "method not allowed\n");
    }
    auto *lcf =
        static_cast<ngx_byok_loc_conf_t *>(ngx_http_get_module_loc_conf(r, ngx_http_byok_module));
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(
        ngx_http_get_module_loc_conf(r, ngx_http_core_module));
    std::string_view uri(reinterpret_cast<const char *>(r->uri.data), r->uri.len);
    std::string_view prefix(reinterpret_cast<const char *>(clcf->name.data), clcf->name.len);
    // Under a prefix location the asset name is what follows it; otherwise
    // (exact or regex location) the last path segment.
    std::string_view rel = uri.substr(0, prefix.size()) == prefix ? uri.substr(prefix.size())
                                                                  : uri.substr(uri.rfind('/') + 1);
    const byok::console::Asset *a =
        byok::console::find(byok_console_assets, byok_console_asset_count, rel);
    if (a == nullptr) return send(r, NGX_HTTP_NOT_FOUND, kText, "no-store", "not found\n");
    std::string_view body = a->body;
    if (a->path == byok::console::kIndex)
        body = std::string_view(reinterpret_cast<const char *>(lcf->console_index.data),
                                lcf->console_index.len);
    return send(r, NGX_HTTP_OK, a->content_type, byok::console::cache_control(*a), body);
}

}  // namespace

char *ngx_byok_console_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    auto *lcf = static_cast<ngx_byok_loc_conf_t *>(conf);
    if (lcf->console_index.data != nullptr) return const_cast<char *>("is duplicate");
    auto *args = static_cast<ngx_str_t *>(cf->args->elts);
    std::string_view api = kDefaultApi;
    if (cf->args->nelts == 2) {
        std::string_view arg(reinterpret_cast<const char *>(args[1].data), args[1].len);
        if (arg.substr(0, 4) != "api=") {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "byok_console: unknown option \"%V\"",
                               &args[1]);
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        api = arg.substr(4);
    }
    try {
        security_headers();  // built here, where an exception can still be reported
        std::string problem = byok::console::api_problem(api);
        if (!problem.empty()) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "byok_console: %s", problem.c_str());
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        const byok::console::Asset *index = byok::console::find(
            byok_console_assets, byok_console_asset_count, byok::console::kIndex);
        if (index == nullptr) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               BYOK_LOG "byok_console: the module was built without console/");
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        std::string page = byok::console::render_index(index->body, api);
        auto *mem = static_cast<u_char *>(ngx_pnalloc(cf->pool, page.size()));
        if (mem == nullptr) return static_cast<char *>(NGX_CONF_ERROR);
        ngx_memcpy(mem, page.data(), page.size());
        lcf->console_index = ngx_str_t{page.size(), mem};
    } catch (const std::exception &e) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "byok_console: %s", e.what());
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(
        ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    clcf->handler = console_handler;
    return NGX_CONF_OK;
}
