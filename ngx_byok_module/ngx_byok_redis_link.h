// Internal to the Redis adapter (ngx_byok_redis*.cpp): one link to a Redis
// server or sentinel on nginx's event loop. Files:
//   ngx_byok_redis_link.cpp   connection, TLS, RESP I/O, deadlines, reconnect
//   ngx_byok_redis_setup.cpp  what a new link says (AUTH, SELECT, SUBSCRIBE,
//                             ROLE), pub/sub invalidation, Sentinel discovery
//   ngx_byok_redis.cpp        the command API for requests, the queue that
//                             holds commands while the command link is away
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

// --- ngx_byok_redis_setup.cpp
bool sentinel_mode();
void send_setup(RedisLink *link);
// Where the link connects to; nullptr: sentinel mode, primary not known yet.
const ByokMain::RedisAddr *link_target(RedisLink *link);
void sentinel_link_dropped();  // the next try asks another sentinel
void links_init_process();     // init and connect every link of the worker

// --- ngx_byok_redis.cpp
void command_link_ready();  // sends the commands queued while it was away

// --- ngx_byok_redis_background.cpp (the worker's own fire-and-forget commands)
void background_link_ready();  // the command link is (again) ready: send what waits
void background_exit();        // the worker exits: drop what waits

}  // namespace ngx_byok_redis
