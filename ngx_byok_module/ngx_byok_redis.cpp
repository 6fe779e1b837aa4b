// hiredis async API on nginx's event loop: one command link and one
// subscriber link (byok:invalidate) per worker, created in init_process.
//
// Events: the socket is registered edge-triggered for read and write.
// hiredis reads at most 16 KiB per call, so the read handler drains with
// FIONREAD until the kernel buffer is empty. Writes happen when hiredis asks
// (addWrite) and the socket is writable, otherwise on the next EPOLLOUT.
// Timeouts: hiredis 0.14 has none, so every command's deadline goes into a
// FIFO (replies arrive in order) watched by one nginx timer; an expired
// deadline drops the link, failing every pending command, and reconnects
// with jittered exponential backoff.
#include "ngx_byok_module/ngx_byok.h"

#include <sys/ioctl.h>

#include <deque>

extern "C" {
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
}

namespace {

struct RedisLink {
    const char *name = "";
    bool subscriber = false;
    redisAsyncContext *ac = nullptr;
    ngx_connection_t *c = nullptr;
    bool ready = false;  // connected and set up (AUTH/SELECT/SUBSCRIBE answered)
    ngx_event_t reconnect_ev{};
    ngx_event_t timeout_ev{};
    std::deque<ngx_msec_t> deadlines;  // command link: one per in-flight command
    ngx_msec_t backoff = 0;
};

RedisLink g_cmd;
RedisLink g_sub;

// Commands that arrive while the command link is still connecting (AUTH and
// SELECT not answered yet) wait here: sending them earlier could run them
// unauthenticated or against the wrong database.
struct Queued {
    std::vector<std::string> argv;
    ByokRedisWaiter *waiter;  // nullptr: fire and forget
};
std::deque<Queued> g_queue;
constexpr size_t kMaxQueued = 4096;
ngx_log_t *g_log = nullptr;
bool g_exiting = false;
ngx_byok_main_conf_t *g_mcf = nullptr;

void link_connect(RedisLink *link);
void flush_queue(bool send);

byok::admin::Reply convert(const redisReply *r) {
    byok::admin::Reply out;
    if (r == nullptr) {
        out.type = byok::admin::Reply::Type::Unavailable;
        return out;
    }
    switch (r->type) {
        case REDIS_REPLY_STRING:
            out.type = byok::admin::Reply::Type::String;
            out.str.assign(r->str, r->len);
            break;
        case REDIS_REPLY_STATUS:
            out.type = byok::admin::Reply::Type::Status;
            out.str.assign(r->str, r->len);
            break;
        case REDIS_REPLY_ERROR:
            out.type = byok::admin::Reply::Type::Error;
            out.str.assign(r->str, r->len);
            break;
        case REDIS_REPLY_INTEGER:
            out.type = byok::admin::Reply::Type::Integer;
            out.integer = r->integer;
            break;
        case REDIS_REPLY_ARRAY:
            out.type = byok::admin::Reply::Type::Array;
            out.elements.reserve(r->elements);
            for (size_t i = 0; i < r->elements; i++) out.elements.push_back(convert(r->element[i]));
            break;
        default:
            out.type = byok::admin::Reply::Type::Nil;
    }
    return out;
}

void arm_timeout(RedisLink *link) {
    if (link->deadlines.empty()) {
        if (link->timeout_ev.timer_set) ngx_del_timer(&link->timeout_ev);
        return;
    }
    ngx_msec_t now = ngx_current_msec, at = link->deadlines.front();
    ngx_add_timer(&link->timeout_ev, at > now ? at - now : 1);
}

void push_deadline(RedisLink *link, ngx_msec_t timeout) {
    link->deadlines.push_back(ngx_current_msec + timeout);
    if (link->deadlines.size() == 1) arm_timeout(link);
}

void pop_deadline(RedisLink *link) {
    if (!link->deadlines.empty()) link->deadlines.pop_front();
    arm_timeout(link);
}

void drop_link(RedisLink *link, const char *why) {
    if (link->ac == nullptr) return;
    ngx_log_error(NGX_LOG_WARN, g_log, 0, BYOK_LOG "redis %s link: %s; reconnecting", link->name,
                  why);
    ngx_byok_count(BYOK_REDIS_ERROR);
    redisAsyncFree(link->ac);  // fails pending commands, then ev.cleanup
}

void schedule_reconnect(RedisLink *link) {
    if (g_exiting || link->reconnect_ev.timer_set) return;
    link->backoff = link->backoff == 0 ? 100 : ngx_min(link->backoff * 2, 2000);
    ngx_msec_t delay = link->backoff / 2 + ngx_random() % (link->backoff / 2 + 1);
    ngx_add_timer(&link->reconnect_ev, delay);
}

// --- hiredis event hooks ---

void ev_noop(void *) {}

void ev_add_write(void *data) {
    auto *link = static_cast<RedisLink *>(data);
    if (link->c && link->c->write->ready && !link->c->write->posted) {
        ngx_post_event(link->c->write, &ngx_posted_events);
    }
}

void ev_cleanup(void *data) {
    auto *link = static_cast<RedisLink *>(data);
    ngx_connection_t *c = link->c;
    if (c != nullptr) {
        if (c->read->timer_set) ngx_del_timer(c->read);
        if (c->write->timer_set) ngx_del_timer(c->write);
        if (c->read->posted) {
            ngx_delete_posted_event(c->read);
        }
        if (c->write->posted) {
            ngx_delete_posted_event(c->write);
        }
        if (ngx_del_conn) {
            ngx_del_conn(c, NGX_CLOSE_EVENT);  // hiredis closes the fd itself
        } else {
            if (c->read->active) ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
            if (c->write->active) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }
        c->fd = (ngx_socket_t)-1;
        ngx_free_connection(c);
        link->c = nullptr;
    }
    link->ac = nullptr;
    link->ready = false;
    link->deadlines.clear();
    arm_timeout(link);
    if (link == &g_cmd) flush_queue(false);
    schedule_reconnect(link);
}

void read_handler(ngx_event_t *ev) {
    auto *c = static_cast<ngx_connection_t *>(ev->data);
    auto *link = static_cast<RedisLink *>(c->data);
    for (int rounds = 0; rounds < 1024 && link->ac != nullptr; rounds++) {
        redisAsyncHandleRead(link->ac);
        if (link->ac == nullptr || link->c == nullptr) return;
        int avail = 0;
        if (ioctl(link->c->fd, FIONREAD, &avail) != 0 || avail <= 0) break;
    }
}

void write_handler(ngx_event_t *ev) {
    auto *c = static_cast<ngx_connection_t *>(ev->data);
    auto *link = static_cast<RedisLink *>(c->data);
    if (link->ac == nullptr) return;
    redisAsyncHandleWrite(link->ac);
    if (link->ac != nullptr && link->c != nullptr && link->ac->c.obuf != nullptr &&
        sdslen(link->ac->c.obuf) > 0) {
        link->c->write->ready = 0;  // EAGAIN: the next EPOLLOUT edge resumes
    }
}

void on_connect(const redisAsyncContext *ac, int status) {
    auto *link = static_cast<RedisLink *>(ac->data);
    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_WARN, g_log, 0, BYOK_LOG "redis %s link: connect failed: %s",
                      link->name, ac->errstr);
        ngx_byok_count(BYOK_REDIS_ERROR);
    }
}

