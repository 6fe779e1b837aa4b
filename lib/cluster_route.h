// Redis Cluster routing rules for the glue's Redis adapter
// (ngx_byok_redis_cluster.cpp): which key a command is routed by, what a
// redirect error says, what CLUSTER SLOTS answers. The slot of a key is
// lib/cluster_slot.h. Pure data in, data out: the adapter only applies it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/redis_reply.h"

namespace byok::cluster {

// The key whose slot names the node a command goes to (the contract with
// lib/: every script declares all its keys in one slot, KEYS[1] first):
// EVAL / EVALSHA: KEYS[1] when numkeys >= 1; keyless commands (PING,
// PUBLISH, WAIT, ROLE, INFO, SCRIPT, CLUSTER, ...) and a script without
// keys: none (any node, or the node of the write a WAIT follows); any other
// command: argv[1].
std::optional<std::string_view> routing_key(const std::vector<std::string_view> &argv);

// The first whole command of a RESP buffer (`*N\r\n` then N bulk strings,
// as redisFormatCommandArgv and lib/metering.h write them): its arguments
// (views into `resp`) and its length in bytes. nullopt when `resp` does not
// start with one well-formed complete command.
struct RespCommand {
    std::vector<std::string_view> argv;
    size_t size = 0;
};
std::optional<RespCommand> first_command(std::string_view resp);

// An error reply that asks the client to go elsewhere or to wait.
struct Redirect {
    enum class Kind { None, Moved, Ask, TryAgain, ClusterDown };
    Kind kind = Kind::None;
    uint16_t slot = 0;
    std::string host;  // Moved / Ask: the node named, "ip" (IPv6 without brackets)
    std::string port;
};
// "MOVED 3999 127.0.0.1:6381", "ASK 3999 127.0.0.1:6381", "TRYAGAIN ...",
// "CLUSTERDOWN ..."; anything else (or a malformed MOVED / ASK) is None.
Redirect parse_redirect(std::string_view error);

// One contiguous slot range and its primary, from CLUSTER SLOTS.
struct SlotRange {
    uint16_t first = 0;
    uint16_t last = 0;
    std::string host;
    std::string port;
};
// CLUSTER SLOTS: [[first, last, [ip, port, id, ...], replica...], ...].
// nullopt when the reply is not of that shape or a range is out of bounds;
// an empty host (a node that does not know its own address) is `seed_host`,
// the address the reply came from.
std::optional<std::vector<SlotRange>> parse_slots(const Reply &r, std::string_view seed_host);

}  // namespace byok::cluster
