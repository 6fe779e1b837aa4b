// Redis Cluster (byok_redis cluster=<seeds>; issue 16). lib/ keeps every key
// a command touches in one slot and names it first (lib/cluster_route.h),
// so the adapter routes each command by its first key's slot:
//
// - Slot map: CLUSTER SLOTS from any ready node (the seeds first), again
//   after a MOVED, a CLUSTERDOWN or a lost node link (at most one per
//   kRefreshGap), and every kRecheck while a primary of the map is not
//   reachable, so a failover (a replica promoted) is found even without a
//   MOVED.
// - One command link per node (RedisLink, made on first use and never
//   freed: at most kMaxNodes per worker). A command whose node link is not
//   ready, or whose slot has no node yet, waits (bounded) until its own
//   deadline (byok_redis timeout=), then fails as Unavailable (503): a
//   primary down fails only the commands of its slots, cached traffic goes
//   on.
// - MOVED: the slot is updated, the command resent to the node named and a
//   refresh scheduled. ASK: ASKING then the command on the node named, once,
//   map unchanged. TRYAGAIN / CLUSTERDOWN: resent after kRetryPause. At most
//   kMaxRedirects of them per command; a command is never resent after its
//   link dropped (it may have been applied).
// - Invalidation: the subscriber (g_sub) SUBSCRIBEs on one node (a cluster
//   delivers a PUBLISH to every node); when it cannot reach that node it
//   subscribes on the next one and, like a standalone subscriber,
//   revalidates the cache.
#include <memory>

#include "lib/cluster_route.h"
#include "lib/cluster_slot.h"
#include "ngx_byok_module/ngx_byok_redis_link.h"

