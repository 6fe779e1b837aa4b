// Redis links of a worker on nginx's own event loop: one command link, one
// subscriber link (byok:invalidate) and, with `sentinel=`, one link to a
// sentinel that names the primary and announces +switch-master.
//
// I/O: every link is an nginx peer connection (ngx_event_connect_peer) read
// and written through c->recv / c->send, which ngx_ssl replaces with its TLS
// versions after the handshake, so plain TCP, unix sockets and TLS share one
// code path. hiredis 0.14 has no TLS; it is kept only as the RESP writer
// (redisFormatCommandArgv) and reader (redisReader).
//
// Events: the connection is edge-triggered; the read handler reads until
// EAGAIN (bounded per call, then it re-posts itself). Commands are appended
// to an output buffer and flushed from a posted write event, so commands of
// one event-loop turn leave in one write.
// Replies arrive in order: each sent command has an entry (callback,
// deadline) in a FIFO; one nginx timer watches the oldest deadline. An
// expired deadline drops the link, failing every pending command, and the
// link reconnects with jittered exponential backoff.
#include "ngx_byok_module/ngx_byok.h"

#include <arpa/inet.h>

#include <deque>

extern "C" {
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
}

namespace {

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

RedisLink g_cmd;
RedisLink g_sub;
RedisLink g_sentinel;
size_t g_sentinel_at = 0;       // which configured sentinel g_sentinel uses
ByokMain::RedisAddr g_primary;  // sentinel mode: the primary named last
bool g_have_primary = false;

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
void send_command(RedisLink *link, const std::vector<std::string> &args, ReplyFn fn, void *data,
                  ngx_msec_t timeout);

bool sentinel_mode() { return !g_mcf->m->redis_master.empty(); }

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

bool is_str(const redisReply *r, std::string_view s) {
    return r != nullptr && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
           std::string_view(r->str, r->len) == s;
}

// --- deadlines -----------------------------------------------------------------

void arm_timeout(RedisLink *link) {
    if (link->connecting) return;  // the connect timer is running
    if (link->pending.empty()) {
        if (link->timeout_ev.timer_set) ngx_del_timer(&link->timeout_ev);
        return;
    }
    ngx_msec_t now = ngx_current_msec, at = link->pending.front().deadline;
    ngx_add_timer(&link->timeout_ev, at > now ? at - now : 1);
}

void schedule_reconnect(RedisLink *link) {
    if (g_exiting || link->reconnect_ev.timer_set) return;
    link->backoff = link->backoff == 0 ? 100 : ngx_min(link->backoff * 2, 2000);
    ngx_msec_t delay = link->backoff / 2 + ngx_random() % (link->backoff / 2 + 1);
    ngx_add_timer(&link->reconnect_ev, delay);
}

// Closes the connection, fails every pending command and (unless the worker
// is exiting) schedules a reconnect.
void drop_link(RedisLink *link, const char *why) {
    if (link->c == nullptr) return;
    if (!g_exiting) {
        ngx_log_error(NGX_LOG_WARN, g_log, 0, BYOK_LOG "redis %s link to %V: %s; reconnecting",
                      link->name, &link->peer_name, why);
        ngx_byok_count(BYOK_REDIS_ERROR);
    }
    ngx_connection_t *c = link->c;
    link->c = nullptr;
    link->gen++;
    if (link == &g_sentinel) g_sentinel_at++;  // the next try asks another sentinel
    link->ready = false;
    link->connecting = false;
    link->obuf.clear();
    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;
        ngx_ssl_shutdown(c);
    }
    ngx_pool_t *pool = c->pool;
    ngx_close_connection(c);
    if (pool) ngx_destroy_pool(pool);
    if (link->reader) redisReaderFree(link->reader);
    link->reader = nullptr;
    std::deque<Pending> failed;
    failed.swap(link->pending);
    arm_timeout(link);
    for (auto &p : failed) p.fn(link, nullptr, p.data);
    if (link == &g_cmd) flush_queue(false);
    schedule_reconnect(link);
}

// --- I/O -----------------------------------------------------------------------

void write_handler(ngx_event_t *ev) {
    auto *c = static_cast<ngx_connection_t *>(ev->data);
    auto *link = static_cast<RedisLink *>(c->data);
    while (link->c == c && !link->obuf.empty()) {
        ssize_t n = c->send(c, (u_char *)link->obuf.data(), link->obuf.size());
        if (n > 0) {
            link->obuf.erase(0, (size_t)n);
        } else if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) drop_link(link, "write error");
            return;
        } else {
            drop_link(link, "write error");
            return;
        }
    }
}

