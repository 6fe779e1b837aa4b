// The SSRF policy for tenant-chosen endpoints (SPEC §10), moved unchanged
// out of admin_keys.cpp.
#include "lib/endpoint_policy.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "lib/admin_internal.h"

namespace byok::admin::detail {

namespace {

bool prefix_match(const std::array<uint8_t, 16> &a, const std::array<uint8_t, 16> &net, int bits) {
    for (int i = 0; i < 16 && bits > 0; ++i, bits -= 8) {
        uint8_t mask = bits >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - bits));
        if ((a[i] & mask) != (net[i] & mask)) return false;
    }
    return true;
}

bool in_cidr(const std::array<uint8_t, 16> &a, const char *cidr) {
    std::string s(cidr);
    size_t slash = s.find('/');
    auto net = parse_ip(s.substr(0, slash));
    if (!net) return false;
    int bits = std::stoi(s.substr(slash + 1));
    if (s.find(':') == std::string::npos) bits += 96;  // IPv4 inside ::ffff:0:0/96
    return prefix_match(a, *net, bits);
}

// A host whose last label is numeric is an IP attempt ("127.1", "0x7f.1",
// "2130706433") that resolvers accept but inet_pton does not.
bool numeric_host(const std::string &host) {
    size_t dot = host.rfind('.');
    std::string last = dot == std::string::npos ? host : host.substr(dot + 1);
    if (last.empty()) return false;
    if (last.size() > 2 && last[0] == '0' && last[1] == 'x') return true;
    return std::all_of(last.begin(), last.end(), ::isdigit);
}

}  // namespace

std::string lower(std::string_view s) {
    std::string out(s);
    for (auto &ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    while (!out.empty() && out.back() == '.') out.pop_back();
    return out;
}

// An IP literal as 16 bytes (IPv4 as ::ffff:a.b.c.d) or nullopt.
std::optional<std::array<uint8_t, 16>> parse_ip(std::string_view host) {
    std::string h(host);
    std::array<uint8_t, 16> a{};
    in_addr v4{};
    if (inet_pton(AF_INET, h.c_str(), &v4) == 1) {
        a[10] = a[11] = 0xff;
        std::memcpy(a.data() + 12, &v4, 4);
        return a;
    }
    if (inet_pton(AF_INET6, h.c_str(), a.data()) == 1) return a;
    return std::nullopt;
}

// Why an IP is not a public unicast destination, or nullptr.
const char *private_ip(const std::array<uint8_t, 16> &a) {
    static const char *const v4[] = {"0.0.0.0/8",      "10.0.0.0/8",     "100.64.0.0/10",
                                     "127.0.0.0/8",    "169.254.0.0/16", "172.16.0.0/12",
                                     "192.168.0.0/16", "224.0.0.0/4",    "240.0.0.0/4"};
    static const char *const v6[] = {"::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8"};
    std::array<uint8_t, 16> mapped = a;
    // NAT64 (64:ff9b::/96) and IPv4-compatible (::/96) embed an IPv4 address.
    if (in_cidr(a, "64:ff9b::/96") || (in_cidr(a, "::/96") && !in_cidr(a, "::/127"))) {
        std::memset(mapped.data(), 0, 10);
        mapped[10] = mapped[11] = 0xff;
    }
    bool is_v4 = in_cidr(mapped, "::ffff:0:0/96");
    if (is_v4) {
        for (const char *c : v4)
            if (in_cidr(mapped, c)) return "a private, loopback or link-local address";
    } else {
        for (const char *c : v6)
            if (in_cidr(a, c)) return "a private, loopback or link-local address";
    }
    return nullptr;
}

bool host_allowed(const Config &cfg, const std::string &host) {
    auto ip = parse_ip(host);
    for (const auto &entry : cfg.allow_endpoint) {
        size_t slash = entry.find('/');
        if (slash != std::string::npos) {
            if (!ip) continue;
            auto net = parse_ip(entry.substr(0, slash));
            const std::string bits_s = entry.substr(slash + 1);
            if (!net || bits_s.empty() || bits_s.size() > 3 ||
                !std::all_of(bits_s.begin(), bits_s.end(), ::isdigit))
                continue;
            int bits = std::stoi(bits_s);
            if (entry.find(':') == std::string::npos) bits += 96;
            if (bits <= 128 && prefix_match(*ip, *net, bits)) return true;
        } else if (ip) {
            auto other = parse_ip(entry);
            if (other && *other == *ip) return true;
        } else if (lower(entry) == host) {
            return true;
        }
    }
    return false;
}

// ---- endpoint rules (SPEC §10) -------------------------------------------
// Checked here on the literal URL. Names that resolve to private addresses
// can only be caught after resolution, which is the glue's job.
std::string endpoint_problem(const Config &cfg, std::string_view endpoint,
                             std::string *normalized) {
    Url u;
    try {
        u = parse_url(endpoint, "endpoint");
    } catch (const Error &e) {
        return e.what();
    }
    std::string host = lower(u.host);
    bool allowed = host_allowed(cfg, host);
    if (!allowed) {
        if (u.scheme != "https")
            return "field 'endpoint' must use https unless its host is in byok_allow_endpoint";
        if (host == "localhost" ||
            (host.size() > 10 && host.compare(host.size() - 10, 10, ".localhost") == 0))
            return "field 'endpoint' points to a loopback host";
        if (auto ip = parse_ip(host)) {
            if (const char *why = private_ip(*ip))
                return std::string("field 'endpoint' points to ") + why;
        } else if (numeric_host(host)) {
            return "field 'endpoint' has a host that is not a valid address";
        }
    }
    if (normalized) *normalized = u.origin() + u.path;
    return "";
}

bool endpoint_host_allowed(const Config &cfg, std::string_view host) {
    return host_allowed(cfg, lower(host));
}

}  // namespace byok::admin::detail

namespace byok::admin {

bool allow_listed(const Config &cfg, std::string_view host) {
    return detail::endpoint_host_allowed(cfg, host);
}

std::string resolved_address_problem(const Config &cfg, std::string_view host,
                                     std::string_view ip) {
    if (detail::host_allowed(cfg, detail::lower(host)) ||
        detail::host_allowed(cfg, detail::lower(ip)))
        return "";
    auto addr = detail::parse_ip(ip);
    if (!addr) return "the host did not resolve to an IP address";
    if (const char *why = detail::private_ip(*addr))
        return std::string("the host resolves to ") + why;
    return "";
}

}  // namespace byok::admin
