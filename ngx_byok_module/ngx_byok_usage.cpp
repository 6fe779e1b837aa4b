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
constexpr const char *kRetention = "7776000";  // 90 days

std::map<std::pair<std::string, std::string>, long long> g_pending;  // (key, field) -> n
constexpr size_t kMaxEvents = 10000;
std::vector<std::vector<std::string>> g_events;  // usage events (field/value pairs)
ngx_event_t g_flush_ev;
bool g_active = false;

void flush_events() {
    auto *mcf = ngx_byok_main_conf();
    if (g_events.empty() || mcf == nullptr || !ngx_byok_redis_available()) return;
    const std::string stream = mcf->m->admin.layout.usage_events();
    const std::string maxlen = std::to_string(byok::kUsageEventsMaxLen);
    for (auto &fields : g_events) {
        std::vector<std::string> argv{"XADD", stream, "MAXLEN", "~", maxlen, "*"};
        argv.insert(argv.end(), std::make_move_iterator(fields.begin()),
                    std::make_move_iterator(fields.end()));
        ngx_byok_redis_send_noreply(argv);
    }
    g_events.clear();
}

void flush() {
    flush_events();
    if (g_pending.empty() || !ngx_byok_redis_available()) return;
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
    } catch (const std::exception &) {
    }
    if (g_active && !ngx_exiting) ngx_add_timer(&g_flush_ev, kFlushEvery);
}

}  // namespace

void ngx_byok_usage_add(const byok::Layout &layout, std::string_view pid, std::string_view provider,
                        byok::Route route) {
    if (g_pending.size() >= kMaxPending) return;
    g_pending[{byok::usage_key(layout, pid, ngx_time()), byok::usage_field(provider, route)}]++;
}

void ngx_byok_meter_add(const std::vector<byok::Increment> &incs) {
    for (const auto &i : incs) {
        if (g_pending.size() >= kMaxPending) return;
        g_pending[{i.key, i.field}] += i.by;
    }
}

void ngx_byok_usage_event(std::vector<std::string> fields) {
    if (g_events.size() < kMaxEvents) g_events.push_back(std::move(fields));
}

void ngx_byok_usage_init_process(ngx_cycle_t *cycle) {
    g_flush_ev.handler = flush_handler;
    g_flush_ev.log = cycle->log;
    g_flush_ev.data = nullptr;
    g_flush_ev.cancelable = 1;
    g_active = true;
    ngx_add_timer(&g_flush_ev, kFlushEvery);
}

void ngx_byok_usage_exit_process() {
    g_active = false;
    if (g_flush_ev.timer_set) ngx_del_timer(&g_flush_ev);
}
