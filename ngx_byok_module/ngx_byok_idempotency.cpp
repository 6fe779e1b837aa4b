// Idempotency-Key (issue 17 item 7): the table of keys seen in the last
// minute (lib/idempotency.h) lives in the cache zone, after the metrics, so
// every worker of the node sees the same keys; the zone's mutex guards it.
// A hash lookup in shared memory, never a Redis round trip.
#include "ngx_byok_module/ngx_byok.h"

#include "lib/idempotency.h"

namespace {

byok::SeenKey *g_slots = nullptr;
size_t g_nslots = 0;
ngx_shmtx_t *g_mutex = nullptr;

}  // namespace

size_t ngx_byok_idempotency_size(size_t zone_size) {
    // 1/64 of the zone, at most 8192 keys (128 KiB).
    size_t bytes = ngx_min(zone_size / 64, 8192 * sizeof(byok::SeenKey));
    return byok::seen_key_slots(bytes) * sizeof(byok::SeenKey);
}

void ngx_byok_idempotency_attach(void *area, size_t size, ngx_shmtx_t *mutex) {
    g_slots = static_cast<byok::SeenKey *>(area);
    g_nslots = size / sizeof(byok::SeenKey);
    g_mutex = mutex;
}

bool ngx_byok_idempotency_repeat(ngx_http_request_t *r, const u_char *key_sha) {
    std::string_view key;
    ngx_byok_each_header(r->headers_in.headers, [&](const ngx_table_elt_t &h) {
        if (ngx_byok_header_is(h, "idempotency-key")) key = sv(h.value);
        return key.empty();
    });
    if (g_slots == nullptr || key.empty()) return false;
    uint64_t tag = byok::idempotency_tag(key_sha, key);
    ngx_time_t *tp = ngx_timeofday();
    ngx_shmtx_lock(g_mutex);
    bool seen = byok::seen_before(g_slots, g_nslots, tag, (int64_t)tp->sec * 1000 + tp->msec);
    ngx_shmtx_unlock(g_mutex);
    return seen;
}
