// Usage counters (key and field spelled by lib/usage.h;
// and the token/cost counters of lib/metering.h) are summed in worker memory and flushed to Redis
// once a second, so a request never waits on them and Redis sees one HINCRBY per project, provider
// and route per second instead of one per request. A request adds to one row (project, provider,
// route, model, gateway key id, day) that holds its request count, tokens and cost; the flush
// expands a row into the token/cost counters and the request counter of its project, provider and
// route (issue 18, s6: one row and one lookup per request, not a second row for the request
// counter). Counts survive a Redis outage in memory (bounded) and are written when it returns.
// Usage events wait in the same way (bounded) and go out as EVAL batches of XADDs followed by one
// XTRIM MAXLEN ~, so the stream stays capped.
//
// Issue 18 (the c1 p99 tail): a flush round takes what was summed before it began (the live
// tables are swapped out) and sends it in slices, at most kRowsPerTurn counter rows and
// kBatchesPerTurn event batches per event-loop turn, the rest on the next turn
// (ngx_posted_next_events), so no single turn holds the worker for thousands of rows.
//
// Graceful stop and reload (issue 18): nginx closes the listening sockets, lets the requests in
// flight finish and exits once only cancelable timers are left — which the flush timer is, so
// the worker's last second of counters and events was lost. nginx's one call at the start of a
// graceful stop goes to the read handler of each idle connection (ngx_close_idle_connections);
// the worker holds one such connection, on an eventfd that is never polled, to hear it. From
// then on the flush timer is not cancelable and ticks every kExitTick: each tick sends all that
// was summed (no slicing: the worker serves no new connections), and the ticks stop once Redis
// has answered everything sent, Redis is unavailable, or kExitBound has passed since the last
// metered request — exit is delayed by a round trip, never for long.
#include "ngx_byok_module/ngx_byok.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <map>

#include "lib/usage.h"
#include "lib/util.h"

