#include "lib/project.h"

#include <cstring>

#include "lib/record.h"

namespace byok {

std::optional<Tier> parse_tier(std::string_view s) {
    if (s == "free") return Tier::Free;
    if (s == "starter") return Tier::Starter;
    if (s == "pro") return Tier::Pro;
    if (s == "enterprise") return Tier::Enterprise;
    return std::nullopt;
}

std::string_view tier_name(Tier t) {
    switch (t) {
        case Tier::Free:
            return "free";
        case Tier::Starter:
            return "starter";
        case Tier::Pro:
            return "pro";
        case Tier::Enterprise:
            return "enterprise";
    }
    return "free";
}

bool byok_allowed(Tier t) { return t >= Tier::Starter; }

std::optional<Policy> parse_policy(std::string_view s) {
    if (s == "auto") return Policy::Auto;
    if (s == "no_key") return Policy::NoKey;
    if (s == "off") return Policy::Off;
    return std::nullopt;
}

std::string_view policy_name(Policy p) {
    switch (p) {
        case Policy::Auto:
            return "auto";
        case Policy::NoKey:
            return "no_key";
        case Policy::Off:
            return "off";
    }
    return "auto";
}

const StoredKey *GatewaySnapshot::find_key(std::string_view provider) const {
    for (const auto &k : keys) {
        if (k.provider == provider) return &k;
    }
    return nullptr;
}

const StoredKey *GatewaySnapshot::find_key(std::string_view provider, std::string_view id) const {
    for (const auto &k : keys) {
        if (k.provider == provider && k.id == id) return &k;
    }
    return nullptr;
}

namespace {

std::string_view field(const FieldMap &m, std::string_view name) {
    auto it = m.find(name);
    return it == m.end() ? std::string_view() : std::string_view(it->second);
}

}  // namespace

GatewaySnapshot build_snapshot(const FieldMap &apikey, const FieldMap &project,
                               const FieldMap &keys) {
    GatewaySnapshot s;
    if (apikey.empty()) return s;  // Unknown
    s.project = std::string(field(apikey, "project"));
    s.key_id = std::string(field(apikey, "id"));
    s.key_expires_at = parse_rfc3339(field(apikey, "expires_at")).value_or(0);
    std::string_view revoked = field(apikey, "revoked");
    if (!revoked.empty() && revoked != "0") {
        s.status = GatewaySnapshot::Status::Revoked;
        return s;
    }
    if (s.project.empty() || project.empty()) return s;  // Unknown

    s.status = GatewaySnapshot::Status::Ok;
    // A missing or unknown tier grants nothing; an unknown policy never spends
    // operator money. A missing policy is the documented default, auto.
    s.tier = parse_tier(field(project, "tier")).value_or(Tier::Free);
    std::string_view pol = field(project, "fallback");
    s.policy = pol.empty() ? Policy::Auto : parse_policy(pol).value_or(Policy::Off);
    s.default_server = std::string(field(project, "default_server"));
    s.fallback_on_rate_limit = field(project, "fallback_on_rate_limit") != "false";
    s.default_provider = std::string(field(project, "default_provider"));
    if (std::string_view l = field(project, "limits"); !l.empty()) {
        try {
            s.limits = parse_limits(l);
        } catch (const Error &) {
            // Only the admin API writes it, validated: a broken value is
            // no limit rather than a project that cannot be served.
        }
    }

    s.keys.reserve(keys.size());
    for (const auto &[provider, json] : keys) {
        std::vector<KeyRecord> set;
        try {
            set = parse_key_set(json);
        } catch (const Error &) {
            StoredKey k;
            k.provider = provider;
            k.malformed = true;
            s.keys.push_back(std::move(k));
            continue;
        }
        for (auto &r : set) {
            StoredKey k;
            k.provider = provider;
            k.is_active = r.is_active;
            k.v = r.sealed.v;
            k.kid = std::move(r.sealed.kid);
            k.salt = std::move(r.sealed.salt);
            k.nonce = std::move(r.sealed.nonce);
            k.ct = std::move(r.sealed.ct);
            k.endpoint = std::move(r.endpoint);
            k.key_hint = std::move(r.key_hint);
            k.id = std::move(r.id);
            k.weight = r.weight;
            k.expires_at = parse_rfc3339(r.expires_at).value_or(0);
            s.keys.push_back(std::move(k));
        }
    }
    return s;
}

SecretString open_stored_key(const KeyRing &ring, std::string_view pid, const StoredKey &k) {
    return open_sealed(ring, k.v, k.kid, k.salt.data(), k.salt.size(), k.nonce.data(),
                       k.nonce.size(), k.ct.data(), k.ct.size(),
                       key_binding(pid, k.provider, k.endpoint));
}

// ---------------------------------------------------------------- binary form
//
// "BYS2" | u8 status | u8 tier | u8 policy | u8 flags (1 no fallback on 429)
// | str project | str default_server | str default_provider
// | u32 nkeys | per key: str provider | u8 flags (1 active, 2 malformed,
// 4 record version 2) | str kid | str salt
// | str nonce | str ct | str endpoint | str key_hint | str key_id
// (key_id last and optional, so blobs cached before it still decode)
// | u64 gateway-key expires_at | per key: str id | u32 weight | u64
// expires_at (issue 14; optional too) | i64 requests_per_minute, tokens_per_day,
// cost_per_month_micro, u8 scope (issue 13; only for a limited project)
// where integers are little-endian and str = u32 length + bytes.

namespace {

constexpr char kMagic[4] = {'B', 'Y', 'S', '2'};

void put_u32(std::string &out, uint32_t v) {
    char b[4] = {char(v & 0xff), char((v >> 8) & 0xff), char((v >> 16) & 0xff),
                 char((v >> 24) & 0xff)};
    out.append(b, 4);
}

void put_i64(std::string &out, int64_t v) {
    auto u = static_cast<uint64_t>(v);
    put_u32(out, static_cast<uint32_t>(u & 0xffffffffu));
    put_u32(out, static_cast<uint32_t>(u >> 32));
}

void put_str(std::string &out, std::string_view s) {
    put_u32(out, static_cast<uint32_t>(s.size()));
    out.append(s);
}

void put_bytes(std::string &out, const Bytes &b) {
    put_str(out, std::string_view(reinterpret_cast<const char *>(b.data()), b.size()));
}

struct Reader {
    std::string_view in;
    size_t pos = 0;

