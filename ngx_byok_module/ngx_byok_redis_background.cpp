// The worker's own fire-and-forget Redis commands (ngx_byok.h:
// ngx_byok_redis_send_noreply / _raw_noreply): the usage flush (HINCRBY and
// EXPIRE per counter row, usage-event batches), key health, last-used times,
// limit-counter expiries.
//
// Issue 18 (cold path): Redis answers a connection in order, so a request's
// command (a cache-miss lookup) sent after a whole flush ran only when Redis
// had run all of it — with a few thousand projects a second, tens of
// milliseconds once a second. These commands therefore go out at most
// kInFlight unanswered at a time, the rest waiting here in order (bounded):
// a request's command waits behind at most that window. In cluster mode
// they are routed by slot like every command (one link per node; the window
// is not applied there yet).
#include "ngx_byok_module/ngx_byok_redis_link.h"

using namespace ngx_byok_redis;

namespace {

constexpr size_t kInFlight = 64;
constexpr size_t kMaxBytes = 64u << 20;  // beyond this, commands are dropped (counted)

struct Background {
    std::string resp;  // whole commands in RESP
    size_t commands;
};
std::deque<Background> g_waiting;
size_t g_waiting_bytes = 0;
size_t g_in_flight = 0;

void pump();

void reply(RedisLink *, redisReply *r, void *) {
    if (r == nullptr || r->type == REDIS_REPLY_ERROR) ngx_byok_count(BYOK_REDIS_ERROR);
    if (g_in_flight > 0) g_in_flight--;
    pump();
}

void pump() {
    while (g_cmd.ready && !g_exiting && !g_waiting.empty() && g_in_flight < kInFlight) {
        Background &b = g_waiting.front();
        try {
            send_raw(&g_cmd, b.resp, b.commands, reply, nullptr, g_mcf->redis_timeout);
        } catch (const std::exception &) {
            drop_link(&g_cmd, "out of memory");  // the buffer may hold a partial command
            return;
        }
        g_in_flight += b.commands;
        g_waiting_bytes -= b.resp.size();
        g_waiting.pop_front();
    }
}

// Throws std::bad_alloc.
void queue(std::string resp, size_t commands) {
    if (g_waiting_bytes + resp.size() > kMaxBytes) {
        ngx_byok_count(BYOK_REDIS_ERROR);
        return;
    }
    g_waiting_bytes += resp.size();
    g_waiting.push_back({std::move(resp), commands});
    pump();
}

}  // namespace

void ngx_byok_redis::background_link_ready() {
    g_in_flight = 0;  // the old link's were failed when it dropped
    pump();
}

void ngx_byok_redis::background_exit() {
    g_waiting.clear();
    g_waiting_bytes = 0;
    g_in_flight = 0;
}

// Issue 18, graceful stop: the usage flush keeps an exiting
// worker up until what it sent is answered. Cluster mode is not tracked
// (true at once: its final flush is sent, not awaited).
bool ngx_byok_redis_noreply_drained() {
    if (cluster_mode()) return true;
    return g_waiting.empty() && g_cmd.pending.empty() && g_cmd.obuf.empty();
}

void ngx_byok_redis_send_noreply(const std::vector<std::string> &argv) {
    if (cluster_mode()) {  // issue 16: routed by slot (ngx_byok_redis_cluster.cpp)
        if (!cluster_send(argv, nullptr, -1)) ngx_byok_count(BYOK_REDIS_ERROR);
        return;
    }
    if (!g_cmd.ready) {
        ngx_byok_count(BYOK_REDIS_ERROR);
        return;
    }
    char *cmd = nullptr;
    try {
        std::vector<const char *> ptr;
        std::vector<size_t> len;
        ptr.reserve(argv.size());
        len.reserve(argv.size());
        for (const auto &a : argv) {
            ptr.push_back(a.data());
            len.push_back(a.size());
        }
        int n = redisFormatCommandArgv(&cmd, (int)argv.size(), ptr.data(), len.data());
        if (n < 0) throw std::bad_alloc();
        queue(std::string(cmd, (size_t)n), 1);
    } catch (const std::exception &) {
        ngx_byok_count(BYOK_REDIS_ERROR);
    }
    if (cmd != nullptr) redisFreeCommand(cmd);
}

void ngx_byok_redis_send_raw_noreply(std::string_view resp, size_t commands) {
    if (cluster_mode()) {  // issue 16: each command to its slot's node
        cluster_send_raw(resp, commands);
        return;
    }
    if (!g_cmd.ready || commands == 0) {
        ngx_byok_count(BYOK_REDIS_ERROR);
        return;
    }
    try {
        queue(std::string(resp), commands);
    } catch (const std::exception &) {
        ngx_byok_count(BYOK_REDIS_ERROR);
    }
}