void post_write(RedisLink *link) {
    ngx_connection_t *c = link->c;
    if (c && !link->connecting && c->write->ready && !c->write->posted) {
        ngx_post_event(c->write, &ngx_posted_events);
    }
}

// One reply: the oldest pending command's, else a push (pub/sub message).
void dispatch(RedisLink *link, redisReply *reply) {
    if (!link->pending.empty()) {
        Pending p = link->pending.front();
        link->pending.pop_front();
        arm_timeout(link);
        p.fn(link, reply, p.data);
    } else if (link->on_push) {
        link->on_push(link, reply, nullptr);
    } else {
        drop_link(link, "unexpected reply");
    }
}

void read_handler(ngx_event_t *ev) {
    auto *c = static_cast<ngx_connection_t *>(ev->data);
    auto *link = static_cast<RedisLink *>(c->data);
    unsigned gen = link->gen;
    u_char buf[16384];
    for (int rounds = 0; rounds < 64; rounds++) {
        ssize_t n = c->recv(c, buf, sizeof(buf));
        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(c->read, 0) != NGX_OK) drop_link(link, "read error");
            return;
        }
        if (n == 0 || n == NGX_ERROR) {
            drop_link(link, n == 0 ? "closed by the server" : "read error");
            return;
        }
        if (redisReaderFeed(link->reader, (const char *)buf, (size_t)n) != REDIS_OK) {
            drop_link(link, "protocol error");
            return;
        }
        for (;;) {
            void *r = nullptr;
            if (redisReaderGetReply(link->reader, &r) != REDIS_OK) {
                drop_link(link, "protocol error");
                return;
            }
            if (r == nullptr) break;
            try {
                dispatch(link, static_cast<redisReply *>(r));
            } catch (const std::exception &) {  // out of memory: never into nginx
                freeReplyObject(r);
                drop_link(link, "out of memory");
                return;
            }
            freeReplyObject(r);
            if (link->gen != gen) return;  // dropped by a callback
        }
    }
    ngx_post_event(c->read, &ngx_posted_events);  // more to read: let others run first
}

// --- setup -----------------------------------------------------------------------

// Replies of setup commands (AUTH, SELECT, ROLE, PING, SUBSCRIBE, SENTINEL ...).
// data != nullptr marks the last one: the link is ready after it.
void setup_reply(RedisLink *link, redisReply *reply, void *data) {
    if (reply == nullptr) return;
    if (reply->type == REDIS_REPLY_ERROR) {
        // Wrong password, missing ACL permission, database out of range, ...:
        // never use this link.
        ngx_log_error(NGX_LOG_ERR, g_log, 0, BYOK_LOG "redis %s link: setup failed: %*s",
                      link->name, (int)ngx_min(reply->len, 200), reply->str);
        drop_link(link, "setup failed");
        return;
    }
    if (data == nullptr || link->ready) return;
    link->ready = true;
    if (link->backoff) ngx_byok_count(BYOK_REDIS_RECONNECT);
    link->backoff = 0;
    ngx_log_error(NGX_LOG_NOTICE, g_log, 0, BYOK_LOG "redis %s link to %V ready", link->name,
                  &link->peer_name);
    if (link == &g_cmd) flush_queue(true);
}

// Sentinel mode: a node that is no longer the primary (a demoted primary
// that came back) is never written to; the sentinel is asked again.
void role_reply(RedisLink *link, redisReply *reply, void *data) {
    if (reply != nullptr && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
        !is_str(reply->element[0], "master")) {
        ngx_log_error(NGX_LOG_WARN, g_log, 0, BYOK_LOG "redis %s link: %V is not the primary",
                      link->name, &link->peer_name);
        drop_link(link, "not the primary");
        drop_link(&g_sentinel, "asking again for the primary");
        return;
    }
    setup_reply(link, reply, data);
}

// The invalidation subscriber is (re)subscribed: from here on every change
// is announced to this worker. The one place for what a (re)subscribe
// implies for the cache.
void subscriber_ready() {
    // Messages published while the subscriber was down are lost: everything
    // cached before this (re)subscription is revalidated on its next use.
    ngx_byok_cache_new_generation();
}

