// Shared-memory cache: gateway-key sha256 -> encoded GatewaySnapshot (pid,
// settings, encrypted records; never plaintext). Two red-black trees index
// the same nodes — by key hash for lookups and by project id for
// invalidation — and an LRU queue evicts when the slab pool is full. The
// module's metrics live in the same zone.
//
// Invalidations arrive by pub/sub, which loses messages while a subscriber
// is disconnected. Every (re)subscription therefore bumps the zone's
// generation; an entry stamped with an older one is not trusted — neither
// fresh nor stale — and the next request revalidates it in Redis.
//
// Unknown keys are cached too (against repeated guesses), but they live on
// their own LRU queue under their own cap (1/8 of the zone): a flood of
// random keys evicts only other unknown keys, never a tenant's entry. The
// per-address buckets of the unknown-key lookup limit live in a third tree,
// with a cap and an LRU of their own.
#include "ngx_byok_module/ngx_byok.h"

#include "lib/ratelimit.h"

namespace {

struct CacheNode {
    ngx_rbtree_node_t by_key;  // must stay first: lookups cast from it
    ngx_rbtree_node_t by_pid;
    ngx_queue_t lru;
    u_char sha[32];
    int64_t fresh_until;  // ms since epoch
    int64_t stale_until;
    uint64_t generation;  // the zone's generation when its Redis read was sent
    uint64_t version;     // unique per stored blob: names it in the workers' caches
    uint32_t pid_len;
    uint32_t blob_len;
    u_char data[1];  // pid, then blob
};

// One client address's unknown-key lookup bucket.
struct AddrNode {
    ngx_rbtree_node_t node;  // must stay first
    ngx_queue_t lru;
    byok::LeakyBucket bucket;
    u_char len;
    u_char addr[16];
};

struct CacheShm {
    ngx_rbtree_t by_key;
    ngx_rbtree_node_t key_sentinel;
    ngx_rbtree_t by_pid;
    ngx_rbtree_node_t pid_sentinel;
    ngx_queue_t lru;      // entries of known keys
    ngx_queue_t neg_lru;  // entries of unknown keys
    ngx_atomic_t entries;
    ngx_atomic_t negatives;
    ngx_atomic_t max_negatives;
    ngx_rbtree_t by_addr;
    ngx_rbtree_node_t addr_sentinel;
    ngx_queue_t addr_lru;
    ngx_atomic_t addrs;
    ngx_atomic_t max_addrs;
    ngx_atomic_t generation;  // bumped on every (re)subscription
    uint64_t versions;        // last CacheNode::version handed out (under the lock)
    // the tail follows (tail_layout())
};

// The zone's tail after CacheShm, each part 8-byte aligned: metrics, limit
// counters (issue 13), key health (issue 14), the Idempotency-Key table
// (issue 17). Offsets from the start of CacheShm.
struct TailLayout {
    size_t metrics, limits, health, idempotency, end;
};

TailLayout tail_layout(size_t zone_size) {
    TailLayout t;
    t.metrics = ngx_align(sizeof(CacheShm), 8);
    t.limits = ngx_align(t.metrics + ngx_byok_metrics_size(), 8);
    t.health = ngx_align(t.limits + ngx_byok_limits_size(zone_size), 8);
    t.idempotency = ngx_align(t.health + ngx_byok_health_size(zone_size), 8);
    t.end = t.idempotency + ngx_byok_idempotency_size(zone_size);
    return t;
}

struct CacheCtx {
    CacheShm *sh;
    ngx_slab_pool_t *shpool;
};

// One zone per configuration; static because init_zone runs before the new
// cycle owns a pool we could allocate from.
CacheCtx g_cache_storage;
CacheCtx *g_cache = nullptr;

int64_t now_ms() {
    ngx_time_t *tp = ngx_timeofday();
    return (int64_t)tp->sec * 1000 + tp->msec;
}

CacheNode *from_pid_node(ngx_rbtree_node_t *n) {
    return reinterpret_cast<CacheNode *>(reinterpret_cast<u_char *>(n) -
                                         offsetof(CacheNode, by_pid));
}

uint32_t key_hash(const u_char *sha) {
    uint32_t h;
    ngx_memcpy(&h, sha, sizeof(h));
    return h;
}

void insert_by_key(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel) {
    ngx_rbtree_node_t **p;
    for (;;) {
        if (node->key != temp->key) {
            p = node->key < temp->key ? &temp->left : &temp->right;
        } else {
            auto *a = reinterpret_cast<CacheNode *>(node), *b = reinterpret_cast<CacheNode *>(temp);
            p = ngx_memcmp(a->sha, b->sha, 32) < 0 ? &temp->left : &temp->right;
        }
        if (*p == sentinel) break;
        temp = *p;
    }
    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}

CacheNode *lookup(const u_char *sha) {
    uint32_t h = key_hash(sha);
    ngx_rbtree_node_t *node = g_cache->sh->by_key.root, *sentinel = g_cache->sh->by_key.sentinel;
    while (node != sentinel) {
        if (h != node->key) {
            node = h < node->key ? node->left : node->right;
            continue;
        }
        auto *cn = reinterpret_cast<CacheNode *>(node);
        int rc = ngx_memcmp(sha, cn->sha, 32);
        if (rc == 0) return cn;
        node = rc < 0 ? node->left : node->right;
    }
    return nullptr;
}

void remove_node(CacheNode *cn) {
    ngx_rbtree_delete(&g_cache->sh->by_key, &cn->by_key);
    ngx_rbtree_delete(&g_cache->sh->by_pid, &cn->by_pid);
    ngx_queue_remove(&cn->lru);
    if (cn->pid_len == 0) g_cache->sh->negatives--;
    ngx_slab_free_locked(g_cache->shpool, cn);
    g_cache->sh->entries--;
}

ngx_queue_t *queue_of(const CacheNode *cn) {
    return cn->pid_len == 0 ? &g_cache->sh->neg_lru : &g_cache->sh->lru;
}

// Frees the least recently used entry of `q`; false when it is empty.
bool evict_from(ngx_queue_t *q) {
    if (ngx_queue_empty(q)) return false;
    remove_node(ngx_queue_data(ngx_queue_last(q), CacheNode, lru));
    return true;
}

// Collects nodes whose pid hash equals `h` (duplicates may sit on both sides
// after rotations, so this walks every subtree that can hold the key).
void collect_pid(ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel, ngx_rbtree_key_t h,
                 std::string_view pid, std::vector<CacheNode *> *out) {
    while (node != sentinel) {
        if (h < node->key) {
            node = node->left;
        } else if (h > node->key) {
            node = node->right;
        } else {
            CacheNode *cn = from_pid_node(node);
            if (std::string_view((const char *)cn->data, cn->pid_len) == pid) out->push_back(cn);
            collect_pid(node->left, sentinel, h, pid, out);
            node = node->right;
        }
    }
}

int addr_cmp(const AddrNode *a, const u_char *addr, size_t len) {
    if (a->len != len) return a->len < len ? 1 : -1;
    return ngx_memcmp(addr, a->addr, len);
}

void insert_by_addr(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel) {
    ngx_rbtree_node_t **p;
    auto *n = reinterpret_cast<AddrNode *>(node);
    for (;;) {
        if (node->key != temp->key) {
            p = node->key < temp->key ? &temp->left : &temp->right;
        } else {
            p = addr_cmp(reinterpret_cast<AddrNode *>(temp), n->addr, n->len) < 0 ? &temp->left
                                                                                  : &temp->right;
        }
        if (*p == sentinel) break;
        temp = *p;
    }
    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}

// The bucket of `addr`, created (evicting the least recently used one at
// the cap) when absent; nullptr when the zone has no room.
AddrNode *addr_node(const u_char *addr, size_t len) {
    CacheShm *sh = g_cache->sh;
    uint32_t h = ngx_crc32_short((u_char *)addr, len);
    ngx_rbtree_node_t *node = sh->by_addr.root, *sentinel = sh->by_addr.sentinel;
    while (node != sentinel) {
        if (h != node->key) {
            node = h < node->key ? node->left : node->right;
            continue;
        }
        auto *an = reinterpret_cast<AddrNode *>(node);
        int rc = addr_cmp(an, addr, len);
        if (rc == 0) {
            ngx_queue_remove(&an->lru);
            ngx_queue_insert_head(&sh->addr_lru, &an->lru);
            return an;
        }
        node = rc < 0 ? node->left : node->right;
    }
    if (sh->addrs >= sh->max_addrs && !ngx_queue_empty(&sh->addr_lru)) {
        auto *old = ngx_queue_data(ngx_queue_last(&sh->addr_lru), AddrNode, lru);
        ngx_rbtree_delete(&sh->by_addr, &old->node);
        ngx_queue_remove(&old->lru);
        ngx_slab_free_locked(g_cache->shpool, old);
        sh->addrs--;
    }
    auto *an = static_cast<AddrNode *>(ngx_slab_calloc_locked(g_cache->shpool, sizeof(AddrNode)));
    if (an == nullptr && evict_from(&sh->neg_lru))
        an = static_cast<AddrNode *>(ngx_slab_calloc_locked(g_cache->shpool, sizeof(AddrNode)));
    if (an == nullptr) return nullptr;
    an->node.key = h;
    an->len = (u_char)len;
    ngx_memcpy(an->addr, addr, len);
    ngx_rbtree_insert(&sh->by_addr, &an->node);
    ngx_queue_insert_head(&sh->addr_lru, &an->lru);
    sh->addrs++;
    return an;
}

// `addr` of the client as bytes (4 or 16; empty for unix sockets).
size_t client_addr(ngx_connection_t *c, u_char out[16]) {
    switch (c->sockaddr->sa_family) {
        case AF_INET:
            ngx_memcpy(out, &reinterpret_cast<sockaddr_in *>(c->sockaddr)->sin_addr, 4);
            return 4;
#if (NGX_HAVE_INET6)
        case AF_INET6:
            ngx_memcpy(out, &reinterpret_cast<sockaddr_in6 *>(c->sockaddr)->sin6_addr, 16);
            return 16;
#endif
        default:
            return 0;
    }
}

}  // namespace

