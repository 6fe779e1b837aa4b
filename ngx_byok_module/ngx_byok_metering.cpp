// Usage metering glue: the response body filter that feeds the usage
// scanner as bytes pass (never holding the response; with an injected
// include_usage it also drops the one usage-only SSE event, holding at most
// the current event), the log-phase accounting (counters, usage event,
// metrics), $byok_input_tokens / $byok_output_tokens / $byok_cost_usd, and
// the include_usage hook of the request body. lib/metering.h decides; this
// file only carries it out.
#include "ngx_byok_module/ngx_byok.h"

#include "lib/util.h"

namespace {

ngx_http_output_header_filter_pt g_next_header_filter;
ngx_http_output_body_filter_pt g_next_body_filter;

ngx_byok_main_conf_t *main_conf(ngx_http_request_t *r) {
    return static_cast<ngx_byok_main_conf_t *>(
        ngx_http_get_module_main_conf(r, ngx_http_byok_module));
}

// A proxied gateway request (not refused before upstream).
ByokGatewayCtx *metered_ctx(ngx_http_request_t *r) {
    if (r != r->main) return nullptr;
    ByokGatewayCtx *ctx = ngx_byok_gateway_ctx(r, false);
    if (ctx == nullptr || !ctx->decided) return nullptr;
    const byok::RouteDecision &d = ctx->decision;
    if (d.route == byok::Route::Denied || d.provider == nullptr || d.target == nullptr ||
        ctx->snap.project.empty())
        return nullptr;
    return ctx;
}

// The model the provider was asked for; for native calls, whose body the
// gateway does not read, the model the response names.
std::string_view sent_model(const ByokGatewayCtx *ctx) {
    const byok::RouteDecision &d = ctx->decision;
    if (!d.model.empty()) return d.model;
    if (!ctx->input.model.empty()) return ctx->input.model;
    return ctx->meter.scanner.model();
}

// Usage and cost once the response is complete (log phase, variables).
const ByokMeter &finish(ByokGatewayCtx *ctx) {
    ByokMeter &m = ctx->meter;
    if (!m.finished) {
        m.usage = m.scanner.result();
        // The provider that served (and charged) prices the call.
        m.cost_micro = byok::cost_micro_usd(ctx->decision.target->price(sent_model(ctx)), m.usage);
        m.finished = true;
    }
    return m;
}

bool is_event_stream(const ngx_http_request_t *r) {
    std::string_view ct = sv(r->headers_out.content_type);
    return ct.size() >= 17 &&
           ngx_strncasecmp((u_char *)ct.data(), (u_char *)"text/event-stream", 17) == 0;
}

ngx_int_t header_filter(ngx_http_request_t *r) {
    ByokGatewayCtx *ctx = metered_ctx(r);
    if (ctx != nullptr) {
        ByokMeter &m = ctx->meter;
        m.active = true;
        r->filter_need_in_memory = 1;  // the scanner reads bytes, not file ranges
        if (m.inject && r->headers_out.status == NGX_HTTP_OK && is_event_stream(r)) {
            try {
                m.dropper.emplace();
            } catch (const std::exception &) {
                return NGX_ERROR;
            }
            ngx_http_clear_content_length(r);
            ngx_http_clear_accept_ranges(r);
        }
    }
    return g_next_header_filter(r);
}

// Output of the dropper for one input buffer, in a reusable buffer.
ngx_chain_t *out_link(ngx_http_request_t *r, ByokMeter &m, const std::string &bytes,
                      const ngx_buf_t *in) {
    ngx_chain_t *cl = ngx_chain_get_free_buf(r->pool, &m.free);
    if (cl == nullptr) return nullptr;
    ngx_buf_t *b = cl->buf;
    size_t cap = b->start ? static_cast<size_t>(b->end - b->start) : 0;
    if (cap < bytes.size()) {
        size_t size = ngx_max(bytes.size(), (size_t)4096);
        b->start = static_cast<u_char *>(ngx_palloc(r->pool, size));
        if (b->start == nullptr) return nullptr;
        b->end = b->start + size;
    }
    b->pos = b->start;
    b->last = ngx_cpymem(b->pos, bytes.data(), bytes.size());
    b->temporary = bytes.empty() ? 0 : 1;
    b->memory = 0;
    b->tag = (ngx_buf_tag_t)&ngx_http_byok_module;
    b->flush = in->flush;
    b->last_buf = in->last_buf;
    b->last_in_chain = in->last_in_chain;
    b->sync = bytes.empty() && !in->flush && !in->last_buf ? 1 : 0;
    return cl;
}

ngx_int_t body_filter(ngx_http_request_t *r, ngx_chain_t *in) {
    if (r != r->main) return g_next_body_filter(r, in);
    ByokGatewayCtx *ctx = ngx_byok_gateway_ctx(r, false);
    if (ctx == nullptr || !ctx->meter.active) return g_next_body_filter(r, in);
    ByokMeter &m = ctx->meter;
    try {
        for (ngx_chain_t *cl = in; cl; cl = cl->next) {
            ngx_buf_t *b = cl->buf;
            if (ngx_buf_in_memory(b) && b->last > b->pos)
                m.scanner.feed({(const char *)b->pos, (size_t)(b->last - b->pos)});
        }
        if (!m.dropper) return g_next_body_filter(r, in);

        ngx_chain_t *out = nullptr, **ll = &out;
        std::string bytes;
        for (ngx_chain_t *cl = in; cl; cl = cl->next) {
            ngx_buf_t *b = cl->buf;
            bytes.clear();
            if (ngx_buf_in_memory(b)) {
                m.dropper->feed({(const char *)b->pos, (size_t)(b->last - b->pos)}, &bytes);
                b->pos = b->last;  // consumed: the upstream may reuse it
            }
            if (b->last_buf || b->last_in_chain) m.dropper->finish(&bytes);
            if (bytes.empty() && !b->flush && !b->last_buf && !b->last_in_chain) continue;
            ngx_chain_t *o = out_link(r, m, bytes, b);
            if (o == nullptr) return NGX_ERROR;
            *ll = o;
            ll = &o->next;
        }
        *ll = nullptr;
        ngx_int_t rc = g_next_body_filter(r, out);
        ngx_chain_update_chains(r->pool, &m.free, &m.busy, &out,
                                (ngx_buf_tag_t)&ngx_http_byok_module);
        return rc;
    } catch (const std::exception &) {
        return NGX_ERROR;
    }
}

std::string request_id(ngx_http_request_t *r) {
    ngx_http_variable_value_t *v = ngx_http_get_indexed_variable(r, main_conf(r)->request_id_index);
    if (v == nullptr || v->not_found) return "";
    return std::string((const char *)v->data, v->len);
}

ngx_int_t log_handler(ngx_http_request_t *r) {
    ByokGatewayCtx *ctx = metered_ctx(r);
    if (ctx == nullptr) return NGX_OK;
    try {
        ByokMain *main = main_conf(r)->m;
        const byok::RouteDecision &d = ctx->decision;
        const ByokMeter &m = finish(ctx);
        byok::MeterRecord rec;
        rec.request_id = request_id(r);
        rec.project = ctx->snap.project;
        rec.provider = d.provider->id;
        rec.model = std::string(sent_model(ctx));
        rec.route = std::string(byok::route_name(d.route));
        rec.key_id = ctx->snap.key_id;
        if (d.route == byok::Route::Fallback) rec.fallback_reason = d.reason;
        rec.day = byok::yyyymmdd_utc(ngx_time());
        ngx_time_t *tp = ngx_timeofday();
        rec.at_ms = static_cast<int64_t>(tp->sec) * 1000 + tp->msec;
        int64_t started = static_cast<int64_t>(r->start_sec) * 1000 + r->start_msec;
        rec.latency_ms = rec.at_ms > started ? static_cast<uint64_t>(rec.at_ms - started) : 0;
        rec.status = static_cast<unsigned>(r->headers_out.status);
        rec.usage = m.usage;
        rec.cost_micro = m.cost_micro;
        ngx_byok_meter_add(byok::meter_increments(main->admin.layout, rec));
        ngx_byok_usage_event(byok::usage_event_fields(rec));
        ngx_byok_count_usage(main->catalog, d.provider, d.route, m.usage, m.cost_micro);
    } catch (const std::exception &) {
    }
    return NGX_OK;
}

enum class Var { InputTokens, OutputTokens, CostUsd };

ngx_int_t variable(ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data) {
    v->not_found = 1;
    ByokGatewayCtx *ctx = metered_ctx(r);
    if (ctx == nullptr || !ctx->meter.active) return NGX_OK;
    std::string val;
    try {
        const ByokMeter &m = finish(ctx);
        if (!m.usage.known) return NGX_OK;
        switch (static_cast<Var>(data)) {
            case Var::InputTokens:
                val = std::to_string(m.usage.input);
                break;
            case Var::OutputTokens:
                val = std::to_string(m.usage.output);
                break;
            case Var::CostUsd:
                val = byok::micro_usd_string(m.cost_micro);
                break;
        }
    } catch (const std::exception &) {
        return NGX_ERROR;
    }
    return ngx_byok_variable_value(r, v, val);
}

struct VarDef {
    ngx_str_t name;
    Var which;
};
VarDef g_vars[] = {
    {ngx_string("byok_input_tokens"), Var::InputTokens},
    {ngx_string("byok_output_tokens"), Var::OutputTokens},
    {ngx_string("byok_cost_usd"), Var::CostUsd},
};

}  // namespace

