// Per-worker caches of the cache-hit path (issue 18), in private memory:
//
// 1. Decoded snapshots. The shared zone holds each gateway key's snapshot in
//    its binary form; decoding it on every request cost more than the rest
//    of the lookup. Every entry the zone stores gets a version from a
//    zone-wide counter, so (key hash, version) names one immutable blob:
//    the worker keeps the decoded form under that name and uses it only
//    while the zone's lookup — which still decides fresh, stale, expired,
//    invalidated and the subscriber generation — returns that version.
//
// 2. Decrypted provider keys (SPEC §6): deriving the data key and opening
//    the record on every request was a tenth of the worker's time. A
//    plaintext lives only in a fixed arena that is mlock'ed (never swapped)
//    and MADV_DONTDUMP (never in a core dump), bound to the exact record it
//    came from (every field of the associated data and the ciphertext), and
//    is wiped (byok::wipe) when its snapshot entry is invalidated,
//    replaced or evicted, when its slot is reused, at TTL expiry (at most
//    the zone's ttl after it was decrypted), on a new subscriber generation
//    and at worker exit. When the arena cannot be locked or excluded from
//    dumps the worker decrypts per request, as before.
#include "ngx_byok_module/ngx_byok.h"

#include <sys/mman.h>

#include <array>
#include <list>
#include <unordered_map>

namespace {

constexpr size_t kMaxEntries = 4096;  // decoded snapshots per worker
constexpr size_t kSlots = 64;         // decrypted keys per worker
constexpr size_t kSlotSize = 512;     // bytes per key; longer keys are not cached
constexpr ngx_msec_t kSweepEvery = 1000;

using Sha = std::array<u_char, 32>;

struct ShaHash {
    size_t operator()(const Sha &s) const {
        size_t h;
        ngx_memcpy(&h, s.data(), sizeof(h));
        return h;
    }
};

struct Entry {
    Sha sha;
    uint64_t version = 0;
    uint64_t generation = 0;
    int64_t stale_until = 0;  // ms; past it the zone no longer serves the entry
    // Shared with the requests that use it: one that is still running when
    // the entry goes keeps its snapshot (never its plaintext keys: those
    // live in the slots, wiped with the entry).
    std::shared_ptr<const byok::GatewaySnapshot> snap;
    std::vector<int> slot;  // per snapshot key: its plaintext's slot, or -1
};

struct Slot {
    Entry *owner = nullptr;
    size_t key = 0;       // index into owner->snap.keys
    int64_t expires = 0;  // ms
    uint64_t used = 0;    // for eviction: the least recently used slot goes
    size_t len = 0;
};

std::list<Entry> g_lru;  // most recently used first
std::unordered_map<Sha, std::list<Entry>::iterator, ShaHash> g_index;
u_char *g_arena = nullptr;  // kSlots * kSlotSize, locked, not dumped
Slot g_slots[kSlots];
uint64_t g_tick = 0;
uint64_t g_drops = 0;  // entries dropped so far: a ByokKeyEntry taken before is stale
ngx_event_t g_sweep_ev;
bool g_active = false;

int64_t now_ms() {
    ngx_time_t *tp = ngx_timeofday();
    return (int64_t)tp->sec * 1000 + tp->msec;
}

Sha to_sha(const u_char *p) {
    Sha s;
    ngx_memcpy(s.data(), p, s.size());
    return s;
}

u_char *slot_bytes(size_t i) { return g_arena + i * kSlotSize; }

void wipe_slot(size_t i) {
    Slot &s = g_slots[i];
    byok::wipe(slot_bytes(i), kSlotSize);
    if (s.owner != nullptr && s.key < s.owner->slot.size()) s.owner->slot[s.key] = -1;
    s = Slot{};
}

void drop_entry(std::list<Entry>::iterator it) {
    for (int i : it->slot)
        if (i >= 0) wipe_slot((size_t)i);
    g_index.erase(it->sha);
    g_lru.erase(it);
    g_drops++;
}

Entry *find(const u_char *sha) {
    auto it = g_index.find(to_sha(sha));
    return it == g_index.end() ? nullptr : &*it->second;
}

// Same record: every input of the decryption (the binding and the sealed
// bytes) is equal, so the plaintext is the one this record opens to.
bool same_record(const byok::StoredKey &a, const byok::StoredKey &b) {
    return a.provider == b.provider && a.v == b.v && a.kid == b.kid && a.salt == b.salt &&
           a.nonce == b.nonce && a.ct == b.ct && a.endpoint == b.endpoint &&
           a.malformed == b.malformed;
}

int take_slot() {
    size_t pick = 0;
    for (size_t i = 0; i < kSlots; i++) {
        if (g_slots[i].owner == nullptr) {
            pick = i;
            break;
        }
        if (g_slots[i].used < g_slots[pick].used) pick = i;
    }
    wipe_slot(pick);  // eviction of the least recently used key
    return (int)pick;
}

void sweep(ngx_event_t *) {
    int64_t now = now_ms();
    uint64_t generation = ngx_byok_cache_generation();
    for (auto it = g_lru.begin(); it != g_lru.end();) {
        auto next = std::next(it);
        if (now >= it->stale_until || it->generation != generation) {
            drop_entry(it);
        } else {
            for (int i : it->slot)
                if (i >= 0 && now >= g_slots[i].expires) wipe_slot((size_t)i);
        }
        it = next;
    }
    if (g_active && !ngx_exiting) ngx_add_timer(&g_sweep_ev, kSweepEvery);
}

// Issue 18: the heap block of the last request's provider key,
// wiped (SecretString::clear wipes its whole capacity) and kept for the next
// one, so a hit copies its key out of the arena without a malloc. It holds
// no secret between requests.
byok::SecretString g_key_block;

}  // namespace