// SUBSCRIBE confirmations of the subscriber (byok:invalidate) and of the
// sentinel link (+switch-master).
void on_subscribed(RedisLink *link, redisReply *reply, void *data) {
    if (reply == nullptr) return;
    if (!(reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
          is_str(reply->element[0], "subscribe"))) {
        setup_reply(link, reply, nullptr);  // an error reply drops the link
        if (link->c) drop_link(link, "subscribe refused");
        return;
    }
    setup_reply(link, reply, data);
    if (link == &g_sub && link->ready) subscriber_ready();
}

void invalidation_message(RedisLink *link, redisReply *reply, void *) {
    if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) return;
    redisReply *payload = reply->element[2];
    if (is_str(reply->element[0], "message") && payload->type == REDIS_REPLY_STRING)
        ngx_byok_cache_invalidate(std::string_view(payload->str, payload->len));
}

// --- sentinel ------------------------------------------------------------------

bool make_addr(const std::string &ip, const std::string &port, ByokMain::RedisAddr *out) {
    ngx_int_t p = ngx_atoi((u_char *)port.data(), port.size());
    if (p <= 0 || p > 65535) return false;
    ngx_memzero(&out->sa, sizeof(out->sa));
    if (inet_pton(AF_INET, ip.c_str(), &out->sa.sockaddr_in.sin_addr) == 1) {
        out->sa.sockaddr_in.sin_family = AF_INET;
        out->len = sizeof(struct sockaddr_in);
#if (NGX_HAVE_INET6)
    } else if (inet_pton(AF_INET6, ip.c_str(), &out->sa.sockaddr_in6.sin6_addr) == 1) {
        out->sa.sockaddr_in6.sin6_family = AF_INET6;
        out->len = sizeof(struct sockaddr_in6);
#endif
    } else {
        return false;
    }
    ngx_inet_set_port(&out->sa.sockaddr, (in_port_t)p);
    out->name = (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" + port;
    return true;
}

void set_primary(const ByokMain::RedisAddr &addr) {
    if (g_have_primary && addr.name == g_primary.name) return;
    ngx_log_error(NGX_LOG_NOTICE, g_log, 0, BYOK_LOG "redis primary of \"%s\" is %s (sentinel %V)",
                  g_mcf->m->redis_master.c_str(), addr.name.c_str(), &g_sentinel.peer_name);
    g_primary = addr;
    g_have_primary = true;
    for (RedisLink *link : {&g_cmd, &g_sub}) {
        link->backoff = 0;
        if (link->c) {
            drop_link(link, "the primary changed");
        } else if (!g_exiting) {
            if (link->reconnect_ev.timer_set) ngx_del_timer(&link->reconnect_ev);
            ngx_add_timer(&link->reconnect_ev, 1);
        }
    }
}

void master_addr_reply(RedisLink *link, redisReply *reply, void *) {
    if (reply == nullptr) return;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_STRING &&
        reply->element[1]->type == REDIS_REPLY_STRING) {
        ByokMain::RedisAddr addr;
        if (make_addr(std::string(reply->element[0]->str, reply->element[0]->len),
                      std::string(reply->element[1]->str, reply->element[1]->len), &addr)) {
            set_primary(addr);
            return;
        }
    }
    ngx_log_error(NGX_LOG_ERR, g_log, 0, BYOK_LOG "redis sentinel %V does not name master \"%s\"",
                  &link->peer_name, g_mcf->m->redis_master.c_str());
    drop_link(link, "no primary");
}

// "+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>"
void sentinel_message(RedisLink *link, redisReply *reply, void *) {
    if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        !is_str(reply->element[0], "message") || reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    std::vector<std::string> f;
    std::string text(reply->element[2]->str, reply->element[2]->len);
    for (size_t at = 0; at < text.size() && f.size() < 6;) {
        size_t end = text.find(' ', at);
        if (end == std::string::npos) end = text.size();
        f.push_back(text.substr(at, end - at));
        at = end + 1;
    }
    ByokMain::RedisAddr addr;
    if (f.size() == 5 && f[0] == g_mcf->m->redis_master && make_addr(f[3], f[4], &addr))
        set_primary(addr);
}

// --- connect -----------------------------------------------------------------------

