// What a new Redis link says before it carries anything (AUTH, SELECT,
// SUBSCRIBE, ROLE), the invalidation subscriber, and Sentinel: discover the
// primary, follow +switch-master, never write to a demoted primary.
#include "ngx_byok_module/ngx_byok_redis_link.h"

#include <arpa/inet.h>

namespace ngx_byok_redis {

namespace {

size_t g_sentinel_at = 0;       // which configured sentinel g_sentinel uses
ByokMain::RedisAddr g_primary;  // sentinel mode: the primary named last
bool g_have_primary = false;

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
    if (!is_str(reply->element[0], "message") || payload->type != REDIS_REPLY_STRING) return;
    std::string_view text(payload->str, payload->len);
    if (ngx_byok_health_message(text)) return;  // a key's health (issue 14)
    ngx_byok_cache_invalidate(text);
}

// --- sentinel ------------------------------------------------------------------

}  // namespace

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

namespace {

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

}  // namespace

bool sentinel_mode() { return !g_mcf->m->redis_master.empty(); }

void links_init_process() {
    init_link(&g_cmd, "command", nullptr);
    g_cmd.on_ready = command_link_ready;
    init_link(&g_sub, "subscriber", invalidation_message);
    init_link(&g_sentinel, "sentinel", sentinel_message);
    g_sentinel.on_drop = [](RedisLink *) { g_sentinel_at++; };  // the next try asks another
    if (cluster_mode()) {  // issue 16: node links per primary, see ngx_byok_redis_cluster.cpp
        cluster_init_process();
        link_connect(&g_sub);
        return;
    }
    if (sentinel_mode()) {
        g_sentinel_at = (size_t)ngx_random();  // spread the workers over the sentinels
        link_connect(&g_sentinel);
    }
    link_connect(&g_cmd);
    link_connect(&g_sub);
}

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

const ByokMain::RedisAddr *link_target(RedisLink *link) {
    ByokMain *m = g_mcf->m;
    if (link->target) return link->target;
    if (!sentinel_mode()) return &m->redis_addrs[0];
    if (link == &g_sentinel) return &m->redis_addrs[g_sentinel_at % m->redis_addrs.size()];
    return g_have_primary ? &g_primary : nullptr;
}

}  // namespace ngx_byok_redis
