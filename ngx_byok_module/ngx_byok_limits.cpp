// Project limits at the edge (issue 13): admission before any upstream call
// (and the x-byok-limit-* headers ngx_byok_filter.cpp sends), token and cost
// charging at the log phase, and the once-a-second sync of the counters with
// Redis. lib/limits.h decides;
// this file only keeps the counters and carries the decisions out.
//
// Why local counters: a Redis round trip per request would put Redis on the
// hot path. Each node counts in its shared-memory table (one slot per
// limited project, one LimitCounter per limit) and the usage flush timer
// syncs: INCRBY of what this node counted since the last sync, whose reply
// is the total of every node; a node without new traffic reads the total
// with GET. A node therefore learns of other nodes' spending within one
// sync interval (at most 1 s), and the worst-case overshoot of a limit is
// one sync interval of traffic per node (plus the requests already in
// flight when it was reached: tokens are known only when a response ends).
//
// One worker per node syncs per interval (a timestamp in the table claims
// it), so the Redis load is a few commands per limited, active project per
// node per second, whatever the request rate. Alerts: the INCRBY that
// carries a budget over 80 % or 100 % is exactly one among all nodes (Redis
// applies them one at a time), so its node alone writes the audit entry and
// counts the metric: once per window, not per request.
#include "ngx_byok_module/ngx_byok_ctx.h"

#include <memory>

#include "lib/limits.h"
#include "lib/util.h"

namespace {

using byok::LimitKind;

constexpr size_t kMaxSlots = 512;
constexpr size_t kProbes = 16;
constexpr int64_t kSyncEveryMs = 900;    // the flush timer fires every 1000 ms per worker
constexpr int64_t kIdleMs = 120 * 1000;  // projects idle longer are not synced

struct LimitSlot {
    int64_t last_used_ms;
    byok::ProjectLimits limits;
    byok::LimitCounter counters[byok::kLimitKinds];
    uint32_t pid_len;  // 0 = free
    char pid[64];
};

struct LimitsShm {
    ngx_atomic_t last_sync_ms;
    ngx_atomic_t alerts[byok::kLimitKinds][2];  // [kind][80 %, 100 %]
    LimitSlot slots[1];
};

LimitsShm *g_shm = nullptr;
ngx_slab_pool_t *g_shpool = nullptr;
size_t g_slots = 0;

// Slots for the zone: about 1/64 of it, within [8, kMaxSlots].
size_t slots_for(size_t zone_size) {
    size_t n = zone_size / 64 / sizeof(LimitSlot);
    return ngx_max(ngx_min(n, kMaxSlots), (size_t)8);
}

int64_t now_ms() {
    ngx_time_t *tp = ngx_timeofday();
    return (int64_t)tp->sec * 1000 + tp->msec;
}

class ZoneLock {
  public:
    ZoneLock() { ngx_shmtx_lock(&g_shpool->mutex); }
    ~ZoneLock() { ngx_shmtx_unlock(&g_shpool->mutex); }
    ZoneLock(const ZoneLock &) = delete;
    ZoneLock &operator=(const ZoneLock &) = delete;
};

// The project's slot (zone locked). With `create`, a free slot or the least
// recently used of its probe run is taken over when the project has none.
LimitSlot *find_slot(std::string_view pid, bool create, int64_t now) {
    if (pid.empty() || pid.size() > sizeof(LimitSlot::pid)) return nullptr;
    uint32_t h = ngx_crc32_short((u_char *)pid.data(), pid.size());
    LimitSlot *free_slot = nullptr, *oldest = nullptr;
    for (size_t i = 0; i < ngx_min(kProbes, g_slots); i++) {
        LimitSlot *s = &g_shm->slots[(h + i) % g_slots];
        if (s->pid_len == pid.size() && ngx_memcmp(s->pid, pid.data(), pid.size()) == 0) return s;
        if (s->pid_len == 0) {
            if (free_slot == nullptr) free_slot = s;
        } else if (oldest == nullptr || s->last_used_ms < oldest->last_used_ms) {
            oldest = s;
        }
    }
    if (!create) return nullptr;
    LimitSlot *s = free_slot ? free_slot : oldest;
    *s = LimitSlot{};
    s->last_used_ms = now;
    s->pid_len = (uint32_t)pid.size();
    ngx_memcpy(s->pid, pid.data(), pid.size());
    return s;
}

// --- sync ---------------------------------------------------------------------

struct SyncItem {
    std::string pid;
    LimitKind kind;
    int64_t window, delta, limit;
};

void alert(const SyncItem &it, int pct) {
    ngx_atomic_fetch_add(&g_shm->alerts[(size_t)it.kind][pct >= 100 ? 1 : 0], 1);
    std::string_view name = byok::limit_name(it.kind);
    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  BYOK_LOG "project \"%s\" reached %d%% of its %*s limit", it.pid.c_str(), pct,
                  (int)name.size(), name.data());
    ngx_byok_main_conf_t *mcf = ngx_byok_main_conf();
    if (mcf == nullptr) return;
    // issue 16: in cluster mode a second command copies the entry to the global stream
    for (auto &argv : byok::admin::audit_entry_commands(
             mcf->m->admin.layout, "gateway", byok::iso8601_utc(ngx_time()), it.pid, "limit.alert",
             std::string(name) + ":" + std::to_string(pct)))
        ngx_byok_redis_send_noreply(std::move(argv));
}