// Replies of setup commands (AUTH, SELECT, PING / SUBSCRIBE confirmation).
void setup_reply(redisAsyncContext *ac, void *r, void *privdata) {
    auto *link = static_cast<RedisLink *>(ac->data);
    auto *reply = static_cast<redisReply *>(r);
    bool last = privdata != nullptr;
    if (!link->subscriber) pop_deadline(link);
    if (reply == nullptr) return;
    if (reply->type == REDIS_REPLY_ERROR) {
        // Wrong password, database out of range, ...: never use this link.
        ngx_log_error(NGX_LOG_ERR, g_log, 0, BYOK_LOG "redis %s link: setup failed: %*s",
                      link->name, (int)ngx_min(reply->len, 200), reply->str);
        link->ready = false;
        drop_link(link, "setup failed");
        return;
    }
    if (last && !link->ready) {
        link->ready = true;
        if (link->backoff) ngx_byok_count(BYOK_REDIS_RECONNECT);
        link->backoff = 0;
        ngx_log_error(NGX_LOG_NOTICE, g_log, 0, BYOK_LOG "redis %s link ready", link->name);
        if (link->subscriber && link->timeout_ev.timer_set) ngx_del_timer(&link->timeout_ev);
        if (link == &g_cmd) flush_queue(true);
    }
}

