#include "lib/server_config.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace byok::admin::detail {

namespace {

constexpr size_t kMaxPrivateKey = 16 * 1024;
constexpr size_t kMaxToken = 16 * 1024;
constexpr size_t kMaxKubeconfig = 60 * 1024;
constexpr size_t kMaxPassword = 1024;

struct CcField {
    const char *name;
    Kind kind;
    bool secret;
};

std::vector<CcField> cc_fields(std::string_view type) {
    if (type == "ssh")
        return {{"host", Kind::String, false},
                {"port", Kind::Int, false},
                {"username", Kind::String, false},
                {"auth_method", Kind::String, false},
                {"host_key_fingerprint", Kind::String, false},
                {"private_key", Kind::String, true},
                {"password", Kind::String, true}};
    if (type == "docker") return {{"endpoint", Kind::String, false}};
    if (type == "kubernetes")
        return {{"api_url", Kind::String, false},
                {"token", Kind::String, true},
                {"kubeconfig", Kind::String, true}};
    return {};
}

bool valid_host(std::string_view h) {
    if (h.empty() || h.size() > 253) return false;
    std::string s(h);
    unsigned char buf[16];
    if (inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1)
        return true;
    if (h.front() == '-' || h.front() == '.') return false;
    for (char ch : h) {
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_';
        if (!ok) return false;
    }
    return true;
}

bool valid_username(std::string_view u) {
    return is_token(u) && u.size() <= 64 && u.front() != '-';
}

std::string_view trim_ws(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

// A PEM ("-----BEGIN RSA PRIVATE KEY-----", "... EC PRIVATE KEY", "PRIVATE
// KEY") or OpenSSH ("-----BEGIN OPENSSH PRIVATE KEY-----") block.
bool looks_like_private_key(std::string_view k) {
    k = trim_ws(k);
    const std::string_view tail = "PRIVATE KEY-----";
    if (k.substr(0, 11) != "-----BEGIN ") return false;
    size_t eol = k.find('\n');
    if (eol == std::string_view::npos) return false;
    std::string_view first = trim_ws(k.substr(0, eol));
    if (first.size() < tail.size() || first.substr(first.size() - tail.size()) != tail)
        return false;
    size_t end = k.rfind("-----END ");
    if (end == std::string_view::npos || end <= eol) return false;
    std::string_view last = k.substr(end);
    if (last.size() < tail.size() || last.substr(last.size() - tail.size()) != tail) return false;
    return trim_ws(k.substr(eol, end - eol)).size() >= 16;  // some body
}

Step secret_required() {
    return fail(409, "secret_required",
                "changing where the server's credentials are sent (host, port, username, "
                "host_key_fingerprint, endpoint, api_url) needs the secret again in the same "
                "request, or an admin token");
}

}  // namespace

bool valid_fingerprint(std::string_view fp, std::string *norm) {
    if (fp.substr(0, 7) != "SHA256:") return false;
    std::string_view b = fp.substr(7);
    if (!b.empty() && b.back() == '=') b.remove_suffix(1);
    if (b.size() != 43) return false;
    for (char ch : b) {
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '+' || ch == '/';
        if (!ok) return false;
    }
    if (norm) *norm = "SHA256:" + std::string(b);
    return true;
}

std::string cc_field(std::string_view f) {
    return "field 'connection_config." + std::string(f) + "'";
}

Step invalid(const std::string &what, std::string_view why) {
    return fail(422, "invalid_value", what + " " + std::string(why));
}

std::optional<Step> take_secrets(json &body, SecretMap &out) {
    auto cc = body.find("connection_config");
    if (cc == body.end() || !cc->is_object()) return std::nullopt;
    cc->erase("secrets_set");  // as shown by GET: accepted back and ignored
    std::optional<Step> err;
    for (const char *f : kSecretFields) {
        auto it = cc->find(f);
        if (it == cc->end()) continue;
        if (it->is_string()) {
            auto &s = it->get_ref<std::string &>();
            out.insert_or_assign(f, SecretString(s));
        } else if (!err) {
            err = fail(400, "invalid_type", cc_field(f) + " must be a string");
        }
        wipe_strings(*it);
        cc->erase(it);
    }
    return err;
}

std::optional<Step> check_config(const Config &cfg, std::string_view type, json &cc,
                                 const SecretMap &secrets) {
    auto fields = cc_fields(type);
    auto spec = [&](std::string_view name) -> const CcField * {
        for (const auto &f : fields)
            if (name == f.name) return &f;
        return nullptr;
    };
    for (const auto &item : cc.items()) {
        const CcField *f = spec(item.key());
        if (!f || f->secret)
            return fail(
                422, "unknown_field",
                "unknown " + cc_field(item.key()) + " for server_type '" + std::string(type) + "'");
        bool ok =
            f->kind == Kind::Int ? item.value().is_number_integer() : item.value().is_string();
        if (!ok)
            return fail(400, "invalid_type",
                        cc_field(f->name) +
                            (f->kind == Kind::Int ? " must be an integer" : " must be a string"));
    }
    for (const auto &kv : secrets) {
        const CcField *f = spec(kv.first);
        if (!f || !f->secret)
            return fail(
                422, "unknown_field",
                "unknown " + cc_field(kv.first) + " for server_type '" + std::string(type) + "'");
    }

    auto str = [&](const char *name) -> std::string * {
        auto it = cc.find(name);
        return it == cc.end() ? nullptr : &it->get_ref<std::string &>();
    };
    if (auto *h = str("host"); h && !valid_host(*h))
        return invalid(cc_field("host"), "must be a host name or an IP address");
    if (auto it = cc.find("port"); it != cc.end()) {
        bool ok = it->is_number_unsigned()
                      ? it->get<uint64_t>() >= 1 && it->get<uint64_t>() <= 65535
                      : it->get<int64_t>() >= 1 && it->get<int64_t>() <= 65535;
        if (!ok) return invalid(cc_field("port"), "must be 1..65535");
        *it = it->get<int>();
    }
    if (auto *u = str("username"); u && !valid_username(*u))
        return invalid(cc_field("username"),
                       "must be 1..64 printable characters without spaces, not starting with '-'");
    if (auto *a = str("auth_method"); a && *a != "key" && *a != "password")
        return invalid(cc_field("auth_method"), "must be 'key' or 'password'");
    if (auto *fp = str("host_key_fingerprint"); fp && !fp->empty()) {
        std::string norm;
        if (!valid_fingerprint(*fp, &norm))
            return invalid(cc_field("host_key_fingerprint"),
                           "must be 'SHA256:' followed by the base64 SHA-256 of the host key");
        *fp = norm;
    }
    if (auto *e = str("endpoint")) {
        try {
            Url u = parse_url(*e, cc_field("endpoint"));
            *e = u.origin() + u.path;
        } catch (const Error &err) {
            return fail(422, "invalid_endpoint", err.what());
        }
    }
    if (auto *a = str("api_url")) {
        try {
            Url u = parse_url(*a, cc_field("api_url"));
            if (u.scheme != "https" && !endpoint_host_allowed(cfg, u.host))
                return fail(422, "invalid_endpoint",
                            cc_field("api_url") +
                                " must use https unless its host is in byok_allow_endpoint");
            *a = u.origin() + u.path;
        } catch (const Error &err) {
            return fail(422, "invalid_endpoint", err.what());
        }
    }
    // Secret values are never echoed in an error.
    for (const auto &[name, value] : secrets) {
        std::string_view v = value.view();
        if (name == "private_key" && (v.size() > kMaxPrivateKey || !looks_like_private_key(v)))
            return invalid(cc_field(name), "must be a PEM or OpenSSH private key block");
        if (name == "password" && (v.empty() || v.size() > kMaxPassword || contains_control(v)))
            return invalid(cc_field(name), "must be 1..1024 characters without control characters");
        if (name == "token" && (v.empty() || v.size() > kMaxToken || !safe_header_value(v)))
            return invalid(cc_field(name),
                           "must be a non-empty bearer token without control characters");
        if (name == "kubeconfig" &&
            (v.empty() || v.size() > kMaxKubeconfig || v.find('\0') != std::string_view::npos))
            return invalid(cc_field(name), "must be a non-empty kubeconfig document");
    }
    return std::nullopt;
}

void fill_defaults(std::string_view type, json &cc) {
    if (type != "ssh") return;
    if (!cc.contains("port")) cc["port"] = 22;
    if (!cc.contains("host_key_fingerprint")) cc["host_key_fingerprint"] = "";
}

std::string cc_string(const json &cc, const char *name) {
    auto it = cc.find(name);
    return it != cc.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Names wanted_secrets(std::string_view type, const json &cc, const Names &available) {
    if (type == "ssh") {
        std::string a = cc_string(cc, "auth_method");
        if (a == "key") return {"private_key"};
        if (a == "password") return {"password"};
        return {};
    }
    Names out;
    if (type == "kubernetes")
        for (const char *f : {"token", "kubeconfig"})
            if (available.count(f)) out.insert(f);
    return out;
}

std::optional<Step> check_unused(std::string_view type, const json &cc, const SecretMap &given) {
    if (type != "ssh") return std::nullopt;
    std::string a = cc_string(cc, "auth_method");
    for (const auto &kv : given)
        if ((a == "key" && kv.first == "password") ||
            (a == "password" && kv.first == "private_key"))
            return invalid(cc_field(kv.first), "is not used with auth_method '" + a + "'");
    return std::nullopt;
}

std::optional<Step> check_complete(std::string_view type, const json &cc, const Names &secrets,
                                   const std::string &workspace) {
    auto need = [&](const char *f) -> std::optional<Step> {
        if (cc_string(cc, f).empty())
            return fail(422, "missing_field",
                        cc_field(f) + " is required for server_type '" + std::string(type) + "'");
        return std::nullopt;
    };
    if (type == "ssh") {
        for (const char *f : {"host", "username", "auth_method"})
            if (auto e = need(f)) return e;
        const char *secret = cc_string(cc, "auth_method") == "key" ? "private_key" : "password";
        if (!secrets.count(secret))
            return fail(422, "missing_field",
                        cc_field(secret) + " is required for auth_method '" +
                            cc_string(cc, "auth_method") + "'");
    } else if (type == "docker") {
        if (auto e = need("endpoint")) return e;
    } else if (type == "kubernetes") {
        if (auto e = need("api_url")) return e;
        if (!secrets.count("token") && !secrets.count("kubeconfig"))
            return fail(422, "missing_field",
                        cc_field("token") + " or " + cc_field("kubeconfig") +
                            " is required for server_type 'kubernetes'");
    }
    if ((type == "ssh" || type == "local") && workspace.empty())
        return fail(
            422, "missing_field",
            "field 'workspace_path' is required for server_type '" + std::string(type) + "'");
    if (!workspace.empty() && workspace.front() != '/')
        return invalid("field 'workspace_path'", "must be an absolute path");
    return std::nullopt;
}

std::optional<Step> check_type(const json &body) {
    auto it = body.find("server_type");
    if (it != body.end() && !known_type(it->get_ref<const std::string &>()))
        return invalid("field 'server_type'", "must be one of ssh, local, docker, kubernetes");
    return std::nullopt;
}

std::optional<Step> read_draft(const CtxPtr &c, const std::string &pid, const std::string &sid,
                               json &body, Draft &d) {
    SecretMap secrets;
    auto secret_err = take_secrets(body, secrets);
    if (auto e = check_fields(body, {{"id", Kind::String, false},
                                     {"name", Kind::String, true},
                                     {"server_type", Kind::String, true},
                                     {"connection_config", Kind::Object, false},
                                     {"workspace_path", Kind::String, false},
                                     {"is_default", Kind::Bool, false},
                                     {"is_active", Kind::Bool, false}}))
        return e;
    if (secret_err) return secret_err;
    if (auto e = check_text(body, "name", 200, false)) return e;
    if (auto e = check_type(body)) return e;
    if (auto e = check_text(body, "workspace_path", kMaxPath, true)) return e;
    d.name = body["name"].get<std::string>();
    d.type = body["server_type"].get<std::string>();
    d.workspace_path = body.value("workspace_path", std::string());
    if (body.contains("is_default")) d.is_default = body["is_default"].get<bool>();
    if (body.contains("is_active")) d.is_active = body["is_active"].get<bool>();
    if (body.contains("connection_config")) d.config = body["connection_config"];
    if (auto e = check_config(*c->cfg, d.type, d.config, secrets)) return e;
    fill_defaults(d.type, d.config);
    if (auto e = check_unused(d.type, d.config, secrets)) return e;
    if (auto e = check_complete(d.type, d.config, names_of(secrets), d.workspace_path)) return e;
    for (const auto &name : wanted_secrets(d.type, d.config, names_of(secrets)))
        d.secret_fields.push_back(name);
    if (!secrets.empty())
        d.sealed =
            seal_secrets(*c->cfg->ring, ServerBinding(pid, sid, d.type, d.config).get(), secrets);
    return std::nullopt;
}

std::variant<ServerRecord, Step> apply_patch(const Config &cfg, const std::string &pid,
                                             const std::string &sid, const std::string &at,
                                             bool admin, const Patch &p, const std::string &old) {
    ServerRecord rec;
    try {
        rec = parse_server(old, sid);
    } catch (const Error &) {
        return fail(409, "malformed_record",
                    "the stored record is malformed; replace the server with PUT");
    }
    if (p.type && *p.type != rec.type)
        return invalid("field 'server_type'", "cannot be changed with PATCH; use PUT");
    ServerBinding before(rec, pid);  // what the stored secrets are sealed to
    if (p.name) rec.name = *p.name;
    if (p.is_default) rec.is_default = *p.is_default;
    if (p.is_active) rec.is_active = *p.is_active;
    bool reconfigured = p.config.has_value() || p.workspace_path.has_value();
    if (p.workspace_path) rec.workspace_path = *p.workspace_path;
    bool retargeted = false;
    if (p.config) {
        json given = *p.config;
        if (auto e = check_config(cfg, rec.type, given, *p.secrets)) return std::move(*e);
        for (const char *f : kTargetFields) {
            auto now = given.find(f);
            auto was = rec.config.find(f);
            retargeted =
                retargeted || (now != given.end() && (was == rec.config.end() || *was != *now));
        }
        for (const auto &item : given.items()) rec.config[item.key()] = item.value();
        fill_defaults(rec.type, rec.config);
        if (auto e = check_unused(rec.type, rec.config, *p.secrets)) return std::move(*e);
    }
    Names stored(rec.secret_fields.begin(), rec.secret_fields.end());
    Names available = stored;
    for (const auto &kv : *p.secrets) available.insert(kv.first);
    Names wanted = wanted_secrets(rec.type, rec.config, available);
    Names have;
    for (const auto &f : wanted)
        if (available.count(f)) have.insert(f);
    if (auto e = check_complete(rec.type, rec.config, have, rec.workspace_path))
        return std::move(*e);
    // A write-only secret must not be redirected to a host of the caller's
    // choosing: a new target needs the secret again (or the operator).
    if (retargeted && !admin)
        for (const auto &f : have)
            if (!p.secrets->count(f)) return secret_required();

    ServerBinding after(rec, pid);
    // A new target re-seals the kept secrets bound to it.
    bool retarget = rec.secrets && !before.same_target(after);
    if (!p.secrets->empty() || have != stored || retarget) {
        SecretMap merged;
        bool need_old = false;
        for (const auto &f : have) need_old = need_old || !p.secrets->count(f);
        if (need_old && rec.secrets) {
            try {
                merged = open_secrets(*cfg.ring, before.get(), *rec.secrets);
            } catch (const Error &) {
                return fail(409, "secrets_unreadable",
                            "the stored secrets do not decrypt; replace the server with PUT");
            }
        }
        for (const auto &kv : *p.secrets)
            merged.insert_or_assign(kv.first, SecretString(kv.second.view()));
        for (auto it = merged.begin(); it != merged.end();)
            it = have.count(it->first) ? std::next(it) : merged.erase(it);
        if (names_of(merged) != have)
            return fail(409, "secrets_unreadable",
                        "the stored secrets are incomplete; replace the server with PUT");
        rec.secret_fields.assign(have.begin(), have.end());
        rec.secrets.reset();
        if (!merged.empty()) rec.secrets = seal_secrets(*cfg.ring, after.get(), merged);
        reconfigured = true;
    }
    if (reconfigured) {
        rec.config_rev = new_rev();
        rec.last_tested_at.clear();
        rec.test_status.clear();
        rec.test_message.clear();
    }
    rec.updated_at = at;
    return rec;
}

}  // namespace byok::admin::detail
