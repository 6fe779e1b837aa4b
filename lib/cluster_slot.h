// Redis Cluster hash slots (https://redis.io/docs/reference/cluster-spec/):
// CRC16-XMODEM of the key, or of its hash tag — the part between the first
// `{` and the next `}` when that part is not empty — modulo 16384. The key
// layout (lib/layout.h) tags every key of a project with `{pid}` so a
// project's scripts stay in one slot; the adapter routes a command to the
// node that serves its first key's slot.
#pragma once

#include <cstdint>
#include <string_view>

namespace byok {

constexpr uint16_t kClusterSlots = 16384;

uint16_t crc16_xmodem(std::string_view data);
uint16_t key_slot(std::string_view key);

}  // namespace byok
