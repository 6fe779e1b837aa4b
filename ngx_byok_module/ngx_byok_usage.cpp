// Usage counters (key and field spelled by lib/usage.h;
// and the token/cost counters of lib/metering.h) are summed in worker memory and flushed to Redis
// once a second, so a request never waits on them and Redis sees one HINCRBY per project, provider
// and route per second instead of one per request. Counts survive a Redis outage in memory
// (bounded) and are written when it returns. Usage events wait in the same way (bounded) and go out
// as pipelined XADDs with MAXLEN ~, so the stream stays capped.
#include "ngx_byok_module/ngx_byok.h"

#include <map>

#include "lib/usage.h"
#include "lib/util.h"

namespace {

constexpr ngx_msec_t kFlushEvery = 1000;
constexpr size_t kMaxPending = 100000;
// The day keys' lifetime: the window a project's deletion names (lib/layout.h).
const std::string kRetention = std::to_string(byok::kUsageRetentionDays * 86400);

std::map<std::pair<std::string, std::string>, long long> g_pending;  // (key, field) -> n
// Request counts per (project, provider, route, day), keyed by those fields
// joined with '\0' (issue 18: a request adds to its row without building
// the counter's key and field; the rows become HINCRBYs at the flush).
std::map<std::string, long long, std::less<>> g_usage;
std::string g_usage_key;  // reused to build the lookup key
constexpr size_t kMaxEvents = 10000;
// Usage events in batches (lib/metering.h): (events, their RESP arguments).
std::vector<std::pair<size_t, std::string>> g_batches;
size_t g_event_count = 0;
// Token and cost sums per (project, provider, route, model, key id, day),
// keyed by those fields joined with '\0' (issue 18: a request adds to its
// row without allocating; the row becomes HINCRBYs at the flush).
std::map<std::string, byok::MeterTotals, std::less<>> g_meter;
std::string g_meter_key;  // reused to build the lookup key
std::string g_stream;     // the usage event stream's key (fixed per configuration)
ngx_event_t g_flush_ev;
bool g_active = false;

void flush_events() {
    if (g_event_count == 0 || !ngx_byok_redis_available()) return;
    for (auto &[events, args] : g_batches) {
        std::string cmd = byok::usage_events_batch_head(g_stream, events);
        cmd.append(args);
        ngx_byok_redis_send_raw_noreply(cmd, 1);
    }
    g_batches.clear();
    g_event_count = 0;
}

// The summed rows become counter increments (lib/metering.h decides them).
void expand_meter() {
    auto *mcf = ngx_byok_main_conf();
    if (mcf == nullptr) return;
    for (const auto &[key, totals] : g_meter) {
        byok::MeterRecord rec;
        std::string *parts[] = {&rec.project, &rec.provider, &rec.route,
                                &rec.model,   &rec.key_id,   &rec.day};
        size_t at = 0;
        for (std::string *p : parts) {
            size_t end = key.find('\0', at);
            if (end == std::string::npos) end = key.size();
            p->assign(key, at, end - at);
            at = end + 1;
        }
        for (const auto &i : byok::meter_increments(mcf->m->admin.layout, rec, totals)) {
            if (g_pending.size() >= kMaxPending) break;
            g_pending[{i.key, i.field}] += i.by;
        }
    }
    g_meter.clear();
}

// The '\0'-separated parts of a row key.
template <size_t N>
void split_row(const std::string &key, std::string_view (&parts)[N]) {
    size_t at = 0;
    for (auto &p : parts) {
        size_t end = std::min(key.find('\0', at), key.size());
        p = std::string_view(key).substr(at, end - at);
        at = end + 1;
    }
}

void expand_usage() {
    auto *mcf = ngx_byok_main_conf();
    if (mcf == nullptr) return;
    for (const auto &[key, n] : g_usage) {
        std::string_view parts[4];  // project, provider, route, day
        split_row(key, parts);
        if (parts[2].size() != 1 || g_pending.size() >= kMaxPending) continue;
        auto route = static_cast<byok::Route>(parts[2][0] - '0');
        g_pending[{byok::usage_key(mcf->m->admin.layout, parts[0], parts[3]),
                   byok::usage_field(parts[1], route)}] += n;
    }
    g_usage.clear();
}

void flush() {
    flush_events();
    ngx_byok_last_used_flush();  // issue 14
    if (!ngx_byok_redis_available()) return;
    expand_usage();
    expand_meter();
    if (g_pending.empty()) return;
    std::string last_key;
    for (const auto &[kf, n] : g_pending) {
        ngx_byok_redis_send_noreply({"HINCRBY", kf.first, kf.second, std::to_string(n)});
        if (kf.first != last_key) {
            ngx_byok_redis_send_noreply({"EXPIRE", kf.first, kRetention});
            last_key = kf.first;
        }
    }
    g_pending.clear();
}

void flush_handler(ngx_event_t *ev) {
    try {
        flush();
        ngx_byok_limits_sync();  // issue 13: project-limit counters, same interval
    } catch (const std::exception &) {
    }
    if (g_active && !ngx_exiting) ngx_add_timer(&g_flush_ev, kFlushEvery);
}

}  // namespace

