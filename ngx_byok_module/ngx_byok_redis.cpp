// The Redis command API of a worker (ngx_byok.h): commands of requests go
// on the command link; while that link is away (connecting, or reconnecting
// after a drop or a Sentinel failover) they wait in a bounded queue, each
// until its own deadline (byok_redis timeout=), instead of being refused.
// Links, I/O and setup: ngx_byok_redis_link.h.
#include "ngx_byok_module/ngx_byok_redis_link.h"

using namespace ngx_byok_redis;

namespace {

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

// Errors of a node that cannot take the command right now (a demoted
// primary, a replica still loading, a primary without its replicas): the
// command was not applied, so it is "unavailable", not a failure.
bool not_writable(const redisReply *r) {
    std::string_view e(r->str, r->len);
    for (std::string_view p : {"READONLY", "LOADING", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN"})
        if (e.substr(0, p.size()) == p) return true;
    return false;
}

void waiter_event(ngx_event_t *ev) {
    auto *w = static_cast<ByokRedisWaiter *>(ev->data);
    w->done(w);
    delete w;
}

void command_reply(RedisLink *, redisReply *r, void *privdata) {
    auto *w = static_cast<ByokRedisWaiter *>(privdata);
    if (w == nullptr) {  // fire and forget
        if (r == nullptr || r->type == REDIS_REPLY_ERROR) ngx_byok_count(BYOK_REDIS_ERROR);
        return;
    }
    if (w->cancelled) {
        delete w;
        return;
    }
    if (r != nullptr && r->type == REDIS_REPLY_ERROR && not_writable(r)) {
        r = nullptr;  // answered as "unavailable": the client retries after the failover
        if (sentinel_mode()) {
            drop_link(&g_sentinel, "asking again for the primary");
        }
    }
    try {
        w->reply = convert(r);
    } catch (const std::exception &) {
        w->reply = byok::admin::Reply{};
        w->reply.type = byok::admin::Reply::Type::Unavailable;
    }
    if (w->reply.type == byok::admin::Reply::Type::Unavailable) ngx_byok_count(BYOK_REDIS_ERROR);
    // Resume the owner from the event loop, not from inside the read handler.
    ngx_post_event(&w->ev, &ngx_posted_events);
}

// Commands of requests while the command link is not ready: still
// connecting (AUTH and SELECT not answered yet: sending earlier could run
// them unauthenticated or against the wrong database), or gone and waiting
// to reconnect (a dropped connection, a Sentinel failover). Each waits at
// most until its own deadline, the one it would have had on the link; a
// cached project revalidated during a failover thus waits for the new
// primary instead of failing.
struct Queued {
    std::vector<std::string> argv;
    ByokRedisWaiter *waiter;
    ngx_msec_t deadline;
};
std::deque<Queued> g_queue;  // deadlines ascending: one timeout for all
constexpr size_t kMaxQueued = 4096;
ngx_event_t g_queue_ev;  // the oldest queued deadline

bool send_argv(const std::vector<std::string> &args, ByokRedisWaiter *w, ngx_msec_t timeout) {
    if (g_cmd.c == nullptr) return false;
    try {
        send_command(&g_cmd, args, command_reply, w, timeout);
    } catch (const std::exception &) {
        return false;
    }
    return true;
}

// A queued command that will not be sent: its waiter gets an Unavailable
// reply like any dropped command.
void fail_queued(ByokRedisWaiter *w) {
    if (w == nullptr) return;
    if (w->cancelled) {
        delete w;
        return;
    }
    w->reply = byok::admin::Reply{};
    w->reply.type = byok::admin::Reply::Type::Unavailable;
    ngx_post_event(&w->ev, &ngx_posted_events);
}

void arm_queue_timeout() {
    if (g_queue.empty()) {
        if (g_queue_ev.timer_set) ngx_del_timer(&g_queue_ev);
        return;
    }
    ngx_msec_t now = ngx_current_msec, at = g_queue.front().deadline;
    ngx_add_timer(&g_queue_ev, at > now ? at - now : 1);
}

void queue_timeout_handler(ngx_event_t *) {
    while (!g_queue.empty() && g_queue.front().deadline <= ngx_current_msec) {
        ByokRedisWaiter *w = g_queue.front().waiter;
        g_queue.pop_front();
        fail_queued(w);
    }
    arm_queue_timeout();
}

// Sends (send: the link is ready) or fails (the worker exits) every queued
// command; one past its deadline fails either way.
void flush_queue(bool send) {
    std::deque<Queued> queued;
    queued.swap(g_queue);
    for (auto &q : queued) {
        ngx_msec_t now = ngx_current_msec;
        if (send && g_cmd.ready && q.deadline > now &&
            send_argv(q.argv, q.waiter, q.deadline - now))
            continue;
        fail_queued(q.waiter);
    }
    arm_queue_timeout();
}

}  // namespace

void ngx_byok_redis::command_link_ready() {
    flush_queue(true);
    background_link_ready();  // issue 18: the worker's own commands, after the requests'
}

ngx_int_t ngx_byok_redis_init_process(ngx_cycle_t *cycle) {
    g_mcf = static_cast<ngx_byok_main_conf_t *>(
        ngx_http_cycle_get_module_main_conf(cycle, ngx_http_byok_module));
    g_log = cycle->log;
    g_exiting = false;
    // A new worker starts with the master's cached clock; deadlines must not
    // be measured from a time before the configuration was loaded.
    ngx_time_update();
    g_queue_ev.handler = queue_timeout_handler;
    g_queue_ev.log = g_log;
    g_queue_ev.cancelable = 1;
    links_init_process();
    return NGX_OK;
}

void ngx_byok_redis_exit_process(ngx_cycle_t *cycle) {
    g_exiting = true;
    for (RedisLink *link : {&g_cmd, &g_sub, &g_sentinel}) {
        if (link->reconnect_ev.timer_set) ngx_del_timer(&link->reconnect_ev);
        drop_link(link, "exiting");
        if (link->timeout_ev.timer_set) ngx_del_timer(&link->timeout_ev);
    }
    flush_queue(false);
    if (g_queue_ev.timer_set) ngx_del_timer(&g_queue_ev);
    background_exit();
}

bool ngx_byok_redis_available() { return g_cmd.ready; }

ByokRedisWaiter *ngx_byok_redis_send(const std::vector<std::string> &argv,
                                     void (*done)(ByokRedisWaiter *), void *data) {
    if (g_exiting || (!g_cmd.ready && g_queue.size() >= kMaxQueued)) return nullptr;
    auto *w = new (std::nothrow) ByokRedisWaiter();
    if (w == nullptr) return nullptr;
    w->ev.handler = waiter_event;
    w->ev.data = w;
    w->ev.log = g_log;
    w->done = done;
    w->data = data;
    if (!g_cmd.ready) {
        try {
            g_queue.push_back({argv, w, ngx_current_msec + g_mcf->redis_timeout});
        } catch (const std::exception &) {
            delete w;
            return nullptr;
        }
        if (g_queue.size() == 1) arm_queue_timeout();
        return w;
    }
    if (!send_argv(argv, w, g_mcf->redis_timeout)) {
        delete w;
        return nullptr;
    }
    return w;
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
ngx_int_t ngx_byok_check_ring_in_use(ngx_conf_t *cf, ByokMain *m, ngx_msec_t timeout, bool tls) {
    struct timeval tv = {static_cast<time_t>(timeout / 1000),
                         static_cast<suseconds_t>((timeout % 1000) * 1000)};
    redisContext *c = nullptr;
    auto not_checked = [&](const std::string &why) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           BYOK_LOG "master keys not checked against stored records: %s",
                           why.c_str());
        if (c != nullptr) redisFree(c);
        return NGX_OK;
    };
    // A blocking hiredis context speaks neither TLS nor Sentinel: those
    // deployments are not checked here (the warning says so).
    if (tls || !m->redis_master.empty() || m->redis_cluster || m->redis_addrs.size() != 1)
        return not_checked("only done for a single plain-TCP or unix-socket redis");
    const ngx_sockaddr_t &sa = m->redis_addrs.front().sa;
    if (sa.sockaddr.sa_family == AF_UNIX) {
        c = redisConnectUnixWithTimeout(sa.sockaddr_un.sun_path, tv);
    } else {
        char host[NGX_SOCKADDR_STRLEN];
        in_port_t port = ngx_inet_get_port(const_cast<sockaddr *>(&sa.sockaddr));
        ngx_str_t text = {0, (u_char *)host};
        text.len = ngx_sock_ntop(const_cast<sockaddr *>(&sa.sockaddr), m->redis_addrs.front().len,
                                 (u_char *)host, sizeof(host) - 1, 0);
        host[text.len] = '\0';
        c = redisConnectWithTimeout(host, port, tv);
    }
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
        if (!m->redis_password.empty()) {
            std::vector<std::string> auth{"AUTH"};
            if (!m->redis_user.empty()) auth.push_back(m->redis_user);
            auth.emplace_back(m->redis_password.view());
            bool refused = command(auth).type == byok::admin::Reply::Type::Error;
            for (auto &a : auth) byok::wipe(a.data(), a.size());
            if (refused) return not_checked("redis refused AUTH");
        }
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