// The body as one view when it is small and in memory: nginx's own buffer
// when there is one, else a bounded copy into the request pool.
static bool small_body_view(ngx_http_request_t *r, ngx_chain_t *bufs, off_t len,
                            std::string_view *out) {
    static const off_t kMaxInjectBody = 64 * 1024;
    if (len <= 0 || len > kMaxInjectBody) return false;
    for (ngx_chain_t *cl = bufs; cl; cl = cl->next)
        if (cl->buf->in_file || !ngx_buf_in_memory(cl->buf)) return false;
    if (bufs->next == nullptr) {
        *out = {(const char *)bufs->buf->pos, (size_t)(bufs->buf->last - bufs->buf->pos)};
        return true;
    }
    u_char *copy = static_cast<u_char *>(ngx_pnalloc(r->pool, (size_t)len));
    if (copy == nullptr) return false;
    u_char *p = copy;
    for (ngx_chain_t *cl = bufs; cl; cl = cl->next) {
        size_t n = cl->buf->last - cl->buf->pos;
        if (p + n > copy + len) return false;
        p = ngx_cpymem(p, cl->buf->pos, n);
    }
    *out = {(const char *)copy, (size_t)(p - copy)};
    return true;
}

ngx_int_t ngx_byok_meter_prepare_body(ngx_http_request_t *r, ByokGatewayCtx *ctx,
                                      ngx_chain_t **bufs, off_t *len) {
    ctx->meter.inject = false;
    // Only JSON bodies are edited: an upload or opaque body goes untouched.
    if (!main_conf(r)->stream_usage || ctx->req.body_kind != byok::BodyKind::Json ||
        !byok::include_usage_applies(ctx->req.unified, ctx->req.rest))
        return NGX_OK;
    std::string_view body;
    if (!small_body_view(r, *bufs, *len, &body)) return NGX_OK;
    std::optional<byok::BodyInsert> edit;
    try {
        edit = byok::plan_include_usage(ctx->req.unified, ctx->req.rest, body);
    } catch (const std::exception &) {
        return NGX_ERROR;
    }
    if (!edit || edit->offset == 0 || edit->offset > body.size()) return NGX_OK;
    // Three buffers: the body up to the insert, the insert, the rest.
    std::string_view parts[3] = {body.substr(0, edit->offset), edit->bytes,
                                 body.substr(edit->offset)};
    u_char *copy = static_cast<u_char *>(ngx_pnalloc(r->pool, edit->bytes.size()));
    if (copy == nullptr) return NGX_ERROR;
    ngx_memcpy(copy, edit->bytes.data(), edit->bytes.size());
    parts[1] = {(const char *)copy, edit->bytes.size()};
    ngx_chain_t *head = nullptr, **ll = &head;
    for (size_t i = 0; i < 3; i++) {
        if (parts[i].empty()) continue;
        auto *b = static_cast<ngx_buf_t *>(ngx_pcalloc(r->pool, sizeof(ngx_buf_t)));
        ngx_chain_t *cl = ngx_alloc_chain_link(r->pool);
        if (b == nullptr || cl == nullptr) return NGX_ERROR;
        b->pos = b->start = (u_char *)parts[i].data();
        b->last = b->end = b->pos + parts[i].size();
        b->memory = 1;
        cl->buf = b;
        *ll = cl;
        ll = &cl->next;
    }
    *ll = nullptr;
    for (ngx_chain_t *cl = head; cl; cl = cl->next) cl->buf->last_buf = cl->next == nullptr;
    *bufs = head;
    *len = (off_t)(body.size() + edit->bytes.size());
    ctx->meter.inject = true;
    return NGX_OK;
}

ngx_int_t ngx_byok_metering_init(ngx_conf_t *cf) {
    if (ngx_byok_add_variables(cf, g_vars, variable) != NGX_OK) return NGX_ERROR;
    if (ngx_byok_add_phase_handler(cf, NGX_HTTP_LOG_PHASE, log_handler) != NGX_OK) return NGX_ERROR;
    g_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = header_filter;
    g_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = body_filter;
    return NGX_OK;
}