namespace {

constexpr ngx_msec_t kFlushEvery = 1000;
constexpr size_t kMaxPending = 100000;
// The day keys' lifetime: the window a project's deletion names (lib/layout.h).
const std::string kRetention = std::to_string(byok::kUsageRetentionDays * 86400);

std::map<std::pair<std::string, std::string>, long long> g_pending;  // (key, field) -> n
constexpr size_t kBatchReserve = byok::kUsageEventsPerBatch * 256;   // a typical event: ~150 bytes
// Usage events in batches (lib/metering.h).
std::vector<byok::UsageEventBatch> g_batches;
// Every metered request leaves one event (issue 13), at any request rate;
// only the events not yet sent are bounded, by the bytes they hold (about
// 200,000 events: a minute of 3,000 requests a second while Redis is away).
// Beyond it an event is dropped and counted (byok_usage_events_dropped_total).
constexpr size_t kMaxEventBytes = 32u << 20;
size_t g_event_bytes = 0;  // of the events in g_batches and g_batches_out
// Request, token and cost sums per (project, provider, route, model, key
// id, day), keyed by those fields (row_key) (issue 18: a request adds to
// its row without allocating; the row becomes HINCRBYs at the flush).
std::map<std::string, byok::MeterTotals, std::less<>> g_meter;
// The lookup key, built in one of two buffers (reused: no allocation once
// grown); the other holds the last request's key, whose row is g_last_row
// (issue 18, s7): the next request with the same key, nearly every one
// under load, adds to that row without a lookup. Cleared when a flush round
// takes the table.
std::string g_meter_key, g_last_key;
byok::MeterTotals *g_last_row = nullptr;
std::string g_stream;     // the usage event stream's key (fixed per configuration)
bool g_events_on = true;  // byok_usage_events (off: the counters only, no stream entries)
ngx_event_t g_flush_ev;
bool g_active = false;

// A flush round in progress: what was summed before it began.
constexpr size_t kRowsPerTurn = 64;
constexpr size_t kBatchesPerTurn = 4;  // ~100 events each
std::map<std::string, byok::MeterTotals, std::less<>> g_meter_out;
std::vector<byok::UsageEventBatch> g_batches_out;
size_t g_batches_sent = 0;  // of g_batches_out
ngx_event_t g_slice_ev;     // the round's next slice, posted to the next turn
// Exposed on /metrics (this worker's): the most counter rows one turn sent,
// and the turns the rounds took.
size_t g_rows_max_per_turn = 0;
uint64_t g_slices = 0;

// The graceful stop (see the top of the file).
constexpr ngx_msec_t kExitTick = 20;
constexpr ngx_msec_t kExitBound = 2000;
ngx_connection_t *g_stop_watch = nullptr;  // the idle connection that hears the stop
bool g_stopping = false;
ngx_msec_t g_stop_deadline = 0;

// A row's key: each part preceded by its length (two bytes, little end
// first), built in `key` (reused: no allocation once grown) with one resize.
// Any byte may occur in a part, so nothing is searched ('\0' separators
// needed a memchr per part to refuse a part holding one). false for a part
// over 65535 bytes (never from a valid request).
bool row_key(std::string &key, std::initializer_list<std::string_view> parts) {
    size_t size = 2 * parts.size();
    for (std::string_view p : parts) {
        if (p.size() > 0xffff) return false;
        size += p.size();
    }
    key.resize(size);
    char *w = &key[0];
    for (std::string_view p : parts) {
        *w++ = static_cast<char>(p.size() & 0xff);
        *w++ = static_cast<char>(p.size() >> 8);
        if (!p.empty()) std::memcpy(w, p.data(), p.size());
        w += p.size();
    }
    return true;
}

// The parts of a row key.
template <size_t N>
void split_row(const std::string &key, std::string_view (&parts)[N]) {
    size_t at = 0;
    for (auto &p : parts) {
        size_t n = 0;
        if (at + 2 <= key.size())
            n = static_cast<unsigned char>(key[at]) |
                static_cast<size_t>(static_cast<unsigned char>(key[at + 1])) << 8;
        at = std::min(at + 2, key.size());
        n = std::min(n, key.size() - at);
        p = std::string_view(key).substr(at, n);
        at += n;
    }
}

// A meter row becomes counter increments: tokens and cost (lib/metering.h
// decides them) and the request counter of its project, provider and route
// (lib/usage.h), which rows of other models and gateway keys add to.
void expand_meter_row(const byok::Layout &layout, const std::string &key,
                      const byok::MeterTotals &totals) {
    std::string_view parts[6];  // project, provider, route, model, key id, day
    split_row(key, parts);
    byok::MeterRecord rec;
    rec.project = parts[0];
    rec.provider = parts[1];
    rec.route = parts[2];
    rec.model = parts[3];
    rec.key_id = parts[4];
    rec.day = parts[5];
    for (const auto &i : byok::meter_increments(layout, rec, totals)) {
        if (g_pending.size() >= kMaxPending) return;
        g_pending[{i.key, i.field}] += i.by;
    }
    if (totals.requests == 0 || rec.project.empty() || rec.provider.empty() ||
        g_pending.size() >= kMaxPending)
        return;
    g_pending[{byok::usage_key(layout, rec.project, rec.day),
               byok::usage_field(rec.provider, rec.route)}] += totals.requests;
}

void send_pending() {
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

bool round_left() { return g_batches_sent < g_batches_out.size() || !g_meter_out.empty(); }

// One slice of the round; true when more is left. Stops (the rest waits
// for the next round) while Redis is unavailable.
bool flush_slice() {
    auto *mcf = ngx_byok_main_conf();
    if (mcf == nullptr || !ngx_byok_redis_available()) return false;
    g_slices++;
    for (size_t n = 0; n < kBatchesPerTurn && g_batches_sent < g_batches_out.size(); n++) {
        byok::UsageEventBatch &batch = g_batches_out[g_batches_sent++];
        std::string cmd = byok::usage_events_batch_head(g_stream, batch.events());
        cmd.append(batch.args());
        ngx_byok_redis_send_raw_noreply(cmd, 1);
        g_event_bytes -= batch.args().size();
        batch = byok::UsageEventBatch();  // its memory goes now
    }
    if (g_batches_sent == g_batches_out.size()) {
        g_batches_out.clear();
        g_batches_sent = 0;
    }
    const byok::Layout &layout = mcf->m->admin.layout;
    size_t rows = 0;
    while (rows < kRowsPerTurn && !g_meter_out.empty()) {
        auto it = g_meter_out.begin();
        expand_meter_row(layout, it->first, it->second);
        g_meter_out.erase(it);
        rows++;
    }
    g_rows_max_per_turn = std::max(g_rows_max_per_turn, rows);
    send_pending();
    return round_left();
}

// A slice, and the next one posted to the next event-loop turn while the
// round has more.
void run_slice() {
    if (g_stopping) {  // the last rounds: all at once
        while (flush_slice()) {
        }
        return;
    }
    if (flush_slice() && g_active && !ngx_exiting && !g_slice_ev.posted) {
        ngx_post_event(&g_slice_ev, &ngx_posted_next_events);
    }
}

void slice_handler(ngx_event_t *) {
    try {
        run_slice();
    } catch (const std::exception &) {
    }
}

// Merges src into dst (a round cut short by a Redis outage, then more).
template <class Map, class Add>
void merge_into(Map &dst, Map &src, Add add) {
    if (dst.empty()) {
        dst.swap(src);
        return;
    }
    for (auto &[k, v] : src) {
        if (dst.size() >= kMaxPending && dst.find(k) == dst.end()) continue;
        add(dst[k], v);
    }
    src.clear();
}

// The timer: a new round takes the live tables.
void flush() {
    ngx_byok_last_used_flush();               // issue 14
    if (!ngx_byok_redis_available()) return;  // everything waits, bounded
    merge_into(g_meter_out, g_meter, byok::add_totals);
    g_last_row = nullptr;  // its node went with the table
    if (g_batches_out.empty()) g_batches_out.swap(g_batches);
    for (auto &b : g_batches) g_batches_out.push_back(std::move(b));
    g_batches.clear();
    if (!g_slice_ev.posted) run_slice();  // else the posted slice goes on
}

// Stopping: more to send or to be answered, within the bound.
bool stop_flush_left() {
    if ((ngx_msec_int_t)(ngx_current_msec - g_stop_deadline) >= 0 || !ngx_byok_redis_available())
        return false;
    return !g_meter.empty() || !g_batches.empty() || round_left() ||
           !ngx_byok_redis_noreply_drained();
}

void flush_handler(ngx_event_t *ev) {
    try {
        flush();
        ngx_byok_limits_sync();  // issue 13: project-limit counters, same interval
    } catch (const std::exception &) {
    }
    if (!g_active) return;
    if (g_stopping) {
        if (stop_flush_left()) ngx_add_timer(&g_flush_ev, kExitTick);
    } else if (!ngx_exiting) {
        ngx_add_timer(&g_flush_ev, kFlushEvery);
    }
}

// The worker stops (or a request finished after it began to): flush now and
// tick until it is answered, kExitBound from now at most.
void stopping() {
    if (!g_active) return;
    g_stopping = true;
    g_stop_deadline = ngx_current_msec + kExitBound;
    g_flush_ev.cancelable = 0;  // keeps the worker up while ticking
    if (g_flush_ev.timer_set) ngx_del_timer(&g_flush_ev);
    flush_handler(&g_flush_ev);
}

// A request summed during the stop.
inline void note_exiting() {
    if (ngx_exiting && !g_flush_ev.timer_set) stopping();
}

void stop_seen(ngx_event_t *ev) {
    auto *c = static_cast<ngx_connection_t *>(ev->data);
    c->idle = 0;  // heard once
    c->close = 0;
    try {
        stopping();
    } catch (const std::exception &) {
    }
}

void open_stop_watch(ngx_cycle_t *cycle) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd == -1) return;  // no final flush (logged nowhere: as before)
    g_stop_watch = ngx_get_connection(fd, cycle->log);
    if (g_stop_watch == nullptr) {
        close(fd);
        return;
    }
    g_stop_watch->idle = 1;
    g_stop_watch->read->handler = stop_seen;
    g_stop_watch->read->log = cycle->log;
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

void ngx_byok_meter_record(const byok::Layout &layout, const byok::MeterRecord &rec) {
    if (!row_key(g_meter_key, {rec.project, rec.provider, rec.route,
                               rec.model.substr(0, byok::kMaxModel), rec.key_id, rec.day}))
        return;
    if (g_last_row == nullptr || g_meter_key != g_last_key) {
        g_last_row = nullptr;
        auto it = g_meter.find(std::string_view(g_meter_key));
        if (it == g_meter.end()) {
            if (g_meter.size() >= kMaxPending) return;
            it = g_meter.emplace(g_meter_key, byok::MeterTotals{}).first;
        }
        g_last_row = &it->second;
        g_last_key.swap(g_meter_key);
    }
    byok::add_totals(*g_last_row, byok::meter_totals(rec));
    if (!g_events_on) {  // byok_usage_events off: the counters only
    } else if (g_event_bytes < kMaxEventBytes) {
        if (g_stream.empty()) g_stream = layout.usage_events();
        if (g_batches.empty() || g_batches.back().events() == byok::kUsageEventsPerBatch)
            g_batches.emplace_back(kBatchReserve);  // grown once per batch
        byok::UsageEventBatch &batch = g_batches.back();
        const size_t had = batch.args().size();
        batch.append(rec);
        g_event_bytes += batch.args().size() - had;
    } else {
        ngx_byok_count(BYOK_USAGE_EVENT_DROPPED);
    }
    note_exiting();
}

void ngx_byok_usage_init_process(ngx_cycle_t *cycle) {
    g_stream.clear();
    auto *mcf = static_cast<ngx_byok_main_conf_t *>(
        ngx_http_cycle_get_module_main_conf(cycle, ngx_http_byok_module));
    g_events_on = mcf == nullptr || mcf->usage_events;
    g_flush_ev.handler = flush_handler;
    g_flush_ev.log = cycle->log;
    g_flush_ev.data = nullptr;
    g_flush_ev.cancelable = 1;
    g_slice_ev.handler = slice_handler;
    g_slice_ev.log = cycle->log;
    g_slice_ev.data = nullptr;
    g_flush_ev.cancelable = 1;
    g_active = true;
    g_stopping = false;
    ngx_add_timer(&g_flush_ev, kFlushEvery);
    open_stop_watch(cycle);
    ngx_byok_limits_init_process();  // issue 13: project-limit counters
}

void ngx_byok_usage_exit_process() {
    g_active = false;
    if (g_stop_watch != nullptr) {  // not left open: nginx alerts on an open socket at exit
        ngx_close_connection(g_stop_watch);
        g_stop_watch = nullptr;
    }
    if (g_flush_ev.timer_set) ngx_del_timer(&g_flush_ev);
    if (g_slice_ev.posted) {  // braces: the macro is several statements
        ngx_delete_posted_event(&g_slice_ev);
    }
}

std::string ngx_byok_usage_metrics() {
    return "# HELP byok_usage_flush_rows_max_per_turn The most usage counter rows one event-loop "
           "turn of this worker's flush has sent.\n"
           "# TYPE byok_usage_flush_rows_max_per_turn gauge\n"
           "byok_usage_flush_rows_max_per_turn " +
           std::to_string(g_rows_max_per_turn) +
           "\n"
           "# HELP byok_usage_flush_turns_total Event-loop turns this worker's usage flush took.\n"
           "# TYPE byok_usage_flush_turns_total counter\n"
           "byok_usage_flush_turns_total " +
           std::to_string(g_slices) + "\n";
}