// INCRBY answers an integer, GET a string or nil (no traffic yet).
std::optional<int64_t> total_of(const byok::admin::Reply &rep) {
    using Type = byok::admin::Reply::Type;
    if (rep.type == Type::Integer) return rep.integer;
    if (rep.type == Type::Nil) return 0;
    if (rep.type == Type::String && !rep.str.empty() && rep.str.size() < 19 &&
        rep.str.find_first_not_of("0123456789") == std::string::npos)
        return std::stoll(rep.str);
    return std::nullopt;
}

void settle(const SyncItem &it, std::optional<int64_t> total) {
    ZoneLock lock;
    LimitSlot *s = find_slot(it.pid, false, 0);
    if (s != nullptr) s->counters[(size_t)it.kind].settle(it.window, it.delta, total);
}

void sync_done(ByokRedisWaiter *w) {
    std::unique_ptr<SyncItem> it(static_cast<SyncItem *>(w->data));
    try {
        std::optional<int64_t> total = total_of(w->reply);
        settle(*it, total);
        if (total && it->delta > 0 && byok::limit_alerts(it->kind)) {
            for (int pct : byok::crossed_thresholds(it->limit, *total - it->delta, *total))
                alert(*it, pct);
        }
    } catch (const std::exception &) {
    }
}

}  // namespace

size_t ngx_byok_limits_size(size_t zone_size) {
    return offsetof(LimitsShm, slots) + slots_for(zone_size) * sizeof(LimitSlot);
}

void ngx_byok_limits_attach(void *area, size_t zone_size, ngx_slab_pool_t *shpool) {
    g_shm = static_cast<LimitsShm *>(area);
    g_slots = slots_for(zone_size);
    g_shpool = shpool;
}

std::optional<byok::GatewayError> ngx_byok_limits_admit(ngx_http_request_t *r,
                                                        ByokGatewayCtx *ctx) {
    const byok::ProjectLimits &l = ctx->snap->limits;
    if (!l.any() || g_shm == nullptr) return std::nullopt;
    const byok::Route route = ctx->decision.route;
    const int64_t now = ngx_time();
    byok::LimitVerdict v;
    {
        ZoneLock lock;
        LimitSlot *s = find_slot(ctx->snap->project, true, now_ms());
        s->limits = l;
        s->last_used_ms = now_ms();
        int64_t spent[byok::kLimitKinds];
        for (size_t k = 0; k < byok::kLimitKinds; k++)
            spent[k] = s->counters[k].spent(byok::limit_window((LimitKind)k, now));
        v = byok::check_limits(l, {spent[0], spent[1], spent[2]}, route, now);
        if (!v.refuse && l.counts(route) && !ctx->limit.charged) {
            s->counters[0].add(byok::limit_window(LimitKind::Requests, now), 1);
            ctx->limit.charged = true;
        }
    }
    ctx->limit.headers = std::move(v.headers);
    if (!v.refuse) return std::nullopt;
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  BYOK_LOG "project \"%s\" refused: %s limit reached", ctx->snap->project.c_str(),
                  v.exceeded.c_str());
    // Refused before any upstream call: route denied, like every other
    // refusal, so it is neither metered nor charged as a proxied request.
    byok::GatewayError e = byok::limit_refusal(v);
    ctx->decision.route = byok::Route::Denied;
    ctx->decision.status = e.status;
    ctx->decision.error_code = e.code;
    return e;
}