const std::string &ngx_byok_today() {
    static time_t at = -1;
    static std::string day;
    time_t now = ngx_time();
    if (now != at) {  // strftime once a second, not per request (issue 18)
        day = byok::yyyymmdd_utc(now);
        at = now;
    }
    return day;
}

void ngx_byok_usage_add(std::string_view pid, std::string_view provider, byok::Route route) {
    g_usage_key.clear();
    for (std::string_view part : {pid, provider}) {
        if (part.find('\0') != std::string_view::npos) return;  // never from a valid request
        g_usage_key.append(part).push_back('\0');
    }
    g_usage_key.push_back(static_cast<char>('0' + static_cast<int>(route)));
    g_usage_key.push_back('\0');
    g_usage_key.append(ngx_byok_today());
    auto it = g_usage.find(std::string_view(g_usage_key));
    if (it == g_usage.end()) {
        if (g_usage.size() >= kMaxPending) return;
        it = g_usage.emplace(g_usage_key, 0).first;
    }
    it->second++;
}

void ngx_byok_meter_record(const byok::Layout &layout, const byok::MeterRecord &rec) {
    g_meter_key.clear();
    for (std::string_view part :
         {std::string_view(rec.project), std::string_view(rec.provider),
          std::string_view(rec.route), std::string_view(rec.model).substr(0, byok::kMaxModel),
          std::string_view(rec.key_id), std::string_view(rec.day)}) {
        if (part.find('\0') != std::string_view::npos) return;  // never from a valid request
        g_meter_key.append(part).push_back('\0');
    }
    g_meter_key.pop_back();
    auto it = g_meter.find(std::string_view(g_meter_key));
    if (it == g_meter.end()) {
        if (g_meter.size() >= kMaxPending) return;
        it = g_meter.emplace(g_meter_key, byok::MeterTotals{}).first;
    }
    byok::add_totals(it->second, byok::meter_totals(rec));
    if (g_event_count < kMaxEvents) {
        if (g_stream.empty()) g_stream = layout.usage_events();
        if (g_batches.empty() || g_batches.back().first == byok::kUsageEventsPerBatch)
            g_batches.emplace_back(0, std::string());
        byok::append_usage_event_args(g_batches.back().second, rec);
        g_batches.back().first++;
        g_event_count++;
    }
}

void ngx_byok_usage_init_process(ngx_cycle_t *cycle) {
    g_stream.clear();
    g_flush_ev.handler = flush_handler;
    g_flush_ev.log = cycle->log;
    g_flush_ev.data = nullptr;
    g_flush_ev.cancelable = 1;
    g_active = true;
    ngx_add_timer(&g_flush_ev, kFlushEvery);
    ngx_byok_limits_init_process();  // issue 13: project-limit counters
}

void ngx_byok_usage_exit_process() {
    g_active = false;
    if (g_flush_ev.timer_set) ngx_del_timer(&g_flush_ev);
}
