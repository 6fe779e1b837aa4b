// Usage metering glue: the response body filter that feeds the usage
// scanner as bytes pass (never holding the response; with an injected
// include_usage it also drops the one usage-only SSE event, holding at most
// the current event), the log-phase accounting (counters, usage event,
// metrics), $byok_input_tokens / $byok_output_tokens / $byok_cost_usd, and
// the include_usage hook of the request body. lib/metering.h decides; this
// file only carries it out.
#include "ngx_byok_module/ngx_byok_ctx.h"

#include "lib/util.h"

#include <openssl/rand.h>

#include <cstring>

namespace {

ngx_http_output_header_filter_pt g_next_header_filter;
ngx_http_output_body_filter_pt g_next_body_filter;

ngx_byok_main_conf_t *main_conf(ngx_http_request_t *r) {
    return static_cast<ngx_byok_main_conf_t *>(
        ngx_http_get_module_main_conf(r, ngx_http_byok_module));
}

// A proxied gateway request (not refused before upstream).
bool metered(const ngx_http_request_t *r, const ByokGatewayCtx *ctx) {
    if (r != r->main || ctx == nullptr || !ctx->decided) return false;
    const byok::RouteDecision &d = ctx->decision;
    return d.route != byok::Route::Denied && d.provider != nullptr && d.target != nullptr &&
           !ctx->snap->project.empty();
}

ByokGatewayCtx *metered_ctx(ngx_http_request_t *r) {
    if (r != r->main) return nullptr;
    ByokGatewayCtx *ctx = ngx_byok_gateway_ctx(r, false);
    return metered(r, ctx) ? ctx : nullptr;
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

// splitmix64's finaliser: a bijection, so distinct counters give distinct ids.
uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// issue 18: nginx makes $request_id from RAND_bytes, whose fork check costs
// a getpid() syscall and ~6k instructions per request. When nothing has
// asked for $request_id yet (an access_log or proxy_set_header that uses it
// has evaluated it before the log phase), the usage event mints one from a
// per-worker random seed and a counter — 32 hex digits, unique per worker
// — and stores it as $request_id, so anything reading it later agrees.
void mint_request_id(ngx_http_request_t *r, ngx_int_t index) {
    static uint64_t seed[2], counter;
    static ngx_pid_t seeded_in = 0;
    if (seeded_in != ngx_pid) {
        if (RAND_bytes(reinterpret_cast<unsigned char *>(seed), sizeof(seed)) != 1) return;
        seeded_in = ngx_pid;
    }
    ngx_http_variable_value_t *v = &r->variables[index];
    if (v->valid || v->not_found) return;  // evaluated already
    u_char *p = static_cast<u_char *>(ngx_pnalloc(r->pool, 32));
    if (p == nullptr) return;
    counter++;
    // Not ngx_sprintf, whose format parsing cost ~1k instructions here (issue 18).
    byok::hex_id(mix64(counter ^ seed[0]), mix64(counter + seed[1]), reinterpret_cast<char *>(p));
    v->data = p;
    v->len = 32;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
}

std::string_view request_id(ngx_http_request_t *r, ngx_int_t index) {
    mint_request_id(r, index);
    ngx_http_variable_value_t *v = ngx_http_get_indexed_variable(r, index);
    if (v == nullptr || v->not_found) return "";
    return {(const char *)v->data, v->len};
}

// The log phase of a metered request (called by ngx_byok_log_handler, which
// has the ctx in hand: one lookup for the phase): counters, the usage event,
// metrics and project limits. The record is views of what the request and
// the catalog hold (issue 18: nothing copied per request). Named
// log_handler and kept out of line: bench/probe_cg.py counts the metering
// glue by its entry points' names.
[[gnu::noinline]] void log_handler(ngx_http_request_t *r, ByokGatewayCtx *ctx) {
    if (!metered(r, ctx)) return;
    try {
        ngx_byok_main_conf_t *mcf = main_conf(r);
        const byok::RouteDecision &d = ctx->decision;
        const ByokMeter &m = finish(ctx);
        byok::MeterRecord rec;
        rec.request_id = request_id(r, mcf->request_id_index);
        rec.project = ctx->snap->project;
        rec.provider = d.provider->id;
        rec.model = sent_model(ctx);
        rec.route = byok::route_name(d.route);
        rec.key_id = ctx->snap->key_id;
        if (d.route == byok::Route::Fallback) rec.fallback_reason = d.reason;
        rec.day = ngx_byok_today();
        ngx_time_t *tp = ngx_timeofday();
        rec.at_ms = static_cast<int64_t>(tp->sec) * 1000 + tp->msec;
        int64_t started = static_cast<int64_t>(r->start_sec) * 1000 + r->start_msec;
        rec.latency_ms = rec.at_ms > started ? static_cast<uint64_t>(rec.at_ms - started) : 0;
        rec.status = static_cast<unsigned>(r->headers_out.status);
        rec.usage = m.usage;
        rec.cost_micro = m.cost_micro;
        ngx_byok_meter_record(mcf->m->admin.layout, rec);
        ngx_byok_count_usage(mcf->m->catalog, d.provider, d.route, m.usage, m.cost_micro);
        ngx_byok_limits_charge(ctx, m.usage, m.cost_micro);  // issue 13: project limits
    } catch (const std::exception &) {
    }
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

// The body chain with `insert` at `offset`, without copying the body: the
// links before it are reused, the buffer holding the offset is sliced in
// two around one small buffer, the rest is reused. Slices get start = pos
// (nginx's upstream retry rewinds to start). The original links are never
// changed: a fallback prepares the body again from them. false = leave the
// body alone (the offset is in a file buffer).
static bool insert_in_chain(ngx_http_request_t *r, ngx_chain_t **bufs, size_t offset,
                            std::string_view insert, bool *failed) {
    ngx_chain_t *head = nullptr, **ll = &head;
    auto link = [&](ngx_buf_t *b) {
        ngx_chain_t *cl = ngx_alloc_chain_link(r->pool);
        if (cl == nullptr) return false;
        cl->buf = b;
        cl->next = nullptr;
        *ll = cl;
        ll = &cl->next;
        return true;
    };
    auto slice = [&](const ngx_buf_t *src, u_char *from, u_char *to, bool last) -> ngx_buf_t * {
        auto *b = static_cast<ngx_buf_t *>(ngx_palloc(r->pool, sizeof(ngx_buf_t)));
        if (b == nullptr) return nullptr;
        *b = *src;
        b->start = b->pos = from;
        b->end = b->last = to;
        b->in_file = 0;
        if (!last) b->last_buf = b->last_in_chain = 0;
        return b;
    };
    *failed = true;
    size_t at = 0;
    for (ngx_chain_t *cl = *bufs; cl; cl = cl->next) {
        ngx_buf_t *b = cl->buf;
        size_t size = (size_t)ngx_buf_size(b);
        if (at + size <= offset) {  // wholly before the insert
            if (!link(b)) return false;
            at += size;
            continue;
        }
        if (!ngx_buf_in_memory(b) || b->in_file) {
            *failed = false;
            return false;
        }
        u_char *cut = b->pos + (offset - at);
        ngx_buf_t *ins = static_cast<ngx_buf_t *>(ngx_calloc_buf(r->pool));
        u_char *bytes = static_cast<u_char *>(ngx_pnalloc(r->pool, insert.size()));
        if (ins == nullptr || bytes == nullptr) return false;
        ngx_memcpy(bytes, insert.data(), insert.size());
        ins->start = ins->pos = bytes;
        ins->end = ins->last = bytes + insert.size();
        ins->memory = 1;
        ngx_buf_t *before = cut > b->pos ? slice(b, b->pos, cut, false) : nullptr;
        ngx_buf_t *after = slice(b, cut, b->last, true);
        if ((cut > b->pos && before == nullptr) || after == nullptr) return false;
        if ((before && !link(before)) || !link(ins) || !link(after)) return false;
        for (cl = cl->next; cl; cl = cl->next)
            if (!link(cl->buf)) return false;
        *bufs = head;
        *failed = false;
        return true;
    }
    *failed = false;
    return false;
}

ngx_int_t ngx_byok_meter_prepare_body(ngx_http_request_t *r, ByokGatewayCtx *ctx,
                                      ngx_chain_t **bufs, off_t *len) {
    ctx->meter.inject = false;
    // Only JSON bodies are edited: an upload or opaque body goes untouched.
    if (!main_conf(r)->stream_usage || ctx->req.body_kind != byok::BodyKind::Json ||
        !byok::include_usage_applies(ctx->req.unified, ctx->req.rest))
        return NGX_OK;
    std::optional<byok::BodyInsert> edit;
    try {
        edit = byok::plan_include_usage(ctx->req.unified, ctx->req.rest, ctx->meter.stream);
    } catch (const std::exception &) {
        return NGX_ERROR;
    }
    if (!edit || edit->offset == 0 || edit->offset >= (size_t)*len) return NGX_OK;
    bool failed = false;
    if (!insert_in_chain(r, bufs, edit->offset, edit->bytes, &failed))
        return failed ? NGX_ERROR : NGX_OK;
    *len += (off_t)edit->bytes.size();
    ctx->meter.inject = true;
    return NGX_OK;
}

ngx_int_t ngx_byok_metering_init(ngx_conf_t *cf) {
    if (ngx_byok_add_variables(cf, g_vars, variable) != NGX_OK) return NGX_ERROR;
    g_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = header_filter;
    g_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = body_filter;
    return NGX_OK;
}

void ngx_byok_meter_log(ngx_http_request_t *r, ByokGatewayCtx *ctx) { log_handler(r, ctx); }