void ngx_byok_limits_charge(const ByokGatewayCtx *ctx, const byok::TokenUsage &u,
                            int64_t cost_micro) {
    const byok::ProjectLimits &l = ctx->snap->limits;
    if (!l.any() || g_shm == nullptr || !u.known || !l.counts(ctx->decision.route)) return;
    const int64_t now = ngx_time();
    ZoneLock lock;
    LimitSlot *s = find_slot(ctx->snap->project, true, now_ms());
    s->limits = l;
    s->last_used_ms = now_ms();
    if (l.tokens_per_day > 0)
        s->counters[(size_t)LimitKind::Tokens].add(byok::limit_window(LimitKind::Tokens, now),
                                                   u.input + u.output);
    if (l.cost_per_month_micro > 0)
        s->counters[(size_t)LimitKind::Cost].add(byok::limit_window(LimitKind::Cost, now),
                                                 cost_micro);
}

void ngx_byok_limits_init_process() {
    if (g_shm == nullptr) return;
    // A worker that exited (reload, crash) with a sync in flight never
    // settles it: count those deltas as sent (Redis most likely has them;
    // the next sync's total says). A live worker's later reply clamps at 0.
    ZoneLock lock;
    for (size_t i = 0; i < g_slots; i++)
        for (auto &c : g_shm->slots[i].counters) c.inflight = 0;
}

void ngx_byok_limits_sync() {
    ngx_byok_main_conf_t *mcf = ngx_byok_main_conf();
    if (g_shm == nullptr || mcf == nullptr || !ngx_byok_redis_available()) return;
    const int64_t now = ngx_time(), ms = now_ms();
    std::vector<SyncItem> plan;
    {
        ZoneLock lock;
        if (ms - (int64_t)g_shm->last_sync_ms < kSyncEveryMs) return;  // another worker did
        g_shm->last_sync_ms = (ngx_atomic_uint_t)ms;
        for (size_t i = 0; i < g_slots; i++) {
            LimitSlot &s = g_shm->slots[i];
            if (s.pid_len == 0 || !s.limits.any()) continue;
            bool busy = ms - s.last_used_ms < kIdleMs;
            for (size_t k = 0; k < byok::kLimitKinds; k++) {
                int64_t limit = byok::limit_value(s.limits, (LimitKind)k);
                if (limit <= 0 || (!busy && s.counters[k].pending == 0)) continue;
                int64_t w = byok::limit_window((LimitKind)k, now);
                int64_t d = s.counters[k].take(w);
                plan.push_back({std::string(s.pid, s.pid_len), (LimitKind)k, w, d, limit});
            }
        }
    }
    const byok::Layout &layout = mcf->m->admin.layout;
    for (const SyncItem &it : plan) {
        std::string key = byok::limit_counter_key(layout, it.pid, it.kind, now);
        std::vector<std::string> argv{"GET", key};
        if (it.delta > 0) argv = {"INCRBY", key, std::to_string(it.delta)};
        auto item = std::make_unique<SyncItem>(it);
        if (ngx_byok_redis_send(argv, sync_done, item.get()) == nullptr) {
            settle(it, std::nullopt);
            continue;
        }
        item.release();  // sync_done owns it now
        if (it.delta > 0)
            ngx_byok_redis_send_noreply(
                {"EXPIRE", key, std::to_string(byok::limit_counter_ttl(it.kind))});
    }
}

std::string ngx_byok_limits_metrics() {
    std::string out =
        "# HELP byok_limit_alerts_total Project budgets that reached 80 % or 100 % of a limit, "
        "once per window.\n"
        "# TYPE byok_limit_alerts_total counter\n";
    for (LimitKind k : {LimitKind::Tokens, LimitKind::Cost}) {
        for (int level = 0; level < 2; level++) {
            ngx_atomic_uint_t n = g_shm ? g_shm->alerts[(size_t)k][level] : 0;
            out += "byok_limit_alerts_total{limit=\"" + std::string(byok::limit_name(k)) +
                   "\",level=\"" + (level ? "100" : "80") + "\"} " + std::to_string(n) + "\n";
        }
    }
    return out;
}