ngx_int_t ngx_byok_cache_init_zone(ngx_shm_zone_t *zone, void *data) {
    auto *old = static_cast<CacheCtx *>(data);
    auto *shpool = reinterpret_cast<ngx_slab_pool_t *>(zone->shm.addr);
    CacheShm *old_sh = old != nullptr && old != (void *)1 ? old->sh : nullptr;
    CacheCtx *ctx = &g_cache_storage;
    ctx->shpool = shpool;

    if (old_sh != nullptr) {
        ctx->sh = old_sh;
    } else if (zone->shm.exists) {
        ctx->sh = static_cast<CacheShm *>(shpool->data);
    } else {
        size_t size = tail_layout(zone->shm.size).end;
        ctx->sh = static_cast<CacheShm *>(ngx_slab_calloc(shpool, size));
        if (ctx->sh == nullptr) return NGX_ERROR;
        shpool->data = ctx->sh;
        ngx_rbtree_init(&ctx->sh->by_key, &ctx->sh->key_sentinel, insert_by_key);
        ngx_rbtree_init(&ctx->sh->by_pid, &ctx->sh->pid_sentinel, ngx_rbtree_insert_value);
        ngx_rbtree_init(&ctx->sh->by_addr, &ctx->sh->addr_sentinel, insert_by_addr);
        ngx_queue_init(&ctx->sh->lru);
        ngx_queue_init(&ctx->sh->neg_lru);
        ngx_queue_init(&ctx->sh->addr_lru);
        // Budgets in entries (a slab chunk of 128 bytes each, roughly): 1/8
        // of the zone for unknown keys, 1/16 for address buckets.
        size_t chunks = zone->shm.size / 128;
        ctx->sh->max_negatives = ngx_max(chunks / 8, 16);
        ctx->sh->max_addrs = ngx_max(chunks / 16, 16);
        shpool->log_nomem = 0;  // eviction handles it
    }
    zone->data = ctx;
    g_cache = ctx;
    TailLayout t = tail_layout(zone->shm.size);
    u_char *base = reinterpret_cast<u_char *>(ctx->sh);
    ngx_byok_metrics_attach(base + t.metrics);
    ngx_byok_limits_attach(base + t.limits, zone->shm.size, shpool);
    ngx_byok_health_attach(base + t.health, zone->shm.size, &shpool->mutex);
    ngx_byok_idempotency_attach(base + t.idempotency, ngx_byok_idempotency_size(zone->shm.size),
                                &shpool->mutex);
    return NGX_OK;
}