void send_setup(RedisLink *link) {
    ByokMain *m = g_mcf->m;
    ngx_msec_t t = g_mcf->redis_timeout + g_mcf->redis_connect_timeout;
    // Sentinels have their own credentials (sentinel_user=, sentinel_password_file=).
    bool sentinel = link == &g_sentinel;
    const byok::SecretString &password = sentinel ? m->redis_sentinel_password : m->redis_password;
    const std::string &user = sentinel ? m->redis_sentinel_user : m->redis_user;
    if (!password.empty()) {
        std::vector<std::string> auth{"AUTH"};
        if (!user.empty()) auth.push_back(user);
        auth.emplace_back(password.view());
        send_command(link, auth, setup_reply, nullptr, t);
        byok::wipe(auth.back().data(), auth.back().size());
    }
    if (link == &g_sentinel) {
        send_command(link, {"SENTINEL", "get-master-addr-by-name", m->redis_master},
                     master_addr_reply, nullptr, t);
        send_command(link, {"SUBSCRIBE", "+switch-master"}, on_subscribed, (void *)1, t);
        return;
    }
    if (m->redis_db != 0)
        send_command(link, {"SELECT", std::to_string(m->redis_db)}, setup_reply, nullptr, t);
    if (link == &g_sub) {
        send_command(link, {"SUBSCRIBE", m->admin.layout.invalidate_channel()}, on_subscribed,
                     (void *)1, t);
    } else if (sentinel_mode()) {
        send_command(link, {"ROLE"}, role_reply, (void *)1, t);
    } else {
        send_command(link, {"PING"}, setup_reply, (void *)1, t);
    }
}

void established(RedisLink *link) {
    ngx_connection_t *c = link->c;
    link->connecting = false;
    if (link->timeout_ev.timer_set) ngx_del_timer(&link->timeout_ev);
    c->read->handler = read_handler;
    c->write->handler = write_handler;
    try {
        send_setup(link);
    } catch (const std::exception &) {
        drop_link(link, "out of memory");
        return;
    }
    if (link->c == c && c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }
}

bool is_ip_literal(const std::string &name) {
    u_char buf[16];
    return ngx_inet_addr((u_char *)name.data(), name.size()) != INADDR_NONE
#if (NGX_HAVE_INET6)
           || ngx_inet6_addr((u_char *)name.data(), name.size(), buf) == NGX_OK
#endif
        ;
}

// The name the server's certificate must carry: tls_server_name, else the
// host part of the address connected to.
std::string tls_name(RedisLink *link) {
    if (!g_mcf->m->redis_tls_name.empty()) return g_mcf->m->redis_tls_name;
    std::string host(reinterpret_cast<char *>(link->peer_name.data), link->peer_name.len);
    host = host.substr(0, host.rfind(':'));
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    return host;
}

// As nginx's proxy module does for proxy_ssl_verify: the chain result, then
// the name.
void handshake_done(ngx_connection_t *c) {
    auto *link = static_cast<RedisLink *>(c->data);
    if (!c->ssl->handshaked) {
        ngx_log_error(NGX_LOG_ERR, g_log, 0, BYOK_LOG "redis %s link to %V: TLS handshake failed",
                      link->name, &link->peer_name);
        drop_link(link, "TLS handshake failed");
        return;
    }
    long rc = SSL_get_verify_result(c->ssl->connection);
    if (rc != X509_V_OK) {
        ngx_log_error(NGX_LOG_ERR, g_log, 0,
                      BYOK_LOG "redis %s link to %V: TLS certificate verify error: (%l:%s)",
                      link->name, &link->peer_name, rc, X509_verify_cert_error_string(rc));
        drop_link(link, "untrusted TLS certificate");
        return;
    }
    std::string name = tls_name(link);
    ngx_str_t n = {name.size(), (u_char *)name.data()};
    bool match;
    if (is_ip_literal(name)) {
        X509 *cert = SSL_get_peer_certificate(c->ssl->connection);
        match = cert != nullptr && X509_check_ip_asc(cert, name.c_str(), 0) == 1;
        if (cert) X509_free(cert);
    } else {
        match = ngx_ssl_check_host(c, &n) == NGX_OK;
    }
    if (!match) {
        ngx_log_error(NGX_LOG_ERR, g_log, 0,
                      BYOK_LOG "redis %s link to %V: TLS certificate does not match \"%V\"",
                      link->name, &link->peer_name, &n);
        drop_link(link, "TLS certificate name mismatch");
        return;
    }
    established(link);
}

void connected(RedisLink *link) {
    ngx_connection_t *c = link->c;
    if (g_mcf->redis_ssl == nullptr) {
        established(link);
        return;
    }
    if (ngx_ssl_create_connection(g_mcf->redis_ssl, c, NGX_SSL_CLIENT) != NGX_OK) {
        drop_link(link, "TLS setup failed");
        return;
    }
    std::string name = tls_name(link);
    if (!is_ip_literal(name)) SSL_set_tlsext_host_name(c->ssl->connection, name.c_str());
    ngx_int_t rc = ngx_ssl_handshake(c);
    if (rc == NGX_AGAIN) {
        c->ssl->handler = handshake_done;
        return;
    }
    handshake_done(c);
}