void sub_message(redisAsyncContext *ac, void *r, void *privdata) {
    auto *reply = static_cast<redisReply *>(r);
    if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) return;
    redisReply *kind = reply->element[0];
    if (kind->type == REDIS_REPLY_STRING && kind->len == 9 &&
        memcmp(kind->str, "subscribe", 9) == 0) {
        setup_reply(ac, r, (void *)1);
        return;
    }
    redisReply *payload = reply->element[2];
    if (kind->type == REDIS_REPLY_STRING && kind->len == 7 &&
        memcmp(kind->str, "message", 7) == 0 && payload->type == REDIS_REPLY_STRING) {
        ngx_byok_cache_invalidate(std::string_view(payload->str, payload->len));
    }
}

void send_setup(RedisLink *link, std::initializer_list<std::string> args, bool last,
                redisCallbackFn *fn = setup_reply) {
    std::vector<const char *> argv;
    std::vector<size_t> lens;
    for (const auto &a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
    }
    if (redisAsyncCommandArgv(link->ac, fn, last ? (void *)1 : nullptr, (int)argv.size(),
                              argv.data(), lens.data()) == REDIS_OK &&
        !link->subscriber) {
        push_deadline(link, g_mcf->redis_timeout + g_mcf->redis_connect_timeout);
    }
}

void link_connect(RedisLink *link) {
    ByokMain *m = g_mcf->m;
    redisAsyncContext *ac = m->redis_unix.empty()
                                ? redisAsyncConnect(m->redis_host.c_str(), m->redis_port)
                                : redisAsyncConnectUnix(m->redis_unix.c_str());
    if (ac == nullptr || ac->err) {
        ngx_log_error(NGX_LOG_WARN, g_log, 0, BYOK_LOG "redis %s link: connect failed: %s",
                      link->name, ac ? ac->errstr : "out of memory");
        ngx_byok_count(BYOK_REDIS_ERROR);
        if (ac) redisAsyncFree(ac);
        schedule_reconnect(link);
        return;
    }
    ngx_connection_t *c = ngx_get_connection(ac->c.fd, g_log);
    if (c == nullptr) {
        redisAsyncFree(ac);
        schedule_reconnect(link);
        return;
    }
    c->data = link;
    c->read->handler = read_handler;
    c->write->handler = write_handler;
    c->read->log = g_log;
    c->write->log = g_log;
    c->log = g_log;
    link->ac = ac;
    link->c = c;
    link->ready = false;
    ac->data = link;
    ac->ev.data = link;
    ac->ev.addRead = ev_noop;
    ac->ev.delRead = ev_noop;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_noop;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);

    ngx_int_t rc;
    if (ngx_add_conn) {
        rc = ngx_add_conn(c);
    } else {
        rc = ngx_add_event(c->read, NGX_READ_EVENT, NGX_CLEAR_EVENT);
        if (rc == NGX_OK) rc = ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_CLEAR_EVENT);
    }
    if (rc != NGX_OK) {
        redisAsyncFree(ac);
        return;
    }

    if (!m->redis_password.empty())
        send_setup(link, {"AUTH", std::string(m->redis_password.view())}, false);
    if (m->redis_db != 0) send_setup(link, {"SELECT", std::to_string(m->redis_db)}, false);
    if (link->subscriber) {
        send_setup(link, {"SUBSCRIBE", m->admin.layout.invalidate_channel()}, true, sub_message);
        ngx_add_timer(&link->timeout_ev, g_mcf->redis_connect_timeout);
    } else {
        send_setup(link, {"PING"}, true);
    }
}

void reconnect_handler(ngx_event_t *ev) {
    auto *link = static_cast<RedisLink *>(ev->data);
    if (!g_exiting && link->ac == nullptr) link_connect(link);
}