ByokCacheResult ngx_byok_cache_get_snapshot(const u_char *key_sha,
                                            std::shared_ptr<const byok::GatewaySnapshot> *snap,
                                            std::string *stale_blob, ByokKeyEntry *entry) {
    if (g_cache == nullptr) return ByokCacheResult::Miss;
    int64_t now = now_ms();
    ByokCacheResult res = ByokCacheResult::Miss;
    uint64_t version = 0, generation = 0;
    int64_t stale_until = 0;
    std::shared_ptr<const byok::GatewaySnapshot> decoded;
    std::string blob;
    ngx_shmtx_lock(&g_cache->shpool->mutex);
    CacheNode *cn = lookup(key_sha);
    if (cn != nullptr) {
        if (cn->generation == g_cache->sh->generation &&
            (now < cn->fresh_until || now < cn->stale_until)) {
            res = now < cn->fresh_until ? ByokCacheResult::Fresh : ByokCacheResult::Stale;
            version = cn->version;
            generation = cn->generation;
            stale_until = cn->stale_until;
            // The worker's decoded copy of exactly this blob, when it has one.
            if (res == ByokCacheResult::Fresh)
                decoded = ngx_byok_keycache_snapshot(key_sha, version, entry);
            if (decoded == nullptr) {
                try {
                    blob.assign((const char *)cn->data + cn->pid_len, cn->blob_len);
                } catch (...) {
                    ngx_shmtx_unlock(&g_cache->shpool->mutex);
                    throw;
                }
            }
            ngx_queue_remove(&cn->lru);
            ngx_queue_insert_head(queue_of(cn), &cn->lru);
        } else {
            remove_node(cn);
        }
    }
    ngx_shmtx_unlock(&g_cache->shpool->mutex);
    ngx_byok_count(res == ByokCacheResult::Fresh   ? BYOK_CACHE_HIT
                   : res == ByokCacheResult::Stale ? BYOK_CACHE_STALE
                                                   : BYOK_CACHE_MISS);
    if (res == ByokCacheResult::Fresh) {
        if (decoded == nullptr)
            decoded = ngx_byok_keycache_store(key_sha, version, generation, stale_until,
                                              byok::decode_snapshot(blob), entry);
        *snap = std::move(decoded);
    } else if (res == ByokCacheResult::Stale) {
        *stale_blob = std::move(blob);
    }
    return res;
}

