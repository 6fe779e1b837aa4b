// Provider-key selection and health (issue 14), the glue side: lib/
// key_select.h and lib/key_health.h decide, this file keeps their state.
//
// Health lives in a fixed table at the end of the shared-memory zone (all
// workers see a verdict at once), keyed by a hash of (project, key id):
// sized by the zone (1/16 of it, up to 8192 keys), 8 slots probed per key, the least recently
// touched evicted when full — forgetting a cooling key only costs one more failed request on it. A
// transition is written to byok:{pid}:key_health and published on the
// invalidation channel, so every node has it within one Redis round trip;
// the subscriber hands such messages to ngx_byok_health_message.
//
// Last use of provider keys and gateway keys is kept per worker and written
// with the usage counters (once a second): no Redis round trip per request.
#include <map>

#include "lib/key_health.h"
#include "lib/key_select.h"
#include "ngx_byok_module/ngx_byok_ctx.h"

namespace {

constexpr size_t kMaxSlots = 8192;
constexpr size_t kMinSlots = 64;
constexpr size_t kProbe = 8;
constexpr int64_t kExpiringWindowS = 7 * 86400;
constexpr int64_t kTouchEveryMs = 1000;  // a healthy key's touched time, at most this stale

struct HealthSlot {
    uint64_t hash;  // 0 = free
    int64_t until_ms;
    int64_t window_start_ms;
    int64_t touched_ms;
    int64_t expires_at;  // unix seconds, 0 = never (for byok_keys_expiring)
    uint32_t fails;
    // issue 18: a seqlock per slot. Writers hold the mutex and make seq odd
    // while they write (begin_write/end_write); the request path reads a
    // slot without the mutex (read_slot) and keeps its copy only when seq
    // was even and unchanged around it.
    uint32_t seq;
    uint8_t state;  // byok::HealthState
};

// 1/16 of the zone, within [kMinSlots, kMaxSlots] slots.
size_t slots_for(size_t zone_size) {
    size_t n = zone_size / 16 / sizeof(HealthSlot);
    return n < kMinSlots ? kMinSlots : n > kMaxSlots ? kMaxSlots : n;
}

HealthSlot *g_health = nullptr;
size_t g_slots = 0;
ngx_shmtx_t *g_mutex = nullptr;
byok::KeySelector g_selector;  // per worker, like nginx's round robin without a zone
// Last use per "<pid>\0<field>" (unix seconds). issue 18: a request finds
// its rows through g_use_key, a reused buffer, so it allocates nothing once
// they exist; and each caller remembers the row it touched last, so a
// worker serving the same keys again compares bytes instead of building
// the name and searching the map.
using LastUsed = std::map<std::string, int64_t, std::less<>>;
LastUsed g_last_used;
std::string g_use_key;
constexpr size_t kMaxLastUsed = 10000;
struct UseMemo {
    std::string name;  // "<pid>\0<field>" of `row`; "" = none
    LastUsed::iterator row;
};
UseMemo g_gateway_use, g_key_use;  // valid until g_last_used is cleared

int64_t now_ms() {
    ngx_time_t *tp = ngx_timeofday();
    return (int64_t)tp->sec * 1000 + tp->msec;
}

// FNV-1a over 8-byte words, each string's length in its last word, then
// murmur's finaliser so the low bits (the slot index) depend on every byte.
// issue 18: every request hashes its keys, and a byte at a time cost four
// instructions a byte. Only this zone's workers read the slots.
uint64_t slot_hash(std::string_view pid, std::string_view key_id) {
    uint64_t h = 1469598103934665603ULL;
    auto mix = [&](std::string_view s) {
        size_t i = 0;
        uint64_t w;
        for (; i + 8 <= s.size(); i += 8) {
            ngx_memcpy(&w, s.data() + i, 8);
            h = (h ^ w) * 1099511628211ULL;
        }
        w = (uint64_t)s.size() << 56;
        if (i < s.size()) ngx_memcpy(&w, s.data() + i, s.size() - i);  // < 8 bytes: not the top one
        h = (h ^ w) * 1099511628211ULL;
    };
    mix(pid);
    mix(key_id);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h == 0 ? 1 : h;
}

// Under the lock, around every change of a slot.
void begin_write(HealthSlot *s) {
    __atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);  // odd before the fields change
}
void end_write(HealthSlot *s) {
    __atomic_thread_fence(__ATOMIC_RELEASE);  // the fields before even again
    __atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELAXED);
}