void timeout_handler(ngx_event_t *ev) {
    auto *link = static_cast<RedisLink *>(ev->data);
    if (link->subscriber) {
        if (!link->ready) drop_link(link, "subscribe timed out");
        return;
    }
    if (!link->deadlines.empty() && link->deadlines.front() <= ngx_current_msec) {
        drop_link(link, "command timed out");
    } else {
        arm_timeout(link);
    }
}

void init_link(RedisLink *link, const char *name, bool subscriber) {
    link->name = name;
    link->subscriber = subscriber;
    link->reconnect_ev.handler = reconnect_handler;
    link->reconnect_ev.data = link;
    link->reconnect_ev.log = g_log;
    link->reconnect_ev.cancelable = 1;
    link->timeout_ev.handler = timeout_handler;
    link->timeout_ev.data = link;
    link->timeout_ev.log = g_log;
    link->timeout_ev.cancelable = 1;
}

void waiter_event(ngx_event_t *ev) {
    auto *w = static_cast<ByokRedisWaiter *>(ev->data);
    w->done(w);
    delete w;
}

void command_reply(redisAsyncContext *ac, void *r, void *privdata) {
    pop_deadline(&g_cmd);
    auto *w = static_cast<ByokRedisWaiter *>(privdata);
    if (w == nullptr) return;  // fire and forget
    if (w->cancelled) {
        delete w;
        return;
    }
    try {
        w->reply = convert(static_cast<redisReply *>(r));
    } catch (const std::exception &) {
        w->reply = byok::admin::Reply{};
        w->reply.type = byok::admin::Reply::Type::Unavailable;
    }
    if (w->reply.type == byok::admin::Reply::Type::Unavailable) ngx_byok_count(BYOK_REDIS_ERROR);
    // Resume the owner from the event loop, not from inside hiredis.
    ngx_post_event(&w->ev, &ngx_posted_events);
}

int send_argv(const std::vector<std::string> &args, void *privdata) {
    if (g_cmd.ac == nullptr) return REDIS_ERR;
    std::vector<const char *> argv;
    std::vector<size_t> lens;
    argv.reserve(args.size());
    lens.reserve(args.size());
    for (const auto &a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
    }
    int rc = redisAsyncCommandArgv(g_cmd.ac, command_reply, privdata, (int)argv.size(), argv.data(),
                                   lens.data());
    if (rc == REDIS_OK) push_deadline(&g_cmd, g_mcf->redis_timeout);
    return rc;
}

}  // namespace

ngx_int_t ngx_byok_redis_init_process(ngx_cycle_t *cycle) {
    g_mcf = static_cast<ngx_byok_main_conf_t *>(
        ngx_http_cycle_get_module_main_conf(cycle, ngx_http_byok_module));
    g_log = cycle->log;
    g_exiting = false;
    // A new worker starts with the master's cached clock; deadlines must not
    // be measured from a time before the configuration was loaded.
    ngx_time_update();
    init_link(&g_cmd, "command", false);
    init_link(&g_sub, "subscriber", true);
    link_connect(&g_cmd);
    link_connect(&g_sub);
    return NGX_OK;
}

void ngx_byok_redis_exit_process(ngx_cycle_t *cycle) {
    g_exiting = true;
    for (RedisLink *link : {&g_cmd, &g_sub}) {
        if (link->reconnect_ev.timer_set) ngx_del_timer(&link->reconnect_ev);
        if (link->ac) redisAsyncFree(link->ac);
    }
}

bool ngx_byok_redis_available() { return g_cmd.ready; }

namespace {

// Sends (once the link is ready) or fails (the link went away) every queued
// command; a failed waiter gets an Unavailable reply like any dropped command.
void flush_queue(bool send) {
    std::deque<Queued> queued;
    queued.swap(g_queue);
    for (auto &q : queued) {
        if (send && g_cmd.ac != nullptr && send_argv(q.argv, q.waiter) == REDIS_OK) continue;
        if (q.waiter == nullptr) continue;
        if (q.waiter->cancelled) {
            delete q.waiter;
            continue;
        }
        q.waiter->reply = byok::admin::Reply{};
        q.waiter->reply.type = byok::admin::Reply::Type::Unavailable;
        ngx_post_event(&q.waiter->ev, &ngx_posted_events);
    }
}

}  // namespace