void ngx_byok_cache_put(const u_char *key_sha, std::string_view pid, std::string_view blob,
                        time_t ttl, uint64_t generation) {
    if (g_cache == nullptr) return;
    ngx_byok_main_conf_t *mcf = ngx_byok_main_conf();
    size_t size = offsetof(CacheNode, data) + pid.size() + blob.size();
    int64_t now = now_ms();

    ngx_shmtx_lock(&g_cache->shpool->mutex);
    CacheNode *old = lookup(key_sha);
    if (old != nullptr) remove_node(old);
    bool negative = pid.empty();
    if (negative && g_cache->sh->negatives >= g_cache->sh->max_negatives)
        evict_from(&g_cache->sh->neg_lru);
    CacheNode *cn;
    for (int evicted = 0;; evicted++) {
        cn = static_cast<CacheNode *>(ngx_slab_alloc_locked(g_cache->shpool, size));
        if (cn != nullptr || evicted == 64) break;
        // Unknown keys go first, and only they make room for unknown keys.
        if (!evict_from(&g_cache->sh->neg_lru) && (negative || !evict_from(&g_cache->sh->lru)))
            break;
    }
    if (cn != nullptr) {
        ngx_memcpy(cn->sha, key_sha, 32);
        cn->by_key.key = key_hash(key_sha);
        cn->by_pid.key = ngx_crc32_short((u_char *)pid.data(), pid.size());
        cn->fresh_until = now + (int64_t)ttl * 1000;
        cn->stale_until = cn->fresh_until + (int64_t)(mcf ? mcf->stale : 0) * 1000;
        cn->generation = generation;
        cn->version = ++g_cache->sh->versions;
        cn->pid_len = (uint32_t)pid.size();
        cn->blob_len = (uint32_t)blob.size();
        ngx_memcpy(cn->data, pid.data(), pid.size());
        ngx_memcpy(cn->data + pid.size(), blob.data(), blob.size());
        ngx_rbtree_insert(&g_cache->sh->by_key, &cn->by_key);
        ngx_rbtree_insert(&g_cache->sh->by_pid, &cn->by_pid);
        ngx_queue_insert_head(queue_of(cn), &cn->lru);
        g_cache->sh->entries++;
        if (negative) g_cache->sh->negatives++;
    }
    ngx_shmtx_unlock(&g_cache->shpool->mutex);
}