// Under the lock. nullptr when absent and !create; else a free slot of the
// probe window, or its least recently touched one.
HealthSlot *find_slot(uint64_t h, bool create) {
    HealthSlot *victim = nullptr;
    for (size_t i = 0; i < kProbe; ++i) {
        HealthSlot *s = &g_health[(h + i) % g_slots];
        if (s->hash == h) return s;
        bool better = victim == nullptr ||
                      (victim->hash != 0 && (s->hash == 0 || s->touched_ms < victim->touched_ms));
        if (better) victim = s;
    }
    if (!create) return nullptr;
    begin_write(victim);
    uint32_t seq = victim->seq;
    ngx_memzero(victim, sizeof(HealthSlot));
    victim->seq = seq;
    victim->hash = h;
    end_write(victim);
    return victim;
}

// One consistent copy of slot `s`; false when a writer kept changing it.
bool copy_slot(const HealthSlot *s, HealthSlot *out) {
    for (int attempt = 0; attempt < 4; ++attempt) {
        uint32_t seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
        if (seq & 1) continue;
        out->hash = __atomic_load_n(&s->hash, __ATOMIC_RELAXED);
        out->until_ms = __atomic_load_n(&s->until_ms, __ATOMIC_RELAXED);
        out->window_start_ms = __atomic_load_n(&s->window_start_ms, __ATOMIC_RELAXED);
        out->touched_ms = __atomic_load_n(&s->touched_ms, __ATOMIC_RELAXED);
        out->expires_at = __atomic_load_n(&s->expires_at, __ATOMIC_RELAXED);
        out->fails = __atomic_load_n(&s->fails, __ATOMIC_RELAXED);
        out->state = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);  // the fields before seq again
        if (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) == seq) return true;
    }
    return false;
}

// find_slot(h, false) without the lock (issue 18: the request path reads
// health on every request, and the mutex is shared by every worker): true
// with a copy of the slot of `h`, false when there is none. A slot a writer
// keeps busy is read under the lock instead.
bool read_slot(uint64_t h, HealthSlot *out) {
    for (size_t i = 0; i < kProbe; ++i) {
        const HealthSlot *s = &g_health[(h + i) % g_slots];
        if (!copy_slot(s, out)) {
            ngx_shmtx_lock(g_mutex);
            const HealthSlot *found = find_slot(h, false);
            if (found != nullptr) *out = *found;
            ngx_shmtx_unlock(g_mutex);
            return found != nullptr;
        }
        if (out->hash == h) return true;
    }
    return false;
}

byok::KeyHealth to_health(const HealthSlot &s) {
    byok::KeyHealth k;
    k.state = static_cast<byok::HealthState>(s.state);
    k.until_ms = s.until_ms;
    k.fails = s.fails;
    k.window_start_ms = s.window_start_ms;
    return k;
}

void store(HealthSlot *s, const byok::KeyHealth &k, int64_t now) {
    begin_write(s);
    s->state = static_cast<uint8_t>(k.state);
    s->until_ms = k.until_ms;
    s->fails = k.fails;
    s->window_start_ms = k.window_start_ms;
    s->touched_ms = now;
    end_write(s);
}

byok::KeyHealth health_of(std::string_view pid, std::string_view key_id) {
    if (g_health == nullptr) return {};
    HealthSlot s;
    return read_slot(slot_hash(pid, key_id), &s) ? to_health(s) : byok::KeyHealth{};
}

void note_expiry(std::string_view pid, const byok::StoredKey &k, int64_t now_s) {
    if (g_health == nullptr || k.expires_at == 0 || k.expires_at - now_s > kExpiringWindowS) return;
    ngx_shmtx_lock(g_mutex);
    HealthSlot *s = find_slot(slot_hash(pid, k.id), true);
    begin_write(s);
    s->expires_at = k.expires_at;
    s->touched_ms = now_s * 1000;
    end_write(s);
    ngx_shmtx_unlock(g_mutex);
}

bool names_row(std::string_view name, std::string_view pid, std::string_view prefix,
               std::string_view id) {
    if (name.size() != pid.size() + 1 + prefix.size() + id.size()) return false;
    return name.substr(0, pid.size()) == pid && name[pid.size()] == '\0' &&
           name.substr(pid.size() + 1, prefix.size()) == prefix &&
           name.substr(pid.size() + 1 + prefix.size()) == id;
}