void ngx_byok_keycache_init_process(ngx_cycle_t *cycle) {
    g_sweep_ev.handler = sweep;
    g_sweep_ev.log = cycle->log;
    g_sweep_ev.cancelable = 1;
    g_active = true;
    ngx_add_timer(&g_sweep_ev, kSweepEvery);
    void *p = mmap(nullptr, kSlots * kSlotSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED) return;
    if (madvise(p, kSlots * kSlotSize, MADV_DONTDUMP) != 0 || mlock(p, kSlots * kSlotSize) != 0) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, ngx_errno,
                      BYOK_LOG
                      "provider keys are decrypted per request: cannot lock or exclude "
                      "the key cache from core dumps");
        munmap(p, kSlots * kSlotSize);
        return;
    }
    g_arena = static_cast<u_char *>(p);
}

void ngx_byok_keycache_clear() {
    while (!g_lru.empty()) drop_entry(g_lru.begin());
}

void ngx_byok_keycache_exit_process() {
    g_active = false;
    g_key_block = byok::SecretString();
    if (g_sweep_ev.timer_set) ngx_del_timer(&g_sweep_ev);
    ngx_byok_keycache_clear();
    if (g_arena != nullptr) {
        byok::wipe(g_arena, kSlots * kSlotSize);
        munlock(g_arena, kSlots * kSlotSize);
        munmap(g_arena, kSlots * kSlotSize);
        g_arena = nullptr;
    }
}

std::shared_ptr<const byok::GatewaySnapshot> ngx_byok_keycache_snapshot(const u_char *sha,
                                                                        uint64_t version,
                                                                        ByokKeyEntry *found) {
    auto it = g_index.find(to_sha(sha));
    if (it == g_index.end()) return nullptr;
    if (it->second->version != version) {
        drop_entry(it->second);  // replaced in the zone: its keys go now
        return nullptr;
    }
    if (it->second != g_lru.begin()) g_lru.splice(g_lru.begin(), g_lru, it->second);
    *found = {&*it->second, g_drops};
    return it->second->snap;
}

std::shared_ptr<const byok::GatewaySnapshot> ngx_byok_keycache_store(
    const u_char *sha, uint64_t version, uint64_t generation, int64_t stale_until,
    byok::GatewaySnapshot snap, ByokKeyEntry *stored) {
    auto old = g_index.find(to_sha(sha));
    if (old != g_index.end()) drop_entry(old->second);
    if (g_lru.size() >= kMaxEntries) drop_entry(std::prev(g_lru.end()));
    g_lru.emplace_front();
    Entry &e = g_lru.front();
    e.sha = to_sha(sha);
    e.version = version;
    e.generation = generation;
    e.stale_until = stale_until;
    e.snap = std::make_shared<const byok::GatewaySnapshot>(std::move(snap));
    e.slot.assign(e.snap->keys.size(), -1);
    try {
        g_index.emplace(e.sha, g_lru.begin());
    } catch (...) {
        g_lru.pop_front();
        throw;
    }
    *stored = {&e, g_drops};
    return e.snap;
}