void ngx_byok_cache_invalidate(std::string_view pid) {
    if (g_cache == nullptr || pid.empty()) return;
    std::vector<CacheNode *> victims;
    ngx_rbtree_key_t h = ngx_crc32_short((u_char *)pid.data(), pid.size());
    ngx_shmtx_lock(&g_cache->shpool->mutex);
    try {
        collect_pid(g_cache->sh->by_pid.root, g_cache->sh->by_pid.sentinel, h, pid, &victims);
    } catch (const std::exception &) {
        // out of memory: the TTL remains the backstop
    }
    for (CacheNode *cn : victims) remove_node(cn);
    ngx_shmtx_unlock(&g_cache->shpool->mutex);
    ngx_byok_keycache_invalidate(pid);  // this worker's decoded copies and plaintext keys
}

size_t ngx_byok_cache_entries() { return g_cache ? g_cache->sh->entries : 0; }

uint64_t ngx_byok_cache_generation() { return g_cache ? g_cache->sh->generation : 0; }

void ngx_byok_cache_new_generation() {
    if (g_cache != nullptr) ngx_atomic_fetch_add(&g_cache->sh->generation, 1);
    ngx_byok_keycache_clear();  // the other workers drop theirs at their next sweep
}

namespace {

// Runs f(bucket, limit, now) on the client address's bucket under the zone
// lock; does nothing when the limit is off or the zone has no room.
template <class F>
void with_bucket(ngx_connection_t *c, F f) {
    ngx_byok_main_conf_t *mcf = ngx_byok_main_conf();
    if (g_cache == nullptr || mcf == nullptr || mcf->unknown_key_rate == 0) return;
    byok::RateLimit lim{(int64_t)mcf->unknown_key_rate, (int64_t)mcf->unknown_key_burst};
    u_char addr[16];
    size_t len = client_addr(c, addr);
    int64_t now = now_ms();
    ngx_shmtx_lock(&g_cache->shpool->mutex);
    AddrNode *an = addr_node(addr, len);
    if (an != nullptr) f(an->bucket, lim, now);
    ngx_shmtx_unlock(&g_cache->shpool->mutex);
}

}  // namespace

int64_t ngx_byok_cache_lookup_wait(ngx_connection_t *c) {
    int64_t wait = 0;
    with_bucket(c, [&](byok::LeakyBucket &b, const byok::RateLimit &lim, int64_t now) {
        wait = byok::bucket_wait(b, lim, now);
    });
    return wait;
}

void ngx_byok_cache_charge_unknown(ngx_connection_t *c) {
    with_bucket(c, [](byok::LeakyBucket &b, const byok::RateLimit &lim, int64_t now) {
        byok::bucket_charge(b, lim, now);
    });
}