// `field` is prefix + id ("gw:<key id>" for gateway keys, the key id for
// provider keys).
void note_use(UseMemo &memo, std::string_view pid, std::string_view prefix, std::string_view id) {
    if (!memo.name.empty() && names_row(memo.name, pid, prefix, id)) {
        memo.row->second = ngx_time();
        return;
    }
    g_use_key.assign(pid).push_back('\0');
    g_use_key.append(prefix).append(id);
    auto it = g_last_used.find(std::string_view(g_use_key));
    if (it == g_last_used.end()) {
        if (g_last_used.size() >= kMaxLastUsed) return;
        it = g_last_used.emplace(g_use_key, 0).first;
    }
    it->second = ngx_time();
    memo.name = g_use_key;
    memo.row = it;
}

// `*seen` (when given) gets the health read, if one was.
bool usable_now(std::string_view pid, const byok::StoredKey &k, int64_t now_s, int64_t now,
                byok::KeyHealth *seen = nullptr) {
    if (k.malformed) return true;  // goes through the decrypt attempt: logged and counted
    if (!k.is_active || byok::key_expired(k.expires_at, now_s)) return false;
    byok::KeyHealth h = health_of(pid, k.id);
    if (seen != nullptr) *seen = h;
    return byok::usable(h, now);
}

// Key `i` of the request's snapshot may serve: as the route decision read
// it (issue 18: each key's health is read once per decision), else now.
bool usable_key(const byok::GatewaySnapshot &snap, size_t i, const byok::KeyAttempts &attempts,
                int64_t now) {
    if (i < attempts.usable.size()) return attempts.usable[i];
    return usable_now(snap.project, snap.keys[i], now / 1000, now);
}

void publish(const std::string &pid, const std::string &provider, const std::string &key_id,
             const byok::KeyHealth &h) {
    ngx_byok_main_conf_t *mcf = ngx_byok_main_conf();
    if (mcf == nullptr || !ngx_byok_redis_available()) return;
    // issue 16: in cluster mode a second command copies the audit entry
    for (auto &argv : byok::health_write_commands(mcf->m->admin.layout, pid, provider, key_id, h,
                                                  byok::iso8601_utc(ngx_time())))
        ngx_byok_redis_send_noreply(std::move(argv));
}

// Retry-After and the rate-limit reset headers of the upstream answer.
void reset_headers(ngx_http_request_t *r, std::string *retry_after,
                   std::vector<std::string> *resets) {
    if (r->upstream == nullptr) return;
    for (ngx_list_part_t *part = &r->upstream->headers_in.headers.part; part; part = part->next) {
        auto *h = static_cast<ngx_table_elt_t *>(part->elts);
        for (ngx_uint_t i = 0; i < part->nelts; i++) {
            std::string name((const char *)h[i].key.data, h[i].key.len);
            for (auto &ch : name) ch = (char)ngx_tolower(ch);
            std::string value((const char *)h[i].value.data, h[i].value.len);
            if (name == "retry-after")
                *retry_after = value;
            else if (name.find("ratelimit") != std::string::npos &&
                     name.find("reset") != std::string::npos)
                resets->push_back(value);
        }
    }
}

}  // namespace

size_t ngx_byok_health_size(size_t zone_size) { return slots_for(zone_size) * sizeof(HealthSlot); }

void ngx_byok_health_attach(u_char *area, size_t zone_size, ngx_shmtx_t *mutex) {
    g_health = reinterpret_cast<HealthSlot *>(area);
    g_slots = slots_for(zone_size);
    g_mutex = mutex;
}

bool ngx_byok_health_message(std::string_view payload) {
    auto m = byok::parse_health_message(payload);
    if (!m) return false;
    if (g_health != nullptr) {
        ngx_shmtx_lock(g_mutex);
        HealthSlot *s = find_slot(slot_hash(m->pid, m->key_id), true);
        store(s, m->health, now_ms());
        ngx_shmtx_unlock(g_mutex);
    }
    return true;
}

// issue 16: a verdict stored in Redis, read by a cold lookup, is learnt only
// when this node holds nothing for the key — it started (or evicted the
// slot) after the transition was published; what it saw itself is newer.
void ngx_byok_health_learn(std::string_view pid, std::string_view key_id,
                           const byok::KeyHealth &h) {
    if (g_health == nullptr) return;
    ngx_shmtx_lock(g_mutex);
    uint64_t hash = slot_hash(pid, key_id);
    if (find_slot(hash, false) == nullptr) store(find_slot(hash, true), h, now_ms());
    ngx_shmtx_unlock(g_mutex);
}