void connect_handler(ngx_event_t *ev) {
    auto *c = static_cast<ngx_connection_t *>(ev->data);
    auto *link = static_cast<RedisLink *>(c->data);
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *)&err, &len) == -1) err = ngx_socket_errno;
    if (err) {
        ngx_log_error(NGX_LOG_WARN, g_log, err, BYOK_LOG "redis %s link: connect() to %V failed",
                      link->name, &link->peer_name);
        drop_link(link, "connect failed");
        return;
    }
    connected(link);
}

const ByokMain::RedisAddr *target(RedisLink *link) {
    ByokMain *m = g_mcf->m;
    if (!sentinel_mode()) return &m->redis_addrs[0];
    if (link == &g_sentinel) return &m->redis_addrs[g_sentinel_at % m->redis_addrs.size()];
    return g_have_primary ? &g_primary : nullptr;
}

void link_connect(RedisLink *link) {
    const ByokMain::RedisAddr *a = target(link);
    if (a == nullptr) {  // sentinel mode, primary not known yet
        schedule_reconnect(link);
        return;
    }
    link->peer_name = {a->name.size(), (u_char *)a->name.data()};
    ngx_peer_connection_t pc;
    ngx_memzero(&pc, sizeof(pc));
    pc.sockaddr = const_cast<struct sockaddr *>(&a->sa.sockaddr);
    pc.socklen = a->len;
    pc.name = &link->peer_name;
    pc.get = ngx_event_get_peer;
    pc.log = g_log;
    pc.log_error = NGX_ERROR_ERR;
    ngx_int_t rc = ngx_event_connect_peer(&pc);
    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED || pc.connection == nullptr) {
        if (pc.connection) ngx_close_connection(pc.connection);
        ngx_byok_count(BYOK_REDIS_ERROR);
        if (link == &g_sentinel) g_sentinel_at++;
        schedule_reconnect(link);
        return;
    }
    ngx_connection_t *c = pc.connection;
    c->pool = ngx_create_pool(1024, g_log);
    link->reader = redisReaderCreate();
    if (c->pool == nullptr || link->reader == nullptr) {
        if (c->pool) ngx_destroy_pool(c->pool);
        ngx_close_connection(c);
        if (link->reader) redisReaderFree(link->reader);
        link->reader = nullptr;
        schedule_reconnect(link);
        return;
    }
    c->pool->log = g_log;
    c->data = link;
    c->log = g_log;
    c->read->log = g_log;
    c->write->log = g_log;
    c->read->handler = connect_handler;
    c->write->handler = connect_handler;
    link->c = c;
    link->connecting = true;
    link->ready = false;
    ngx_add_timer(&link->timeout_ev, g_mcf->redis_connect_timeout);
    if (rc == NGX_OK) connected(link);
}

void reconnect_handler(ngx_event_t *ev) {
    auto *link = static_cast<RedisLink *>(ev->data);
    if (!g_exiting && link->c == nullptr) link_connect(link);
}

void timeout_handler(ngx_event_t *ev) {
    auto *link = static_cast<RedisLink *>(ev->data);
    if (link->connecting) {
        drop_link(link, "connect timed out");
    } else if (!link->pending.empty() && link->pending.front().deadline <= ngx_current_msec) {
        drop_link(link, "command timed out");
    } else {
        arm_timeout(link);
    }
}

void init_link(RedisLink *link, const char *name, ReplyFn on_push) {
    link->name = name;
    link->on_push = on_push;
    link->reconnect_ev.handler = reconnect_handler;
    link->reconnect_ev.data = link;
    link->reconnect_ev.log = g_log;
    link->reconnect_ev.cancelable = 1;
    link->timeout_ev.handler = timeout_handler;
    link->timeout_ev.data = link;
    link->timeout_ev.log = g_log;
    link->timeout_ev.cancelable = 1;
}

// --- commands ------------------------------------------------------------------

