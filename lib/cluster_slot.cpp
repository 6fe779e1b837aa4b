#include "lib/cluster_slot.h"

namespace byok {

// Bitwise CRC16 (polynomial 0x1021, initial value 0, no reflection): a
// slot is computed per command, never per byte of traffic, so no table.
uint16_t crc16_xmodem(std::string_view data) {
    uint16_t crc = 0;
    for (unsigned char ch : data) {
        crc ^= static_cast<uint16_t>(ch << 8);
        for (int bit = 0; bit < 8; ++bit)
            crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                                 : static_cast<uint16_t>(crc << 1);
    }
    return crc;
}

uint16_t key_slot(std::string_view key) {
    size_t open = key.find('{');
    if (open != std::string_view::npos) {
        size_t close = key.find('}', open + 1);
        if (close != std::string_view::npos && close > open + 1)
            key = key.substr(open + 1, close - open - 1);
    }
    return crc16_xmodem(key) % kClusterSlots;
}

}  // namespace byok
