#include "lib/record.h"

#include <nlohmann/json.hpp>

#include "lib/catalog.h"
#include "lib/util.h"

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
    r.id = opt_string(j, "id");
    if (r.id.empty()) r.id = legacy_key_id(r.sealed);
    if (!valid_key_id(r.id)) bad("id", "expected k_ and 12 hex digits");
    if (const json *w = member(j, "weight", false); w != nullptr && !w->is_null()) {
        if (!w->is_number_integer()) bad("weight", "expected an integer");
        if (w->get<int64_t>() < 1 || w->get<int64_t>() > 100) bad("weight", "expected 1..100");
        r.weight = static_cast<int>(w->get<int64_t>());
    }
    r.expires_at = opt_string(j, "expires_at");
    if (!r.expires_at.empty() && !parse_rfc3339(r.expires_at)) bad("expires_at", "not RFC 3339");
    return r;
}

namespace {

nlohmann::ordered_json record_json(const KeyRecord &r) {
    nlohmann::ordered_json j;
    write_sealed_fields(j, r.sealed);
    j["id"] = r.id;
    j["label"] = r.label;
    j["endpoint"] = r.endpoint;
    j["is_active"] = r.is_active;
    j["weight"] = r.weight;
    j["expires_at"] = r.expires_at;
    j["key_hint"] = r.key_hint;
    j["created_at"] = r.created_at;
    j["updated_at"] = r.updated_at;
    j["last_tested"] = r.last_tested;
    j["test_status"] = r.test_status;
    j["test_message"] = r.test_message;
    return j;
}

// Replace invalid UTF-8 (e.g. in a provider's test message) instead of throwing.
std::string dump(const nlohmann::ordered_json &j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::string serialize_key_record(const KeyRecord &r) { return dump(record_json(r)); }

std::vector<KeyRecord> parse_key_set(std::string_view text) {
    json j = json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded()) throw Error("key record: not valid JSON");
    if (!j.is_object()) throw Error("key record: expected a JSON object");
    auto set = j.find("keys");
    if (set == j.end()) return {parse_key_record(text)};
    if (!set->is_array() || set->empty() || set->size() > kMaxKeysPerProvider)
        bad("keys", "expected an array of 1..16 records");
    std::vector<KeyRecord> out;
    for (const auto &item : *set) {
        KeyRecord r = parse_key_record(item.dump());
        for (const auto &o : out)
            if (o.id == r.id) bad("id", "duplicate key id");
        out.push_back(std::move(r));
    }
    return out;
}

std::string serialize_key_set(const std::vector<KeyRecord> &keys) {
    if (keys.size() == 1) return serialize_key_record(keys[0]);
    nlohmann::ordered_json j;
    j["keys"] = nlohmann::ordered_json::array();
    for (const auto &r : keys) j["keys"].push_back(record_json(r));
    return dump(j);
}

bool valid_key_id(std::string_view id) {
    if (id.size() != 14 || id.substr(0, 2) != "k_") return false;
    for (char ch : id.substr(2))
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
    return true;
}

std::string new_key_id() {
    Bytes b = random_bytes(6);
    return "k_" + hex_encode(b.data(), b.size());
}

std::string legacy_key_id(const Sealed &sealed) {
    std::string ct(sealed.ct.begin(), sealed.ct.end());
    return "k_" + sha256_hex(ct).substr(0, 12);
}

std::optional<int64_t> parse_rfc3339(std::string_view s) {
    auto num = [&](size_t at, size_t n, int *out) {
        if (at + n > s.size()) return false;
        int v = 0;
        for (size_t i = at; i < at + n; ++i) {
            if (s[i] < '0' || s[i] > '9') return false;
            v = v * 10 + (s[i] - '0');
        }
        *out = v;
        return true;
    };
    int y, mo, d, h, mi, se;
    if (!num(0, 4, &y) || s.size() < 20 || s[4] != '-' || !num(5, 2, &mo) || s[7] != '-' ||
        !num(8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !num(11, 2, &h) || s[13] != ':' ||
        !num(14, 2, &mi) || s[16] != ':' || !num(17, 2, &se))
        return std::nullopt;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return std::nullopt;
    size_t pos = 19;
    if (pos < s.size() && s[pos] == '.') {
        size_t start = ++pos;
        while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
        if (pos == start) return std::nullopt;
    }
    int64_t offset = 0;
    if (pos + 1 == s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
        pos++;
    } else if (pos + 6 == s.size() && (s[pos] == '+' || s[pos] == '-') && s[pos + 3] == ':') {
        int oh, om;
        if (!num(pos + 1, 2, &oh) || !num(pos + 4, 2, &om) || oh > 23 || om > 59)
            return std::nullopt;
        offset = (s[pos] == '+' ? 1 : -1) * (oh * 3600LL + om * 60LL);
        pos += 6;
    }
    if (pos != s.size()) return std::nullopt;
    // Days from civil (Howard Hinnant's algorithm).
    int yy = y - (mo <= 2 ? 1 : 0);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    return days * 86400 + h * 3600LL + mi * 60LL + se - offset;
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
