// One Redis link on nginx's own event loop (see ngx_byok_redis_link.h for
// the adapter's files): connection, TLS, RESP I/O, deadlines, reconnect.
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
#include "ngx_byok_module/ngx_byok_redis_link.h"

namespace ngx_byok_redis {

RedisLink g_cmd;
RedisLink g_sub;
RedisLink g_sentinel;
ngx_log_t *g_log = nullptr;
bool g_exiting = false;
ngx_byok_main_conf_t *g_mcf = nullptr;

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
    if (g_exiting || link->retired || link->reconnect_ev.timer_set) return;
    link->backoff = link->backoff == 0 ? 100 : ngx_min(link->backoff * 2, 2000);
    ngx_msec_t delay = link->backoff / 2 + ngx_random() % (link->backoff / 2 + 1);
    ngx_add_timer(&link->reconnect_ev, delay);
}

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
    if (link->on_drop) link->on_drop(link);  // still sees `ready` of the lost connection
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

// Replies of setup commands (AUTH, SELECT, ROLE, PING, SUBSCRIBE, SENTINEL ...).
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
    if (link->on_ready) link->on_ready(link);
}

// --- connect -----------------------------------------------------------------------

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

// tls_name for the event handlers, which must not throw into nginx: false
// (and the link dropped, to reconnect) when the name cannot be built.
bool tls_name_or_drop(RedisLink *link, std::string *name) {
    try {
        *name = tls_name(link);
        return true;
    } catch (const std::exception &) {
        drop_link(link, "out of memory");
        return false;
    }
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
    std::string name;
    if (!tls_name_or_drop(link, &name)) return;
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
    std::string name;
    if (!tls_name_or_drop(link, &name)) return;
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

void link_connect(RedisLink *link) {
    const ByokMain::RedisAddr *a = link_target(link);
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
        if (link->on_drop) link->on_drop(link);
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

std::string format_command(const std::vector<std::string> &args) {
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
    std::string out;
    try {
        out.assign(cmd, (size_t)len);
    } catch (...) {
        byok::wipe(cmd, (size_t)len);
        redisFreeCommand(cmd);
        throw;
    }
    byok::wipe(cmd, (size_t)len);  // may hold AUTH's password
    redisFreeCommand(cmd);
    return out;
}

void send_command(RedisLink *link, const std::vector<std::string> &args, ReplyFn fn, void *data,
                  ngx_msec_t timeout) {
    std::string cmd = format_command(args);
    try {
        send_raw(link, cmd, 1, fn, data, timeout);
    } catch (...) {
        byok::wipe(cmd.data(), cmd.size());
        throw;
    }
    byok::wipe(cmd.data(), cmd.size());  // may hold AUTH's password
}

void send_raw(RedisLink *link, std::string_view resp, size_t commands, ReplyFn fn, void *data,
              ngx_msec_t timeout) {
    size_t had = link->pending.size();
    link->obuf.append(resp);
    for (size_t i = 0; i < commands; i++)
        link->pending.push_back({fn, data, ngx_current_msec + timeout});
    if (had == 0 && commands > 0) arm_timeout(link);
    post_write(link);
}

}  // namespace ngx_byok_redis