namespace {

// KeyPool::states: a provider is usable when one of its keys is; else all
// its keys are unhealthy (with the soonest return), expired or inactive.
void key_states(const byok::GatewaySnapshot &snap, byok::RouteInput *in,
                byok::KeyAttempts *attempts) {
    const std::string &pid = snap.project;
    int64_t now = now_ms(), now_s = now / 1000;
    if (!snap.key_id.empty()) note_use(g_gateway_use, pid, "gw:", snap.key_id);
    struct Agg {
        const std::string *provider;
        bool usable = false, unhealthy = false, expired = false;
        int64_t soonest_ms = 0;  // of the unhealthy keys that come back on their own
    };
    // Per provider, in the order of the snapshot; reused (issue 18).
    static std::vector<Agg> by_provider;
    by_provider.clear();
    for (const auto &k : snap.keys) {
        Agg *a = nullptr;
        for (auto &x : by_provider)
            if (*x.provider == k.provider) a = &x;
        if (a == nullptr) a = &by_provider.emplace_back(Agg{&k.provider});
        note_expiry(pid, k, now_s);
        byok::KeyHealth h;
        bool usable = usable_now(pid, k, now_s, now, &h);
        attempts->usable.push_back(usable);
        if (usable) {
            a->usable = true;
        } else if (k.is_active && byok::key_expired(k.expires_at, now_s)) {
            a->expired = true;
        } else if (k.is_active) {
            a->unhealthy = true;
            if (h.state != byok::HealthState::Invalid &&
                (a->soonest_ms == 0 || h.until_ms < a->soonest_ms))
                a->soonest_ms = h.until_ms;
        }
    }
    for (const Agg &a : by_provider) {
        byok::KeyState st = a.usable      ? byok::KeyState::Usable
                            : a.unhealthy ? byok::KeyState::Unhealthy
                            : a.expired   ? byok::KeyState::Expired
                                          : byok::KeyState::Inactive;
        in->project_keys.emplace_back(*a.provider, st);
        if (st == byok::KeyState::Unhealthy)
            in->keys_retry_in_s.emplace_back(
                *a.provider, a.soonest_ms == 0 ? 0 : (a.soonest_ms - now + 999) / 1000);
    }
}

// KeyPool::pick: smooth weighted round robin over the usable keys not tried.
const byok::StoredKey *pick_key(const byok::GatewaySnapshot &snap, std::string_view provider,
                                byok::KeyAttempts *attempts) {
    const std::string &pid = snap.project;
    int64_t now = now_ms();
    static std::vector<const byok::StoredKey *> keys;  // reused (issue 18)
    static std::vector<byok::KeyCandidate> cands;
    keys.clear();
    cands.clear();
    for (size_t i = 0; i < snap.keys.size(); i++) {
        const byok::StoredKey &k = snap.keys[i];
        if (k.provider != provider || attempts->tried_id(k.id) ||
            !usable_key(snap, i, *attempts, now))
            continue;
        keys.push_back(&k);
        cands.push_back({k.id, k.weight});
    }
    int i = g_selector.pick(pid, provider, cands);
    if (i < 0) return nullptr;
    attempts->tried.push_back(keys[i]->id);
    if (!keys[i]->malformed) note_use(g_key_use, pid, "", keys[i]->id);
    return keys[i];
}

}  // namespace

void ngx_byok_key_pool(byok::GatewayConfig *cfg) {
    cfg->keys.states = key_states;
    cfg->keys.pick = pick_key;
}

bool ngx_byok_sibling_possible(const ByokGatewayCtx *ctx) {
    if (ctx->decision.route != byok::Route::Byok || ctx->keys.current.empty() || ctx->keys.retried)
        return false;
    int64_t now = now_ms();
    const byok::GatewaySnapshot &snap = *ctx->snap;
    for (size_t i = 0; i < snap.keys.size(); i++) {
        const byok::StoredKey &k = snap.keys[i];
        if (k.provider == ctx->keys.provider && !ctx->keys.tried_id(k.id) &&
            usable_key(snap, i, ctx->keys, now))
            return true;
    }
    return false;
}