    [[noreturn]] static void corrupt() { throw Error("cached snapshot is truncated or corrupt"); }
    uint8_t u8() {
        if (pos + 1 > in.size()) corrupt();
        return static_cast<uint8_t>(in[pos++]);
    }
    uint32_t u32() {
        if (in.size() - pos < 4) corrupt();
        uint32_t v = 0;
        for (int i = 3; i >= 0; i--) v = (v << 8) | static_cast<uint8_t>(in[pos + i]);
        pos += 4;
        return v;
    }
    int64_t i64() {
        uint64_t lo = u32(), hi = u32();
        return static_cast<int64_t>(lo | (hi << 32));
    }
    std::string_view view() {
        uint32_t n = u32();
        if (in.size() - pos < n) corrupt();
        std::string_view v = in.substr(pos, n);
        pos += n;
        return v;
    }
    std::string str() { return std::string(view()); }
    Bytes bytes() {
        std::string_view v = view();
        return Bytes(v.begin(), v.end());
    }
};

}  // namespace

std::string encode_snapshot(const GatewaySnapshot &s) {
    std::string out;
    size_t est = 36 + s.project.size() + s.default_server.size() + s.default_provider.size();
    for (const auto &k : s.keys) {
        est += 40 + k.provider.size() + k.kid.size() + k.salt.size() + k.nonce.size() +
               k.ct.size() + k.endpoint.size() + k.key_hint.size();
    }
    out.reserve(est);
    out.append(kMagic, 4);
    out.push_back(static_cast<char>(s.status));
    out.push_back(static_cast<char>(s.tier));
    out.push_back(static_cast<char>(s.policy));
    out.push_back(static_cast<char>(s.fallback_on_rate_limit ? 0 : 1));
    put_str(out, s.project);
    put_str(out, s.default_server);
    put_str(out, s.default_provider);
    put_u32(out, static_cast<uint32_t>(s.keys.size()));
    for (const auto &k : s.keys) {
        put_str(out, k.provider);
        out.push_back(
            static_cast<char>((k.is_active ? 1 : 0) | (k.malformed ? 2 : 0) | (k.v == 2 ? 4 : 0)));
        put_str(out, k.kid);
        put_bytes(out, k.salt);
        put_bytes(out, k.nonce);
        put_bytes(out, k.ct);
        put_str(out, k.endpoint);
        put_str(out, k.key_hint);
    }
    put_str(out, s.key_id);
    put_i64(out, s.key_expires_at);
    for (const auto &k : s.keys) {
        put_str(out, k.id);
        put_u32(out, static_cast<uint32_t>(k.weight));
        put_i64(out, k.expires_at);
    }
    if (s.limits.any()) {
        for (int64_t v :
             {s.limits.requests_per_minute, s.limits.tokens_per_day, s.limits.cost_per_month_micro})
            put_i64(out, v);
        out.push_back(static_cast<char>(s.limits.scope));
    }
    return out;
}

GatewaySnapshot decode_snapshot(std::string_view blob) {
    Reader r{blob};
    if (blob.size() < 4 || std::memcmp(blob.data(), kMagic, 4) != 0) Reader::corrupt();
    r.pos = 4;
    GatewaySnapshot s;
    uint8_t status = r.u8(), tier = r.u8(), policy = r.u8(), settings = r.u8();
    if (status > 2 || tier > 3 || policy > 2 || settings > 1) Reader::corrupt();
    s.fallback_on_rate_limit = (settings & 1) == 0;
    s.status = static_cast<GatewaySnapshot::Status>(status);
    s.tier = static_cast<Tier>(tier);
    s.policy = static_cast<Policy>(policy);
    s.project = r.str();
    s.default_server = r.str();
    s.default_provider = r.str();
    uint32_t n = r.u32();
    // Each key needs at least 29 bytes; refuse absurd counts before reserving.
    if (n > (blob.size() - r.pos) / 29) Reader::corrupt();
    s.keys.reserve(n);
    for (uint32_t i = 0; i < n; i++) {
        StoredKey k;
        k.provider = r.str();
        uint8_t flags = r.u8();
        if (flags > 7) Reader::corrupt();
        k.is_active = (flags & 1) != 0;
        k.malformed = (flags & 2) != 0;
        k.v = (flags & 4) != 0 ? 2 : 1;
        k.kid = r.str();
        k.salt = r.bytes();
        k.nonce = r.bytes();
        k.ct = r.bytes();
        k.endpoint = r.str();
        k.key_hint = r.str();
        s.keys.push_back(std::move(k));
    }
    if (r.pos != blob.size()) s.key_id = r.str();
    if (r.pos != blob.size()) {
        s.key_expires_at = r.i64();
        for (auto &k : s.keys) {
            k.id = r.str();
            k.weight = static_cast<int>(r.u32());
            k.expires_at = r.i64();
            if (k.weight < 1 || k.weight > 100) Reader::corrupt();
        }
    }
    if (r.pos != blob.size()) {  // limits: only a limited project has them
        for (int64_t *v : {&s.limits.requests_per_minute, &s.limits.tokens_per_day,
                           &s.limits.cost_per_month_micro}) {
            *v = r.i64();
            if (*v < 0) Reader::corrupt();
        }
        uint8_t scope = r.u8();
        if (scope > 1) Reader::corrupt();
        s.limits.scope = static_cast<ProjectLimits::Scope>(scope);
    }
    if (r.pos != blob.size()) Reader::corrupt();
    return s;
}

}  // namespace byok
