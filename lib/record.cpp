#include "lib/record.h"

#include <nlohmann/json.hpp>

#include "lib/catalog.h"

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

}  // namespace

KeyRecord parse_key_record(std::string_view text) {
    json j = json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded()) throw Error("key record: not valid JSON");
    if (!j.is_object()) throw Error("key record: expected a JSON object");

    KeyRecord r;
    r.sealed = read_sealed_fields(j, "key record");
    const json *active = member(j, "is_active", true);
    if (!active->is_boolean()) bad("is_active", "expected a boolean");
    r.is_active = active->get<bool>();
    r.key_hint = ascii_key_hint(req_string(j, "key_hint"));
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
    write_sealed_fields(j, r.sealed);
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

Binding key_binding(std::string_view pid, std::string_view provider, std::string_view endpoint) {
    Binding b{pid, provider};
    b.bind("endpoint", endpoint);
    return b;
}

void write_sealed_fields(nlohmann::ordered_json &j, const Sealed &s) {
    j["v"] = s.v;
    j["kid"] = s.kid;
    j["salt"] = base64_encode(s.salt);
    j["nonce"] = base64_encode(s.nonce);
    j["ct"] = base64_encode(s.ct);
}

Sealed read_sealed_fields(const json &j, std::string_view what) {
    auto bad_field = [&](const char *field, const char *why) {
        throw Error(std::string(what) + ": field '" + field + "': " + why);
    };
    auto binary = [&](const char *field) {
        auto it = j.find(field);
        if (it == j.end()) bad_field(field, "missing");
        if (!it->is_string()) bad_field(field, "expected a string");
        try {
            return base64_decode(it->get<std::string>());
        } catch (const Error &) {
            bad_field(field, "invalid base64");
        }
        return Bytes{};
    };
    auto v = j.find("v");
    if (v == j.end()) bad_field("v", "missing");
    if (!v->is_number_integer()) bad_field("v", "expected an integer");
    if (v->get<int64_t>() != 1 && v->get<int64_t>() != 2) bad_field("v", "unsupported version");
    Sealed s;
    s.v = static_cast<int>(v->get<int64_t>());
    auto kid = j.find("kid");
    if (kid == j.end()) bad_field("kid", "missing");
    if (!kid->is_string()) bad_field("kid", "expected a string");
    s.kid = kid->get<std::string>();
    if (s.kid.empty()) bad_field("kid", "must not be empty");
    s.salt = binary("salt");
    if (s.salt.size() != 16) bad_field("salt", "expected 16 bytes");
    s.nonce = binary("nonce");
    if (s.nonce.size() != 12) bad_field("nonce", "expected 12 bytes");
    s.ct = binary("ct");
    if (s.ct.size() < 16) bad_field("ct", "expected at least 16 bytes");
    return s;
}

}  // namespace byok
