// The SSRF policy for tenant-chosen endpoints (SPEC §10): which literal
// URLs may be stored and which resolved addresses may be connected to.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "lib/admin.h"

namespace byok::admin::detail {

std::string lower(std::string_view s);
// An IP literal as 16 bytes (IPv4 as ::ffff:a.b.c.d) or nullopt.
std::optional<std::array<uint8_t, 16>> parse_ip(std::string_view host);
// Why an IP is not a public unicast destination, or nullptr.
const char *private_ip(const std::array<uint8_t, 16> &a);
// `host` (lower case) is listed in byok_allow_endpoint.
bool host_allowed(const Config &cfg, const std::string &host);

}  // namespace byok::admin::detail
