// Project settings and the per-gateway-key snapshot the request path caches
// in shared memory (encrypted records only, never plaintext).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/crypto.h"
#include "lib/redis_reply.h"
#include "lib/util.h"

namespace byok {

enum class Tier { Free, Starter, Pro, Enterprise };
inline constexpr Tier kTiers[] = {Tier::Free, Tier::Starter, Tier::Pro, Tier::Enterprise};
enum class Policy { Auto, NoKey, Off };

std::optional<Tier> parse_tier(std::string_view s);  // "free" ...
std::string_view tier_name(Tier t);
// The Ops-Center rule: BYOK features (provider keys, execution servers, the
// BYOK route) need the starter tier or above. The one place it is written:
// the admin scripts get it as a Lua set generated from it (admin_scripts.cpp).
bool byok_allowed(Tier t);
inline constexpr std::string_view kByokTierMessage = "BYOK requires the starter tier or above";
std::optional<Policy> parse_policy(std::string_view s);  // "auto" | "no_key" | "off"
std::string_view policy_name(Policy p);

// One provider key of the project as the request path needs it.
struct StoredKey {
    std::string provider;
    bool is_active = true;
    bool malformed = false;  // record JSON did not parse: treated as decrypt_error
    int v = kSealVersion;    // record version: decides the associated data
    std::string kid;
    Bytes salt, nonce, ct;
    std::string endpoint;
    std::string key_hint;
};

// What a gateway key resolves to.
struct GatewaySnapshot {
    enum class Status { Ok, Unknown, Revoked };
    Status status = Status::Unknown;
    std::string project;
    Tier tier = Tier::Free;
    Policy policy = Policy::Auto;
    std::string default_server;  // "" when none
    // Project field fallback_on_rate_limit ("false" turns it off): whether
    // a provider's 429 may be retried on the fallback provider.
    bool fallback_on_rate_limit = true;
    // Project field default_provider: where bodiless /v1 requests go.
    std::string default_provider;
    std::vector<StoredKey> keys;
    std::string key_id;  // the gateway key's id, for usage counters ("" when unknown)

    const StoredKey *find_key(std::string_view provider) const;
};

// Cold path: built from HGETALL byok:apikey:<sha>, HGETALL
// byok:project:{pid} and HGETALL byok:{pid}:keys. An empty apikey hash
// gives Unknown; revoked != "" and != "0" gives Revoked; a missing project
// hash gives Unknown. Records that fail parse_key_record become
// StoredKey{malformed=true} (never thrown away silently).
GatewaySnapshot build_snapshot(const FieldMap &apikey, const FieldMap &project,
                               const FieldMap &keys);

// Decrypts a stored key with the associated data of its record version
// (key_binding: project, provider, endpoint). Throws Error like open_sealed.
SecretString open_stored_key(const KeyRing &ring, std::string_view pid, const StoredKey &k);

// Compact binary form for the shared-memory cache; decode throws Error on
// truncated or corrupt input.
std::string encode_snapshot(const GatewaySnapshot &s);
GatewaySnapshot decode_snapshot(std::string_view blob);

}  // namespace byok
