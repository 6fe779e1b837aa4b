#include "lib/record.h"

#include <nlohmann/json.hpp>

namespace byok {

namespace {

using nlohmann::json;

[[noreturn]] void bad(std::string_view field, std::string_view why) {
    throw Error("key record: field '" + std::string(field) + "': " + std::string(why));
}

const json *member(const json &j, const char *field, bool required) {
    auto it = j.find(field);
    if (it == j.end()) {
        if (required) bad(field, "missing");
        return nullptr;
    }
    return &*it;
}

std::string req_string(const json &j, const char *field) {
    const json *v = member(j, field, true);
    if (!v->is_string()) bad(field, "expected a string");
    return v->get<std::string>();
}

std::string opt_string(const json &j, const char *field) {
    const json *v = member(j, field, false);
    if (v == nullptr || v->is_null()) return {};
    if (!v->is_string()) bad(field, "expected a string");
    return v->get<std::string>();
}

Bytes req_binary(const json &j, const char *field) {
    std::string s = req_string(j, field);
    try {
        return base64_decode(s);
    } catch (const Error &) {
        bad(field, "invalid base64");
    }
}

}  // namespace

KeyRecord parse_key_record(std::string_view text) {
    json j = json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded()) throw Error("key record: not valid JSON");
    if (!j.is_object()) throw Error("key record: expected a JSON object");

    KeyRecord r;
    const json *v = member(j, "v", true);
    if (!v->is_number_integer()) bad("v", "expected an integer");
    if (v->get<int64_t>() != 1) bad("v", "unsupported version");
    r.v = 1;
    r.sealed.kid = req_string(j, "kid");
    if (r.sealed.kid.empty()) bad("kid", "must not be empty");
    r.sealed.salt = req_binary(j, "salt");
    if (r.sealed.salt.size() != 16) bad("salt", "expected 16 bytes");
    r.sealed.nonce = req_binary(j, "nonce");
    if (r.sealed.nonce.size() != 12) bad("nonce", "expected 12 bytes");
    r.sealed.ct = req_binary(j, "ct");
    if (r.sealed.ct.size() < 16) bad("ct", "expected at least 16 bytes");
    const json *active = member(j, "is_active", true);
    if (!active->is_boolean()) bad("is_active", "expected a boolean");
    r.is_active = active->get<bool>();
    r.key_hint = req_string(j, "key_hint");
    r.created_at = req_string(j, "created_at");
    r.updated_at = req_string(j, "updated_at");
    r.label = opt_string(j, "label");
    r.endpoint = opt_string(j, "endpoint");
    r.last_tested = opt_string(j, "last_tested");
    r.test_status = opt_string(j, "test_status");
    r.test_message = opt_string(j, "test_message");
    return r;
}

std::string serialize_key_record(const KeyRecord &r) {
    nlohmann::ordered_json j;
    j["v"] = r.v;
    j["kid"] = r.sealed.kid;
    j["salt"] = base64_encode(r.sealed.salt);
    j["nonce"] = base64_encode(r.sealed.nonce);
    j["ct"] = base64_encode(r.sealed.ct);
    j["label"] = r.label;
    j["endpoint"] = r.endpoint;
    j["is_active"] = r.is_active;
    j["key_hint"] = r.key_hint;
    j["created_at"] = r.created_at;
    j["updated_at"] = r.updated_at;
    j["last_tested"] = r.last_tested;
    j["test_status"] = r.test_status;
    j["test_message"] = r.test_message;
    // Replace invalid UTF-8 (e.g. in a provider's test message) instead of throwing.
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace byok
