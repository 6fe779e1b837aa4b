// Internal to the Redis adapter (ngx_byok_redis*.cpp): one link to a Redis
// server or sentinel on nginx's event loop. Files:
//   ngx_byok_redis_link.cpp   connection, TLS, RESP I/O, deadlines, reconnect
//   ngx_byok_redis_setup.cpp  what a new link says (AUTH, SELECT, SUBSCRIBE,
//                             ROLE), pub/sub invalidation, Sentinel discovery
//   ngx_byok_redis.cpp        the command API for requests, the queue that
//                             holds commands while the command link is away
//   ngx_byok_redis_cluster.cpp  Redis Cluster: slot map, one link per
//                             primary, MOVED / ASK / TRYAGAIN, subscriber
#pragma once

#include "ngx_byok_module/ngx_byok.h"

#include <deque>

extern "C" {
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
}

namespace ngx_byok_redis {

struct RedisLink;
// reply == nullptr: the link went away before the reply came.
using ReplyFn = void (*)(RedisLink *link, redisReply *reply, void *data);

struct Pending {
    ReplyFn fn;
    void *data;
    ngx_msec_t deadline;
};

struct RedisLink {
    const char *name = "";
    ngx_connection_t *c = nullptr;
    redisReader *reader = nullptr;
    std::string obuf;
    ngx_str_t peer_name{};
    bool connecting = false;  // TCP connect / TLS handshake in progress
    bool ready = false;       // set up (AUTH, SELECT, ... answered)
    unsigned gen = 0;         // bumped on every drop: stale callbacks notice
    std::deque<Pending> pending;
    ngx_event_t reconnect_ev{};
    ngx_event_t timeout_ev{};
    ngx_msec_t backoff = 0;
    ReplyFn on_push = nullptr;  // unsolicited replies (pub/sub messages)
    // Where it connects when set (cluster nodes, the cluster subscriber);
    // else link_target() decides (the server, Sentinel's primary).
    const ByokMain::RedisAddr *target = nullptr;
    void (*on_ready)(RedisLink *link) = nullptr;  // set up: may carry commands
    void (*on_drop)(RedisLink *link) = nullptr;   // dropped or connect failed
    bool retired = false;  // no reconnect after a drop (a node no longer used)
};

extern RedisLink g_cmd;       // commands of requests and of the worker
extern RedisLink g_sub;       // SUBSCRIBE byok:invalidate
extern RedisLink g_sentinel;  // sentinel mode: names the primary
extern ngx_log_t *g_log;
extern bool g_exiting;
extern ngx_byok_main_conf_t *g_mcf;

// --- ngx_byok_redis_link.cpp
void init_link(RedisLink *link, const char *name, ReplyFn on_push);
void link_connect(RedisLink *link);
// Closes the connection, fails every pending command and (unless the worker
// is exiting) schedules a reconnect.
void drop_link(RedisLink *link, const char *why);
// Queues one command on the link; throws std::bad_alloc.
void send_command(RedisLink *link, const std::vector<std::string> &args, ReplyFn fn, void *data,
                  ngx_msec_t timeout);
// Queues `commands` whole commands already in RESP, each answered to fn
// with `data`; throws std::bad_alloc (the link must then be dropped: its
// buffer may hold part of them).
void send_raw(RedisLink *link, std::string_view resp, size_t commands, ReplyFn fn, void *data,
              ngx_msec_t timeout);
// Replies of setup commands; data != nullptr marks the last one: the link
// is ready after it.
void setup_reply(RedisLink *link, redisReply *reply, void *data);
bool is_str(const redisReply *r, std::string_view s);
// The command in RESP (redisFormatCommandArgv); throws std::bad_alloc.
std::string format_command(const std::vector<std::string> &args);

// --- ngx_byok_redis_setup.cpp
bool sentinel_mode();
// An IP literal and a port as an address; false when they are not.
bool make_addr(const std::string &ip, const std::string &port, ByokMain::RedisAddr *out);
void send_setup(RedisLink *link);
// Where the link connects to; nullptr: sentinel mode, primary not known yet.
const ByokMain::RedisAddr *link_target(RedisLink *link);
void links_init_process();  // init and connect every link of the worker

// --- ngx_byok_redis.cpp
void command_link_ready(RedisLink *);  // sends the commands queued while it was away
byok::admin::Reply convert(const redisReply *r);
// Hands a reply (nullptr: none came) to the waiter, or counts a failed fire
// and forget (w == nullptr); the one place that decides what a reply means
// to the caller.
void finish_waiter(ByokRedisWaiter *w, redisReply *r);

// --- ngx_byok_redis_cluster.cpp (byok_redis cluster=)
bool cluster_mode();
void cluster_init_process();  // the seeds, the subscriber's node, the first slot map
void cluster_exit_process();
bool cluster_available();  // a slot map and a ready node
// Routes one command by its first key (lib/cluster_route.h); keyless
// commands go to node `near` (the node of the write a WAIT follows) or any.
// false: not accepted (too many waiting, out of memory).
bool cluster_send(const std::vector<std::string> &argv, ByokRedisWaiter *w, int near);
// Whole commands already in RESP, each routed on its own, fire and forget.
void cluster_send_raw(std::string_view resp, size_t commands);

// --- ngx_byok_redis_background.cpp (the worker's own fire-and-forget commands)
void background_link_ready();  // the command link is (again) ready: send what waits
void background_exit();        // the worker exits: drop what waits

}  // namespace ngx_byok_redis