void send_command(RedisLink *link, const std::vector<std::string> &args, ReplyFn fn, void *data,
                  ngx_msec_t timeout) {
    std::vector<const char *> argv;
    std::vector<size_t> lens;
    argv.reserve(args.size());
    lens.reserve(args.size());
    for (const auto &a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
    }
    char *cmd = nullptr;
    int len = redisFormatCommandArgv(&cmd, (int)argv.size(), argv.data(), lens.data());
    if (len < 0) throw std::bad_alloc();
    link->obuf.append(cmd, (size_t)len);
    byok::wipe(cmd, (size_t)len);  // may hold AUTH's password
    redisFreeCommand(cmd);
    link->pending.push_back({fn, data, ngx_current_msec + timeout});
    if (link->pending.size() == 1) arm_timeout(link);
    post_write(link);
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

bool send_argv(const std::vector<std::string> &args, ByokRedisWaiter *w) {
    if (g_cmd.c == nullptr) return false;
    try {
        send_command(&g_cmd, args, command_reply, w, g_mcf->redis_timeout);
    } catch (const std::exception &) {
        return false;
    }
    return true;
}

// Sends (once the link is ready) or fails (the link went away) every queued
// command; a failed waiter gets an Unavailable reply like any dropped command.
void flush_queue(bool send) {
    std::deque<Queued> queued;
    queued.swap(g_queue);
    for (auto &q : queued) {
        if (send && g_cmd.ready && send_argv(q.argv, q.waiter)) continue;
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

ngx_int_t ngx_byok_redis_init_process(ngx_cycle_t *cycle) {
    g_mcf = static_cast<ngx_byok_main_conf_t *>(
        ngx_http_cycle_get_module_main_conf(cycle, ngx_http_byok_module));
    g_log = cycle->log;
    g_exiting = false;
    // A new worker starts with the master's cached clock; deadlines must not
    // be measured from a time before the configuration was loaded.
    ngx_time_update();
    init_link(&g_cmd, "command", nullptr);
    init_link(&g_sub, "subscriber", invalidation_message);
    init_link(&g_sentinel, "sentinel", sentinel_message);
    if (sentinel_mode()) {
        g_sentinel_at = (size_t)ngx_random();  // spread the workers over the sentinels
        link_connect(&g_sentinel);
    }
    link_connect(&g_cmd);
    link_connect(&g_sub);
    return NGX_OK;
}

void ngx_byok_redis_exit_process(ngx_cycle_t *cycle) {
    g_exiting = true;
    for (RedisLink *link : {&g_cmd, &g_sub, &g_sentinel}) {
        if (link->reconnect_ev.timer_set) ngx_del_timer(&link->reconnect_ev);
        drop_link(link, "exiting");
        if (link->timeout_ev.timer_set) ngx_del_timer(&link->timeout_ev);
    }
}

bool ngx_byok_redis_available() { return g_cmd.ready; }

ByokRedisWaiter *ngx_byok_redis_send(const std::vector<std::string> &argv,
                                     void (*done)(ByokRedisWaiter *), void *data) {
    if (g_cmd.c == nullptr) return nullptr;
    if (!g_cmd.ready && g_queue.size() >= kMaxQueued) return nullptr;
    auto *w = new (std::nothrow) ByokRedisWaiter();
    if (w == nullptr) return nullptr;
    w->ev.handler = waiter_event;
    w->ev.data = w;
    w->ev.log = g_log;
    w->done = done;
    w->data = data;
    if (!g_cmd.ready) {
        try {
            g_queue.push_back({argv, w});
        } catch (const std::exception &) {
            delete w;
            return nullptr;
        }
        return w;
    }
    if (!send_argv(argv, w)) {
        delete w;
        return nullptr;
    }
    return w;
}

void ngx_byok_redis_send_noreply(const std::vector<std::string> &argv) {
    if (g_cmd.ready && send_argv(argv, nullptr)) return;
    ngx_byok_count(BYOK_REDIS_ERROR);
}

void ngx_byok_redis_send_raw_noreply(std::string_view resp, size_t commands) {
    if (!g_cmd.ready || commands == 0) {
        ngx_byok_count(BYOK_REDIS_ERROR);
        return;
    }
    try {
        g_cmd.obuf.append(resp);
        for (size_t i = 0; i < commands; i++)
            g_cmd.pending.push_back(
                {command_reply, nullptr, ngx_current_msec + g_mcf->redis_timeout});
    } catch (const std::exception &) {
        drop_link(&g_cmd, "out of memory");  // the buffer may hold a partial command
        return;
    }
    if (g_cmd.pending.size() == commands) arm_timeout(&g_cmd);
    post_write(&g_cmd);
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
    if (tls || !m->redis_master.empty() || m->redis_addrs.size() != 1)
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