namespace ngx_byok_redis {

namespace {

using byok::cluster::Redirect;

constexpr size_t kMaxNodes = 64;
constexpr size_t kMaxWaiting = 4096;
constexpr int kMaxRedirects = 5;
constexpr ngx_msec_t kRefreshGap = 200;  // rate limit of CLUSTER SLOTS
constexpr ngx_msec_t kRecheck = 1000;    // while a primary is unreachable
constexpr ngx_msec_t kRetryPause = 50;   // TRYAGAIN, CLUSTERDOWN; waiting commands

struct Node {
    ByokMain::RedisAddr addr;
    RedisLink link;
    std::string host, port;  // addr.name split (a refresh through this node)
};
std::vector<std::unique_ptr<Node>> g_nodes;  // seeds first
std::vector<int> g_slots;                    // slot -> node index, -1: no node known
bool g_have_map = false;

struct Command {
    std::string resp;  // kept to resend on MOVED, ASK, TRYAGAIN
    bool keyed = false;
    uint16_t slot = 0;
    int near = -1;  // keyless: the node of the write it follows
    int ask = -1;   // ASK: this node, once
    int sent_to = -1;
    int redirects = 0;
    ByokRedisWaiter *w = nullptr;  // nullptr: fire and forget
    ngx_msec_t deadline = 0;
    ngx_msec_t not_before = 0;
    ~Command() { byok::wipe(resp.data(), resp.size()); }
};
std::deque<Command *> g_waiting;
ngx_event_t g_pump_ev;  // retries the waiting commands

ngx_event_t g_refresh_ev;
bool g_refreshing = false;  // a CLUSTER SLOTS is out
ngx_msec_t g_last_refresh = 0;
size_t g_refresh_at = 0;  // round robin over the nodes asked
size_t g_sub_at = 0;      // the subscriber's node

void node_ready(RedisLink *link);
void node_dropped(RedisLink *link);
void request_refresh(ngx_msec_t delay);

// The node at host:port, added (not connected) if new; -1 when the address
// is not an IP literal or the worker knows kMaxNodes already.
int node_index(const std::string &host, const std::string &port) {
    ByokMain::RedisAddr addr;
    if (!make_addr(host, port, &addr)) return -1;
    for (size_t i = 0; i < g_nodes.size(); i++)
        if (g_nodes[i]->addr.name == addr.name) return (int)i;
    if (g_nodes.size() >= kMaxNodes) return -1;
    auto node = std::make_unique<Node>();
    node->addr = std::move(addr);
    node->host = host;
    node->port = port;
    init_link(&node->link, "cluster node", nullptr);
    node->link.target = &node->addr;
    node->link.on_ready = node_ready;
    node->link.on_drop = node_dropped;
    g_nodes.push_back(std::move(node));
    return (int)g_nodes.size() - 1;
}

void connect_node(int n) {
    RedisLink *link = &g_nodes[n]->link;
    link->retired = false;
    if (link->c == nullptr && !link->reconnect_ev.timer_set && !g_exiting) link_connect(link);
}

int any_ready_node() {
    for (size_t i = 0; i < g_nodes.size(); i++)
        if (g_nodes[i]->link.ready) return (int)i;
    return -1;
}

// --- commands ------------------------------------------------------------------

void finish(Command *cmd, redisReply *reply) {
    if (cmd->w) cmd->w->node = cmd->sent_to;
    finish_waiter(cmd->w, reply);
    delete cmd;
}

void arm_pump() {
    if (!g_waiting.empty() && !g_pump_ev.timer_set && !g_exiting)
        ngx_add_timer(&g_pump_ev, kRetryPause);
}

void wait_for_node(Command *cmd) {
    try {
        g_waiting.push_back(cmd);
    } catch (const std::exception &) {
        finish(cmd, nullptr);
        return;
    }
    arm_pump();
}

void asking_reply(RedisLink *, redisReply *, void *) {}  // an error: the command says MOVED
void command_reply(RedisLink *link, redisReply *reply, void *data);

int target_of(const Command *cmd) {
    if (cmd->ask >= 0) return cmd->ask;
    if (cmd->keyed) return g_slots.empty() ? -1 : g_slots[cmd->slot];
    if (cmd->near >= 0 && (size_t)cmd->near < g_nodes.size()) return cmd->near;
    return any_ready_node();
}

// Sends the command to its node now, or lets it wait for the node (or the
// map) until its deadline.
void dispatch(Command *cmd) {
    ngx_msec_t now = ngx_current_msec;
    if (now >= cmd->deadline) {
        finish(cmd, nullptr);
        return;
    }
    int n = target_of(cmd);
    if (n < 0 || !g_nodes[n]->link.ready || now < cmd->not_before) {
        if (n >= 0) connect_node(n);
        if (n < 0 && cmd->keyed) request_refresh(0);  // a slot nobody serves yet
        wait_for_node(cmd);
        return;
    }
    RedisLink *link = &g_nodes[n]->link;
    try {
        if (cmd->ask == n)
            send_command(link, {"ASKING"}, asking_reply, nullptr, cmd->deadline - now);
        send_raw(link, cmd->resp, 1, command_reply, cmd, cmd->deadline - now);
    } catch (const std::exception &) {
        drop_link(link, "out of memory");  // its buffer may hold part of the command
        finish(cmd, nullptr);
        return;
    }
    cmd->sent_to = n;
}

void pump_handler(ngx_event_t *) {
    std::deque<Command *> waiting;
    waiting.swap(g_waiting);
    for (Command *cmd : waiting) dispatch(cmd);
    arm_pump();
}

void command_reply(RedisLink *, redisReply *reply, void *data) {
    auto *cmd = static_cast<Command *>(data);
    if (reply == nullptr || reply->type != REDIS_REPLY_ERROR) {
        finish(cmd, reply);  // nullptr: the link dropped, never resent (it may have run)
        return;
    }
    Redirect r = byok::cluster::parse_redirect(std::string_view(reply->str, reply->len));
    if (r.kind == Redirect::Kind::None) {
        finish(cmd, reply);
        return;
    }
    if (++cmd->redirects > kMaxRedirects || ngx_current_msec >= cmd->deadline) {
        finish(cmd, nullptr);  // not applied: Unavailable (503), the client may retry
        return;
    }
    cmd->ask = -1;
    switch (r.kind) {
        case Redirect::Kind::Moved: {
            int n = node_index(r.host, r.port);
            if (n < 0) {
                finish(cmd, nullptr);
                return;
            }
            if (!g_slots.empty()) g_slots[r.slot] = n;
            request_refresh(0);
            break;
        }
        case Redirect::Kind::Ask:
            cmd->ask = node_index(r.host, r.port);
            if (cmd->ask < 0) {
                finish(cmd, nullptr);
                return;
            }
            break;
        case Redirect::Kind::ClusterDown:
            request_refresh(0);
            [[fallthrough]];
        default:  // TRYAGAIN: the slot is being migrated, its keys are split
            cmd->not_before = ngx_current_msec + kRetryPause;
            break;
    }
    dispatch(cmd);
}

Command *make_command(std::string resp, const std::vector<std::string_view> &argv,
                      ByokRedisWaiter *w, int near) {
    auto cmd = std::make_unique<Command>();
    cmd->resp = std::move(resp);
    if (auto key = byok::cluster::routing_key(argv)) {
        cmd->keyed = true;
        cmd->slot = byok::key_slot(*key);
    }
    cmd->near = near;
    cmd->w = w;
    cmd->deadline = ngx_current_msec + g_mcf->redis_timeout;
    return cmd.release();
}

// --- slot map ------------------------------------------------------------------

// Primaries are linked and kept; nodes out of the map (a demoted primary, a
// seed that is a replica) are not reconnected once their link drops.
void apply_map(const std::vector<byok::cluster::SlotRange> &ranges) {
    std::vector<int> slots(byok::kClusterSlots, -1);
    for (const auto &r : ranges) {
        int n = node_index(r.host, r.port);
        if (n < 0) continue;
        for (unsigned s = r.first; s <= r.last; s++) slots[s] = n;
    }
    std::vector<bool> primary(g_nodes.size(), false);
    bool complete = true;
    for (int n : slots) {
        if (n >= 0) primary[n] = true;
        complete = complete && n >= 0;
    }
    g_slots.swap(slots);
    g_have_map = true;
    bool unreachable = !complete;
    for (size_t i = 0; i < g_nodes.size(); i++) {
        g_nodes[i]->link.retired = !primary[i];
        if (!primary[i]) continue;
        connect_node((int)i);
        unreachable = unreachable || !g_nodes[i]->link.ready;
    }
    if (unreachable) request_refresh(kRecheck);
}

void slots_reply(RedisLink *link, redisReply *reply, void *data) {
    g_refreshing = false;
    g_last_refresh = ngx_current_msec;
    const Node *asked = g_nodes[(size_t)data].get();
    std::optional<std::vector<byok::cluster::SlotRange>> ranges;
    if (reply != nullptr && reply->type != REDIS_REPLY_ERROR) {
        try {
            ranges = byok::cluster::parse_slots(convert(reply), asked->host);
            if (ranges && !ranges->empty()) apply_map(*ranges);
        } catch (const std::exception &) {
            ranges.reset();
        }
    }
    if (!ranges || ranges->empty()) {
        ngx_log_error(NGX_LOG_WARN, g_log, 0, BYOK_LOG "redis cluster node %V gave no slot map",
                      &link->peer_name);
        g_refresh_at++;
        request_refresh(kRecheck);
    }
    pump_handler(nullptr);
}

void refresh_handler(ngx_event_t *) {
    if (g_refreshing || g_exiting) return;
    for (size_t i = 0; i < g_nodes.size(); i++) {
        size_t n = (g_refresh_at + i) % g_nodes.size();
        RedisLink *link = &g_nodes[n]->link;
        if (!link->ready) continue;
        try {
            send_command(link, {"CLUSTER", "SLOTS"}, slots_reply, (void *)n, g_mcf->redis_timeout);
        } catch (const std::exception &) {
            drop_link(link, "out of memory");
            continue;
        }
        g_refreshing = true;
        return;
    }
    // No node link is ready: connect the seeds and the known primaries; the
    // first one ready asks (node_ready).
    for (size_t i = 0; i < g_nodes.size(); i++)
        if (i < g_mcf->m->redis_addrs.size() || !g_nodes[i]->link.retired) connect_node((int)i);
}

void request_refresh(ngx_msec_t delay) {
    if (g_exiting || g_refresh_ev.timer_set) return;
    ngx_msec_t now = ngx_current_msec, earliest = g_last_refresh + kRefreshGap;
    if (earliest > now + delay) delay = earliest - now;
    ngx_add_timer(&g_refresh_ev, delay > 0 ? delay : 1);
}

void node_ready(RedisLink *) {
    if (!g_have_map || (!g_refreshing && !g_refresh_ev.timer_set)) request_refresh(0);
    pump_handler(nullptr);
}

void node_dropped(RedisLink *) { request_refresh(0); }

// A subscriber that was set up and dropped tries its node again first (a
// whole cluster going down must not find a node still up in between and
// revalidate the cache); one that could not connect or subscribe moves to
// the next node (subscriber_ready then revalidates the cache, as after any
// lost subscription).
void subscriber_dropped(RedisLink *link) {
    if (link->ready) return;  // drop_link runs this before it clears `ready`
    g_sub_at++;
    link->target = &g_nodes[g_sub_at % g_nodes.size()]->addr;
}

}  // namespace

bool cluster_mode() { return g_mcf->m->redis_cluster; }

void cluster_init_process() {
    g_nodes.clear();
    g_slots.clear();
    g_waiting.clear();
    g_have_map = false;
    g_refreshing = false;
    g_last_refresh = 0;
    for (const auto &seed : g_mcf->m->redis_addrs) {
        auto node = std::make_unique<Node>();
        node->addr = seed;
        size_t colon = seed.name.rfind(':');
        node->host = seed.name.substr(0, colon);
        if (node->host.size() > 2 && node->host.front() == '[')
            node->host = node->host.substr(1, node->host.size() - 2);
        node->port = seed.name.substr(colon + 1);
        init_link(&node->link, "cluster node", nullptr);
        node->link.target = &node->addr;
        node->link.on_ready = node_ready;
        node->link.on_drop = node_dropped;
        g_nodes.push_back(std::move(node));
    }
    for (ngx_event_t *ev : {&g_pump_ev, &g_refresh_ev}) {
        ngx_memzero(ev, sizeof(*ev));
        ev->log = g_log;
        ev->cancelable = 1;
    }
    g_pump_ev.handler = pump_handler;
    g_refresh_ev.handler = refresh_handler;
    // Spread the workers' subscribers and first questions over the seeds.
    g_sub_at = g_refresh_at = (size_t)ngx_random();
    g_sub.target = &g_nodes[g_sub_at % g_nodes.size()]->addr;
    g_sub.on_drop = subscriber_dropped;
    connect_node((int)(g_refresh_at % g_nodes.size()));
}

void cluster_exit_process() {
    for (auto &node : g_nodes) {
        RedisLink *link = &node->link;
        if (link->reconnect_ev.timer_set) ngx_del_timer(&link->reconnect_ev);
        drop_link(link, "exiting");
        if (link->timeout_ev.timer_set) ngx_del_timer(&link->timeout_ev);
    }
    for (ngx_event_t *ev : {&g_pump_ev, &g_refresh_ev})
        if (ev->timer_set) ngx_del_timer(ev);
    std::deque<Command *> waiting;
    waiting.swap(g_waiting);
    for (Command *cmd : waiting) finish(cmd, nullptr);
}

bool cluster_available() { return g_have_map && any_ready_node() >= 0; }

bool cluster_send(const std::vector<std::string> &argv, ByokRedisWaiter *w, int near) {
    if (g_exiting || g_waiting.size() >= kMaxWaiting) return false;
    Command *cmd;
    try {
        std::vector<std::string_view> views(argv.begin(), argv.end());
        cmd = make_command(format_command(argv), views, w, near);
    } catch (const std::exception &) {
        return false;
    }
    dispatch(cmd);
    return true;
}

void cluster_send_raw(std::string_view resp, size_t commands) {
    for (size_t i = 0; i < commands; i++) {
        auto one = byok::cluster::first_command(resp);
        if (!one || g_exiting || g_waiting.size() >= kMaxWaiting) {
            ngx_byok_count(BYOK_REDIS_ERROR);
            return;
        }
        Command *cmd;
        try {
            cmd = make_command(std::string(resp.substr(0, one->size)), one->argv, nullptr, -1);
        } catch (const std::exception &) {
            ngx_byok_count(BYOK_REDIS_ERROR);
            return;
        }
        resp.remove_prefix(one->size);
        dispatch(cmd);
    }
}

}  // namespace ngx_byok_redis