void ngx_byok_health_observe(ngx_http_request_t *r, ByokGatewayCtx *ctx, ngx_uint_t status) {
    if (ctx->keys.observed || ctx->keys.current.empty() || g_health == nullptr) return;
    ctx->keys.observed = true;
    byok::Outcome o = byok::classify_upstream((int)status, false);
    if (o == byok::Outcome::Neutral) return;
    const byok::HealthPolicy &policy = ngx_byok_main_conf()->m->key_health;
    int64_t now = now_ms();
    int64_t until = 0;
    if (o == byok::Outcome::RateLimited) {
        std::string retry_after;
        std::vector<std::string> resets;
        reset_headers(r, &retry_after, &resets);
        std::vector<std::string_view> views(resets.begin(), resets.end());
        until = byok::cooling_until(now, retry_after, views, policy);
    }
    const std::string &pid = ctx->snap->project;
    std::string_view key_id = ctx->keys.current;
    uint64_t hash = slot_hash(pid, key_id);
    // issue 18: a success on a healthy key with no failure counted changes
    // nothing but the slot's touched time (its eviction order), which is
    // kept to the second: most answers take no lock.
    HealthSlot seen;
    if (o == byok::Outcome::Success && read_slot(hash, &seen) &&
        seen.state == static_cast<uint8_t>(byok::HealthState::Healthy) && seen.fails == 0 &&
        seen.window_start_ms == 0 && seen.until_ms == 0 && now - seen.touched_ms < kTouchEveryMs)
        return;
    ngx_shmtx_lock(g_mutex);
    HealthSlot *s = find_slot(hash, true);
    byok::KeyHealth h = to_health(*s);
    bool changed = byok::apply_outcome(h, o, now, until, policy);
    store(s, h, now);
    ngx_shmtx_unlock(g_mutex);
    if (!changed) return;
    const std::string id(key_id), provider(ctx->keys.provider);
    if (h.state == byok::HealthState::Invalid)
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      BYOK_LOG
                      "key %s of project \"%s\" for provider \"%s\" refused (%ui): invalid",
                      id.c_str(), pid.c_str(), provider.c_str(), status);
    publish(pid, provider, id, h);
}

void ngx_byok_last_used_flush() {
    ngx_byok_main_conf_t *mcf = ngx_byok_main_conf();
    if (g_last_used.empty() || mcf == nullptr || !ngx_byok_redis_available()) return;
    const byok::Layout &l = mcf->m->admin.layout;
    std::vector<std::string> argv;
    std::string_view pid;
    auto send = [&] {
        if (argv.size() > 2) ngx_byok_redis_send_noreply(argv);
        argv.clear();
    };
    for (const auto &[k, at] : g_last_used) {
        size_t nul = k.find('\0');
        std::string_view row_pid = std::string_view(k).substr(0, nul);
        if (argv.empty() || row_pid != pid) {
            send();
            pid = row_pid;
            argv = {"HSET", l.last_used(pid)};
        }
        argv.push_back(k.substr(nul + 1));
        argv.push_back(std::to_string(at));
    }
    send();
    g_last_used.clear();
    g_gateway_use.name.clear();
    g_key_use.name.clear();
}

std::string ngx_byok_health_metrics() {
    if (g_health == nullptr) return "";
    int64_t now = now_ms();
    size_t by_state[5] = {0, 0, 0, 0, 0};
    size_t expiring = 0;
    ngx_shmtx_lock(g_mutex);
    for (size_t i = 0; i < g_slots; i++) {
        const HealthSlot &s = g_health[i];
        if (s.hash == 0) continue;
        by_state[static_cast<int>(byok::effective_state(to_health(s), now))]++;
        if (s.expires_at != 0 && s.expires_at - now / 1000 <= kExpiringWindowS) expiring++;
    }
    ngx_shmtx_unlock(g_mutex);
    std::string out =
        "# HELP byok_key_health Provider keys this zone has seen answer, by health state.\n"
        "# TYPE byok_key_health gauge\n";
    for (int i = 1; i < 5; i++)
        out += "byok_key_health{state=\"" +
               std::string(byok::health_name(static_cast<byok::HealthState>(i))) + "\"} " +
               std::to_string(by_state[i]) + "\n";
    out +=
        "# HELP byok_keys_expiring Provider keys in use that expire within 7 days (or have).\n"
        "# TYPE byok_keys_expiring gauge\n"
        "byok_keys_expiring " +
        std::to_string(expiring) + "\n";
    return out;
}

// byok_key_health exhausted=1h cooling=30s max_fails=3 fail_timeout=10s breaker=30s;
char *ngx_byok_key_health_directive(ngx_conf_t *cf, ngx_command_t *, void *conf) {
    auto *mcf = static_cast<ngx_byok_main_conf_t *>(conf);
    auto *args = static_cast<ngx_str_t *>(cf->args->elts);
    std::vector<std::string_view> v;
    for (ngx_uint_t i = 1; i < cf->args->nelts; i++)
        v.emplace_back(reinterpret_cast<const char *>(args[i].data), args[i].len);
    mcf->m->key_health = byok::parse_health_policy(v);  // throws: guarded<> reports it
    return NGX_CONF_OK;
}