ByokRedisWaiter *ngx_byok_redis_send(const std::vector<std::string> &argv,
                                     void (*done)(ByokRedisWaiter *), void *data) {
    if (g_cmd.ac == nullptr) return nullptr;
    if (!g_cmd.ready && g_queue.size() >= kMaxQueued) return nullptr;
    auto *w = new (std::nothrow) ByokRedisWaiter();
    if (w == nullptr) return nullptr;
    w->ev.handler = waiter_event;
    w->ev.data = w;
    w->ev.log = g_log;
    w->done = done;
    w->data = data;
    if (!g_cmd.ready) {
        g_queue.push_back({argv, w});
        return w;
    }
    if (send_argv(argv, w) != REDIS_OK) {
        delete w;
        return nullptr;
    }
    return w;
}

void ngx_byok_redis_send_noreply(const std::vector<std::string> &argv) {
    if (g_cmd.ready && send_argv(argv, nullptr) == REDIS_OK) return;
    ngx_byok_count(BYOK_REDIS_ERROR);
}

void ngx_byok_redis_cancel(ByokRedisWaiter *w) {
    if (w == nullptr) return;
    if (w->ev.posted) {
        ngx_delete_posted_event(&w->ev);
        delete w;
    } else {
        w->cancelled = true;  // command_reply frees it
    }
}

// Config phase only (nginx -t, start and reload, in the master before any
// worker exists): a blocking connection with a short timeout reads how many
// records each master key still seals, so a ring that drops a key in use
// fails here instead of locking tenants out. Redis unreachable: warn and go
// on (the check is a safety net, not a start condition).
ngx_int_t ngx_byok_check_ring_in_use(ngx_conf_t *cf, ByokMain *m, ngx_msec_t timeout) {
    struct timeval tv = {static_cast<time_t>(timeout / 1000),
                         static_cast<suseconds_t>((timeout % 1000) * 1000)};
    redisContext *c = m->redis_unix.empty()
                          ? redisConnectWithTimeout(m->redis_host.c_str(), m->redis_port, tv)
                          : redisConnectUnixWithTimeout(m->redis_unix.c_str(), tv);
    auto not_checked = [&](const std::string &why) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           BYOK_LOG "master keys not checked against stored records: %s",
                           why.c_str());
        if (c != nullptr) redisFree(c);
        return NGX_OK;
    };
    if (c == nullptr) return not_checked("cannot allocate a redis context");
    if (c->err) return not_checked(std::string("redis: ") + c->errstr);
    redisSetTimeout(c, tv);
    auto command = [c](const std::vector<std::string> &argv) {
        std::vector<const char *> ptr;
        std::vector<size_t> len;
        for (const auto &a : argv) {
            ptr.push_back(a.data());
            len.push_back(a.size());
        }
        auto *r = static_cast<redisReply *>(
            redisCommandArgv(c, static_cast<int>(argv.size()), ptr.data(), len.data()));
        byok::admin::Reply out = convert(r);
        if (r != nullptr) freeReplyObject(r);
        return out;
    };
    try {
        if (!m->redis_password.empty() &&
            command({"AUTH", std::string(m->redis_password.view())}).type ==
                byok::admin::Reply::Type::Error)
            return not_checked("redis refused AUTH");
        if (m->redis_db != 0) command({"SELECT", std::to_string(m->redis_db)});
        byok::admin::KidCounts counts;
        bool done = false;
        byok::admin::Step s = byok::admin::count_records_by_kid(
            m->admin.layout, [&](const byok::admin::KidCounts &k) {
                counts = k;
                done = true;
                return byok::admin::Step{byok::admin::Response{}};
            });
        // One command per project: bounded by the number of projects.
        while (std::holds_alternative<byok::admin::RedisCall>(s.action)) {
            const auto &call = std::get<byok::admin::RedisCall>(s.action);
            byok::admin::Step next = call.next(command(call.argv));
            s = std::move(next);
        }
        if (!done) return not_checked("redis did not answer");
        std::string gap = byok::admin::ring_gap(m->ring, counts);
        redisFree(c);
        c = nullptr;
        if (!gap.empty()) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, BYOK_LOG "byok_master_keys: %s", gap.c_str());
            return NGX_ERROR;
        }
        return NGX_OK;
    } catch (const std::exception &e) {
        return not_checked(e.what());
    }
}
