#include "lib/server_record.h"

namespace byok::admin::detail {

bool known_type(std::string_view t) {
    for (const char *k : kServerTypes)
        if (t == k) return true;
    return false;
}

bool is_secret_field(std::string_view f) {
    for (const char *k : kSecretFields)
        if (f == k) return true;
    return false;
}

std::string new_rev() { return base64url(random_bytes(9)); }

// ---- record (de)serialization -----------------------------------------------

[[noreturn]] static void bad_record(std::string_view field, std::string_view why) {
    throw Error("server record: field '" + std::string(field) + "': " + std::string(why));
}

static std::string str_member(const json &j, const char *field, bool required) {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) {
        if (required) bad_record(field, "missing");
        return {};
    }
    if (!it->is_string()) bad_record(field, "expected a string");
    return it->get<std::string>();
}

static bool bool_member(const json &j, const char *field, bool dflt) {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) return dflt;
    if (!it->is_boolean()) bad_record(field, "expected a boolean");
    return it->get<bool>();
}

ServerRecord parse_server(std::string_view raw, std::string_view sid) {
    json j = json::parse(raw.begin(), raw.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error("server record: expected a JSON object");
    ServerRecord r;
    r.id = std::string(sid);
    r.name = str_member(j, "name", true);
    r.type = str_member(j, "server_type", true);
    if (!known_type(r.type)) bad_record("server_type", "unknown type");
    auto cc = j.find("connection_config");
    if (cc != j.end() && !cc->is_null()) {
        // Lua's cjson writes an empty table as {}; anything else is malformed.
        if (!cc->is_object()) bad_record("connection_config", "expected an object");
        r.config = *cc;
        for (const char *f : kSecretFields) r.config.erase(f);  // never in clear
    }
    auto s = j.find("secrets");
    if (s != j.end() && !s->is_null()) {
        if (!s->is_object()) bad_record("secrets", "expected an object");
        Sealed sealed = read_sealed_fields(*s, "server record: secrets");
        auto fields = s->find("fields");
        if (fields != s->end() && fields->is_array()) {
            for (const auto &f : *fields) {
                if (!f.is_string() || !is_secret_field(f.get_ref<const std::string &>()))
                    bad_record("secrets.fields", "unknown field name");
                r.secret_fields.push_back(f.get<std::string>());
            }
        } else if (fields != s->end() && !(fields->is_object() && fields->empty())) {
            bad_record("secrets.fields", "expected an array");
        }
        r.secrets = std::move(sealed);
    }
    r.workspace_path = str_member(j, "workspace_path", false);
    r.is_default = bool_member(j, "is_default", false);
    r.is_active = bool_member(j, "is_active", true);
    r.created_at = str_member(j, "created_at", false);
    r.updated_at = str_member(j, "updated_at", false);
    r.last_tested_at = str_member(j, "last_tested_at", false);
    r.test_status = str_member(j, "test_status", false);
    r.test_message = str_member(j, "test_message", false);
    r.test_excerpt = str_member(j, "test_excerpt", false);
    if (auto hs = j.find("test_http_status"); hs != j.end() && hs->is_number_integer())
        r.test_http_status = hs->get<int>();
    r.config_rev = str_member(j, "config_rev", false);
    return r;
}

std::string serialize_server(const ServerRecord &r) {
    nlohmann::ordered_json j;
    j["v"] = r.secrets ? r.secrets->v : kSealVersion;  // the record version is its seal's
    j["id"] = r.id;
    j["name"] = r.name;
    j["server_type"] = r.type;
    j["connection_config"] = r.config;
    if (r.secrets) {
        nlohmann::ordered_json s;
        write_sealed_fields(s, *r.secrets);
        s["fields"] = r.secret_fields;
        j["secrets"] = std::move(s);
    }
    j["workspace_path"] = r.workspace_path;
    j["is_default"] = r.is_default;
    j["is_active"] = r.is_active;
    j["created_at"] = r.created_at;
    j["updated_at"] = r.updated_at;
    j["last_tested_at"] = r.last_tested_at;
    j["test_status"] = r.test_status;
    j["test_message"] = r.test_message;
    j["test_http_status"] = r.test_http_status;
    j["test_excerpt"] = r.test_excerpt;
    j["config_rev"] = r.config_rev;
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

json or_null(const std::string &s) { return s.empty() ? json(nullptr) : json(s); }

// What the API shows: never a secret, only the names of the sealed fields.
json server_view(const ServerRecord &r) {
    json cc = r.config.is_object() ? r.config : json::object();
    for (const char *f : kSecretFields) cc.erase(f);
    cc["secrets_set"] = r.secret_fields;
    return json{{"id", r.id},
                {"name", r.name},
                {"server_type", r.type},
                {"connection_config", cc},
                {"workspace_path", r.workspace_path},
                {"is_default", r.is_default},
                {"is_active", r.is_active},
                {"created_at", r.created_at},
                {"updated_at", r.updated_at},
                {"last_tested_at", or_null(r.last_tested_at)},
                {"test_status", or_null(r.test_status)},
                {"test_message", or_null(r.test_message)},
                {"test_http_status", r.test_http_status ? json(r.test_http_status) : json(nullptr)},
                {"test_excerpt", or_null(r.test_excerpt)}};
}

// ---- secrets ------------------------------------------------------------------

void wipe_strings(json &j) {
    if (j.is_string()) {
        auto &s = j.get_ref<std::string &>();
        wipe(s.data(), s.size());
        s.clear();
    } else if (j.is_structured()) {
        for (auto &v : j) wipe_strings(v);
    }
}

Sealed seal_secrets(const KeyRing &ring, const Binding &b, const SecretMap &m) {
    json j = json::object();
    for (const auto &[k, v] : m) j[k] = std::string(v.view());
    SecretString text(j.dump(-1, ' ', false, json::error_handler_t::replace));
    wipe_strings(j);
    return seal(ring, text.view(), b);
}

SecretMap open_secrets(const KeyRing &ring, const Binding &b, const Sealed &sealed) {
    SecretString plain = open_sealed(ring, sealed, b);
    json j = json::parse(plain.view().begin(), plain.view().end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error("server secrets: malformed");
    SecretMap m;
    for (auto &item : j.items())
        if (item.value().is_string() && is_secret_field(item.key()))
            m.emplace(item.key(), SecretString(item.value().get_ref<const std::string &>()));
    wipe_strings(j);
    return m;
}

Names names_of(const SecretMap &m) {
    Names n;
    for (const auto &kv : m) n.insert(kv.first);
    return n;
}

// ---- rotation -----------------------------------------------------------------------------

SecretString open_server_record(const KeyRing &ring, std::string_view pid, std::string_view sid,
                                std::string_view raw) {
    ServerRecord rec = parse_server(raw, sid);
    if (!rec.secrets) throw Error("server record: no secrets");
    return open_sealed(ring, *rec.secrets, ServerBinding(rec, pid).get());
}

std::optional<std::string> reseal_server_record(const KeyRing &ring, std::string_view pid,
                                                std::string_view sid, std::string_view raw) {
    ServerRecord rec = parse_server(raw, sid);
    if (!rec.secrets || (rec.secrets->kid == ring.active().kid && rec.secrets->v == kSealVersion))
        return std::nullopt;
    if (!ring.find(rec.secrets->kid)) throw Error("unknown master key id");
    ServerBinding binding(rec, pid);
    SecretString plain = open_sealed(ring, *rec.secrets, binding.get());
    rec.secrets = seal(ring, plain.view(), binding.get());
    return serialize_server(rec);
}

std::string server_record_kid(std::string_view sid, std::string_view raw) {
    ServerRecord rec = parse_server(raw, sid);
    return rec.secrets ? rec.secrets->kid : std::string();
}

}  // namespace byok::admin::detail