void ngx_byok_keycache_keep_block(byok::SecretString *key) {
    if (key->empty() || key->size() > kSlotSize) return;
    key->clear();  // the wipe the key's destructor would make
    // Both hold wiped bytes only: the block goes to g_key_block, and a block
    // g_key_block still held goes to `key`, whose destructor frees it.
    g_key_block.take(*key);
}

void ngx_byok_keycache_open(const u_char *sha, const ByokKeyEntry &hint, const byok::KeyRing &ring,
                            std::string_view pid, const byok::StoredKey &k,
                            byok::SecretString *out) {
    Entry *e = nullptr;
    if (g_arena != nullptr) {
        bool valid = hint.entry != nullptr && hint.drops == g_drops;
        e = valid ? static_cast<Entry *>(const_cast<void *>(hint.entry)) : find(sha);
    }
    size_t idx = 0;
    if (e != nullptr) {
        const std::vector<byok::StoredKey> &keys = e->snap->keys;
        auto at = reinterpret_cast<uintptr_t>(&k), first = reinterpret_cast<uintptr_t>(keys.data());
        if (at >= first && at < first + keys.size() * sizeof(byok::StoredKey)) {
            idx = (at - first) / sizeof(byok::StoredKey);  // a record of this very snapshot
        } else {
            while (idx < keys.size() && !same_record(keys[idx], k)) idx++;
        }
        if (idx == keys.size() || e->snap->project != pid) e = nullptr;
    }
    int64_t now = now_ms();
    if (e != nullptr && e->slot[idx] >= 0) {
        Slot &s = g_slots[e->slot[idx]];
        if (now < s.expires) {
            s.used = ++g_tick;
            // `*out` is empty and the block wiped: taken over (no copy, no
            // wipe needed; a block `*out` held goes to g_key_block)
            if (out->empty()) out->take(g_key_block);
            out->mutable_str().assign((const char *)slot_bytes((size_t)e->slot[idx]), s.len);
            return;
        }
        wipe_slot((size_t)e->slot[idx]);
    }
    *out = byok::open_stored_key(ring, pid, k);
    const byok::SecretString &key = *out;
    ngx_byok_main_conf_t *mcf = ngx_byok_main_conf();
    if (e != nullptr && key.size() <= kSlotSize && mcf != nullptr && mcf->ttl > 0) {
        int i = take_slot();
        ngx_memcpy(slot_bytes((size_t)i), key.data(), key.size());
        g_slots[i] = Slot{e, idx, now + (int64_t)mcf->ttl * 1000, ++g_tick, key.size()};
        e->slot[idx] = i;
    }
}

void ngx_byok_keycache_invalidate(std::string_view pid) {
    for (auto it = g_lru.begin(); it != g_lru.end();) {
        auto next = std::next(it);
        if (it->snap->project == pid) drop_entry(it);
        it = next;
    }
}

size_t ngx_byok_keycache_keys() {
    size_t n = 0;
    for (const Slot &s : g_slots) n += s.owner != nullptr;
    return n;
}

void ngx_byok_wipe_upstream_request(ngx_http_request_t *r) {
    // The proxy module's request buffer is the first link (request line and
    // headers); the links after it are the client's body, which a fallback
    // attempt sends again.
    ngx_http_upstream_t *u = r->upstream;
    if (u == nullptr || u->request_bufs == nullptr || u->request_bufs->buf == nullptr) return;
    ngx_buf_t *b = u->request_bufs->buf;
    if (!b->temporary || b->start == nullptr) return;
    u_char *from = ngx_min(b->start, b->pos), *to = ngx_max(b->last, b->pos);
    if (to > from) byok::wipe(from, (size_t)(to - from));
}
