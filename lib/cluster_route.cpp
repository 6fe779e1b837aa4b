#include "lib/cluster_route.h"

#include <cctype>

#include "lib/cluster_slot.h"

namespace byok::cluster {

namespace {

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i++)
        if (std::toupper(static_cast<unsigned char>(a[i])) !=
            std::toupper(static_cast<unsigned char>(b[i])))
            return false;
    return true;
}

// Commands without a key: they go to any node (WAIT: to the node of the
// write it follows, which the caller names).
bool keyless(std::string_view cmd) {
    for (std::string_view k : {"PING", "PUBLISH", "WAIT", "ROLE", "INFO", "SCRIPT", "CLUSTER",
                               "ASKING", "AUTH", "SELECT", "TIME", "DBSIZE", "SUBSCRIBE"})
        if (iequals(cmd, k)) return true;
    return false;
}

// A decimal number of at most 9 digits; nullopt otherwise.
std::optional<size_t> small_number(std::string_view s) {
    if (s.empty() || s.size() > 9) return std::nullopt;
    size_t n = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        n = n * 10 + static_cast<size_t>(c - '0');
    }
    return n;
}

// "<number>\r\n" at `at`; advances `at` past it.
std::optional<size_t> resp_length(std::string_view resp, size_t &at) {
    size_t end = resp.find("\r\n", at);
    if (end == std::string_view::npos) return std::nullopt;
    auto n = small_number(resp.substr(at, end - at));
    at = end + 2;
    return n;
}

}  // namespace

std::optional<std::string_view> routing_key(const std::vector<std::string_view> &argv) {
    if (argv.empty() || keyless(argv[0])) return std::nullopt;
    if (iequals(argv[0], "EVAL") || iequals(argv[0], "EVALSHA")) {
        if (argv.size() < 4) return std::nullopt;
        auto numkeys = small_number(argv[2]);
        if (!numkeys || *numkeys == 0) return std::nullopt;
        return argv[3];
    }
    if (argv.size() < 2) return std::nullopt;
    return argv[1];
}

std::optional<RespCommand> first_command(std::string_view resp) {
    if (resp.empty() || resp[0] != '*') return std::nullopt;
    size_t at = 1;
    auto n = resp_length(resp, at);
    if (!n || *n == 0) return std::nullopt;
    RespCommand out;
    out.argv.reserve(*n);
    for (size_t i = 0; i < *n; i++) {
        if (at >= resp.size() || resp[at] != '$') return std::nullopt;
        at++;
        auto len = resp_length(resp, at);
        if (!len || resp.size() - at < *len + 2 || resp.substr(at + *len, 2) != "\r\n")
            return std::nullopt;
        out.argv.push_back(resp.substr(at, *len));
        at += *len + 2;
    }
    out.size = at;
    return out;
}

Redirect parse_redirect(std::string_view error) {
    Redirect out;
    auto word = [&error](size_t i) {
        size_t at = 0;
        for (; i > 0; i--) {
            at = error.find(' ', at);
            if (at == std::string_view::npos) return std::string_view();
            at++;
        }
        return error.substr(at, error.find(' ', at) - at);
    };
    std::string_view kind = word(0);
    if (kind == "TRYAGAIN") out.kind = Redirect::Kind::TryAgain;
    if (kind == "CLUSTERDOWN") out.kind = Redirect::Kind::ClusterDown;
    if (kind != "MOVED" && kind != "ASK") return out;
    auto slot = small_number(word(1));
    std::string_view node = word(2);
    size_t colon = node.rfind(':');
    if (!slot || *slot >= kClusterSlots || colon == std::string_view::npos || colon == 0 ||
        !small_number(node.substr(colon + 1)) || !word(3).empty())
        return out;
    std::string_view host = node.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    out.kind = kind == "MOVED" ? Redirect::Kind::Moved : Redirect::Kind::Ask;
    out.slot = static_cast<uint16_t>(*slot);
    out.host = std::string(host);
    out.port = std::string(node.substr(colon + 1));
    return out;
}

std::optional<std::vector<SlotRange>> parse_slots(const Reply &r, std::string_view seed_host) {
    if (r.type != Reply::Type::Array) return std::nullopt;
    std::vector<SlotRange> out;
    for (const Reply &range : r.elements) {
        if (range.type != Reply::Type::Array || range.elements.size() < 3) return std::nullopt;
        const Reply &first = range.elements[0], &last = range.elements[1];
        const Reply &node = range.elements[2];
        if (first.type != Reply::Type::Integer || last.type != Reply::Type::Integer ||
            first.integer < 0 || last.integer < first.integer || last.integer >= kClusterSlots ||
            node.type != Reply::Type::Array || node.elements.size() < 2 ||
            node.elements[0].type != Reply::Type::String ||
            node.elements[1].type != Reply::Type::Integer || node.elements[1].integer <= 0 ||
            node.elements[1].integer > 65535)
            return std::nullopt;
        SlotRange s;
        s.first = static_cast<uint16_t>(first.integer);
        s.last = static_cast<uint16_t>(last.integer);
        s.host = node.elements[0].str.empty() ? std::string(seed_host) : node.elements[0].str;
        s.port = std::to_string(node.elements[1].integer);
        out.push_back(std::move(s));
    }
    return out;
}

}  // namespace byok::cluster
