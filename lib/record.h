// Provider key record: the JSON stored in byok:{<pid>}:keys (SPEC §6).
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/crypto.h"

namespace byok {

struct KeyRecord {
    Sealed sealed;  // v, kid, salt, nonce, ct (base64 in JSON); v is the record version
    std::string label;
    std::string endpoint;  // "" unless set (custom provider)
    bool is_active = true;
    std::string key_hint;
    std::string created_at, updated_at;
    std::string last_tested;  // "" = never
    std::string test_status;  // "", "valid", "invalid", "error"
    std::string test_message;
    // Several keys per provider (issue 14). A record written before then has
    // no id: legacy_key_id() derives a stable one from its ciphertext.
    std::string id;          // "k_" + 12 hex
    int weight = 1;          // 1..100, share in the selection
    std::string expires_at;  // RFC 3339 or "" (never)
};

// At most this many keys per provider and project.
inline constexpr size_t kMaxKeysPerProvider = 16;

// Strict: the JSON must be an object; v, kid, salt, nonce, ct, is_active,
// key_hint, created_at, updated_at are required with the right types;
// optional string fields may be absent or null; binary fields must be valid
// base64 with salt 16 and nonce 12 bytes, ct >= 16 bytes; v must be 1 or 2.
// Unknown fields are ignored (forward compatible). Throws Error naming the
// field: "key record: field 'nonce': expected 12 bytes".
KeyRecord parse_key_record(std::string_view json);
std::string serialize_key_record(const KeyRecord &r);

// A provider's keys, as stored in one field of byok:{<pid>}:keys: a single
// key keeps the record shape of SPEC §6 (so records written before several
// keys existed are read as a set of one), several are {"keys":[record...]}.
// Throws Error like parse_key_record; duplicate ids are an error.
std::vector<KeyRecord> parse_key_set(std::string_view json);
std::string serialize_key_set(const std::vector<KeyRecord> &keys);

// Key ids: "k_" followed by 12 lower-case hex digits.
bool valid_key_id(std::string_view id);
std::string new_key_id();                         // random
std::string legacy_key_id(const Sealed &sealed);  // from the ciphertext: stable

// RFC 3339 date-time ("2026-12-01T00:00:00Z", offsets and fractions
// allowed) as unix seconds; nullopt when malformed.
std::optional<int64_t> parse_rfc3339(std::string_view s);

// What a provider key is bound to (v2): project, provider and the key's
// `endpoint` ("" for catalog providers), so a key moved to another project,
// provider or endpoint does not decrypt. Views: the arguments must outlive it.
Binding key_binding(std::string_view pid, std::string_view provider, std::string_view endpoint);

// The sealed part of any record — v (1 or 2), kid, salt, nonce, ct (base64) —
// shared by provider-key records and execution-server secrets.
void write_sealed_fields(nlohmann::ordered_json &j, const Sealed &s);
// Strict as above; errors read "<what>: field '<name>': <why>".
Sealed read_sealed_fields(const nlohmann::json &j, std::string_view what);

}  // namespace byok
