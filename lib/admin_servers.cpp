// Admin API: execution servers (SPEC §8). CRUD with per-type validation,
// connection secrets sealed like provider keys (AAD subject "server:<sid>",
// plus every connection field that decides where they are sent: ServerBinding),
// at most one default per project (kept atomically by kScriptServerSet,
// which also maintains the project's `default_server` field), and the
// connection test: ssh/local through a ProbeCall the glue runs on its thread
// pool, docker/kubernetes through an HttpCall.
//
// Stored record (JSON in byok:{<pid>}:servers, field = server id):
//   v, id, name, server_type, connection_config (non-secret fields only),
//   secrets {v, kid, salt, nonce, ct, fields} (absent when none; the
//   plaintext is the JSON object of the secret fields), workspace_path,
//   is_default, is_active, created_at, updated_at, last_tested_at,
//   test_status, test_message (fixed per outcome), test_http_status,
//   test_excerpt (what the target said, redacted), config_rev (random;
//   changes whenever what a connection test depends on changes).
#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "lib/admin_internal.h"
#include "lib/layout.h"
#include "lib/redact.h"

namespace byok::admin::detail {

namespace {

constexpr int kCasAttempts = 3;
constexpr size_t kMaxPath = 4096;
constexpr size_t kMaxPrivateKey = 16 * 1024;
constexpr size_t kMaxToken = 16 * 1024;
constexpr size_t kMaxKubeconfig = 60 * 1024;
constexpr size_t kMaxPassword = 1024;

const char *const kTypes[] = {"ssh", "local", "docker", "kubernetes"};
const char *const kSecretFields[] = {"private_key", "password", "token", "kubeconfig"};

using SecretMap = std::map<std::string, SecretString, std::less<>>;
using SecretsPtr = std::shared_ptr<const SecretMap>;
using Names = std::set<std::string, std::less<>>;

struct ServerRecord {
    std::string id, name, type;
    json config = json::object();  // non-secret connection fields
    std::optional<Sealed> secrets;
    std::vector<std::string> secret_fields;  // names of the sealed fields
    std::string workspace_path;
    bool is_default = false, is_active = true;
    std::string created_at, updated_at, last_tested_at, test_status, test_message;
    int test_http_status = 0;
    std::string test_excerpt;
    std::string config_rev;
};

Step server_missing() { return fail(404, "server_not_found", "no such server"); }

bool known_type(std::string_view t) {
    for (const char *k : kTypes)
        if (t == k) return true;
    return false;
}

bool is_secret_field(std::string_view f) {
    for (const char *k : kSecretFields)
        if (f == k) return true;
    return false;
}

std::string cc_field(std::string_view f) {
    return "field 'connection_config." + std::string(f) + "'";
}

Step invalid(const std::string &what, std::string_view why) {
    return fail(422, "invalid_value", what + " " + std::string(why));
}

std::string new_rev() { return base64url(random_bytes(9)); }

// ---- record (de)serialization -----------------------------------------------

[[noreturn]] void bad_record(std::string_view field, std::string_view why) {
    throw Error("server record: field '" + std::string(field) + "': " + std::string(why));
}

std::string str_member(const json &j, const char *field, bool required) {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) {
        if (required) bad_record(field, "missing");
        return {};
    }
    if (!it->is_string()) bad_record(field, "expected a string");
    return it->get<std::string>();
}

bool bool_member(const json &j, const char *field, bool dflt) {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) return dflt;
    if (!it->is_boolean()) bad_record(field, "expected a boolean");
    return it->get<bool>();
}

// `sid` is the hash field the record is stored under: the record's id.
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

// Moves the secret fields of an input connection_config into wiped memory
// (also when the request fails later) and scrubs the parser's copies.
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

Names names_of(const SecretMap &m) {
    Names n;
    for (const auto &kv : m) n.insert(kv.first);
    return n;
}

// ---- field rules ----------------------------------------------------------------

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

// "SHA256:" + unpadded base64 of 32 bytes (43 chars; a trailing '=' is
// accepted and dropped). Fills `norm`.
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

// Validates the non-secret fields of `cc` (normalizing them in place) and
// the secrets given for `type`; only fields that are present.
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

// The fields that decide where a server's secret is sent (and to whom it
// is proven: the pinned host key). A PATCH changing one needs the secret
// again (or an admin token), and all are bound into the secrets' AAD.
const char *const kTargetFields[] = {"host",     "port",   "username", "host_key_fingerprint",
                                     "endpoint", "api_url"};

// What a server's secrets are bound to (record version 2): the project, the
// subject "server:<sid>", the type and every connection field that decides
// where the secrets are sent. A record retargeted straight in Redis (another
// host, port, user, endpoint or an emptied pinned fingerprint) no longer
// decrypts. Owns the strings its Binding views.
class ServerBinding {
  public:
    ServerBinding(std::string_view pid, std::string_view sid, std::string_view type, const json &cc)
        : pid_(pid), subject_(server_subject(sid)), type_(type) {
        b_.pid = pid_;
        b_.subject = subject_;
        b_.bind("server_type", type_);
        for (size_t i = 0; i < values_.size(); i++) {
            auto it = cc.find(kTargetFields[i]);
            if (it != cc.end() && it->is_string())
                values_[i] = it->get<std::string>();
            else if (it != cc.end() && it->is_number_integer())
                values_[i] = std::to_string(it->get<long long>());
            b_.bind(kTargetFields[i], values_[i]);
        }
    }
    ServerBinding(const ServerRecord &r, std::string_view pid)
        : ServerBinding(pid, r.id, r.type, r.config) {}
    ServerBinding(const ServerBinding &) = delete;
    ServerBinding &operator=(const ServerBinding &) = delete;
    const Binding &get() const { return b_; }
    bool same_target(const ServerBinding &o) const {
        return type_ == o.type_ && values_ == o.values_;
    }

  private:
    std::string pid_, subject_, type_;
    std::array<std::string, std::size(kTargetFields)> values_;
    Binding b_;
};

// The secret fields the final configuration uses.
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

// Secrets given in the request that the auth method does not use.
std::optional<Step> check_unused(std::string_view type, const json &cc, const SecretMap &given) {
    if (type != "ssh") return std::nullopt;
    std::string a = cc_string(cc, "auth_method");
    for (const auto &kv : given)
        if ((a == "key" && kv.first == "password") ||
            (a == "password" && kv.first == "private_key"))
            return invalid(cc_field(kv.first), "is not used with auth_method '" + a + "'");
    return std::nullopt;
}

// Required fields once everything is merged.
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

// ---- writes -------------------------------------------------------------------------

using Builder = std::function<std::variant<ServerRecord, Step>(const std::string &old_json)>;
struct ServerWrite {
    std::string pid, sid, action;
    bool require_tier = false;  // create and PUT: a BYOK feature (starter or above)
    Builder build;              // PUT / PATCH: from the current record
};

Step script_outcome(long long code, const ServerRecord &rec, const std::function<Step()> &retry,
                    int attempt) {
    if (code == kNoProject) return project_not_found();
    if (code == kExists) return fail(409, "server_exists", "a server with this id already exists");
    if (code == kNotFound) return server_missing();
    if (code == kTier) return tier_refused();
    if (code == kConflict) {
        if (attempt + 1 >= kCasAttempts)
            return fail(409, "conflict", "the server was changed concurrently, retry");
        return retry();
    }
    return respond(code == kCreated ? 201 : 200, server_view(rec));
}

std::vector<std::string> set_argv(const Ctx &c, const std::string &pid, const ServerRecord &rec,
                                  const std::string &expected, const std::string &action,
                                  bool require_tier) {
    const Layout &l = c.cfg->layout;
    return mutation(c, kScriptServerSet, pid, {l.project(pid), l.servers(pid)},
                    {rec.id, expected, serialize_server(rec), rec.is_default ? "1" : "0", action,
                     require_tier ? "1" : "0"});
}

// Read-modify-write of an existing record with a compare-and-set.
Step update(const CtxPtr &c, std::shared_ptr<const ServerWrite> w, int attempt) {
    const Layout &l = c->cfg->layout;
    auto read = eval(kScriptReadProject, {l.project(w->pid), l.servers(w->pid)}, {});
    return redis(std::move(read), [c, w, attempt](const Reply &r) -> Step {
        if (script_code(r) == kNoProject) return project_not_found();
        Fields servers = to_fields(script_item(r, 2));
        auto it = servers.find(w->sid);
        if (it == servers.end()) return server_missing();
        std::string old = it->second;
        auto built = w->build(old);
        if (auto *s = std::get_if<Step>(&built)) return std::move(*s);
        auto rec = std::make_shared<ServerRecord>(std::move(std::get<ServerRecord>(built)));
        return redis(set_argv(*c, w->pid, *rec, old, w->action, w->require_tier),
                     [c, w, attempt, rec](const Reply &wr) -> Step {
                         return script_outcome(
                             script_code(wr), *rec, [&] { return update(c, w, attempt + 1); },
                             attempt);
                     });
    });
}

// Validated body of POST / PUT.
struct Draft {
    std::string name, type, workspace_path;
    json config = json::object();
    std::optional<bool> is_default, is_active;
    std::optional<Sealed> sealed;
    std::vector<std::string> secret_fields;
};

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

}  // namespace

// ---- routes ---------------------------------------------------------------------------

Step servers_list(const CtxPtr &c, const std::string &pid) {
    const Layout &l = c->cfg->layout;
    return redis(
        eval(kScriptReadProject, {l.project(pid), l.servers(pid)}, {}), [](const Reply &r) {
            if (script_code(r) == kNoProject) return project_not_found();
            json out = json::array();
            for (const auto &[sid, raw] : to_fields(script_item(r, 2))) {
                try {
                    out.push_back(server_view(parse_server(raw, sid)));
                } catch (const Error &) {
                    out.push_back(json{{"id", sid}, {"error", "stored record is malformed"}});
                }
            }
            return respond(200, out);
        });
}

namespace {

// One stored record (by id, or the project's default when `sid` is empty).
Step read_one(const CtxPtr &c, const std::string &pid, const std::string &sid) {
    const Layout &l = c->cfg->layout;
    return redis(
        eval(kScriptReadProject, {l.project(pid), l.servers(pid)}, {}), [sid](const Reply &r) {
            if (script_code(r) == kNoProject) return project_not_found();
            std::string id = sid;
            if (id.empty()) {
                Fields project = to_fields(script_item(r, 1));
                auto d = project.find("default_server");
                if (d == project.end() || d->second.empty())
                    return fail(404, "no_default_server", "the project has no default server");
                id = d->second;
            }
            Fields servers = to_fields(script_item(r, 2));
            auto it = servers.find(id);
            if (it == servers.end()) return server_missing();
            try {
                return respond(200, server_view(parse_server(it->second, id)));
            } catch (const Error &) {
                return fail(500, "malformed_record", "the stored record is malformed");
            }
        });
}

}  // namespace

Step server_default(const CtxPtr &c, const std::string &pid) { return read_one(c, pid, ""); }

Step server_get(const CtxPtr &c, const std::string &pid, const std::string &sid) {
    return read_one(c, pid, sid);
}

Step server_create(const CtxPtr &c, const std::string &pid, json &body) {
    std::string sid;
    auto id = body.find("id");
    if (id != body.end() && id->is_string()) {
        sid = id->get<std::string>();
        if (!valid_id(sid) || sid == "default")
            return invalid("field 'id'",
                           "must match [a-z0-9][a-z0-9_-]{0,63} and not be 'default'");
    } else {
        sid = new_id('s');
    }
    Draft d;
    if (auto e = read_draft(c, pid, sid, body, d)) return *e;
    auto rec = std::make_shared<ServerRecord>();
    rec->id = sid;
    rec->name = d.name;
    rec->type = d.type;
    rec->config = std::move(d.config);
    rec->secrets = std::move(d.sealed);
    rec->secret_fields = std::move(d.secret_fields);
    rec->workspace_path = d.workspace_path;
    rec->is_default = d.is_default.value_or(false);
    rec->is_active = d.is_active.value_or(true);
    rec->created_at = rec->updated_at = c->at;
    rec->config_rev = new_rev();
    // The script refuses an existing id, so no read is needed first.
    return redis(set_argv(*c, pid, *rec, "", "server.create", true), [rec](const Reply &r) {
        return script_outcome(
            script_code(r), *rec, [] { return server_missing(); }, kCasAttempts);
    });
}

Step server_put(const CtxPtr &c, const std::string &pid, const std::string &sid, json &body) {
    auto id = body.find("id");
    if (id != body.end() && id->is_string() && id->get_ref<const std::string &>() != sid)
        return invalid("field 'id'", "must match the server id in the path");
    auto d = std::make_shared<Draft>();
    if (auto e = read_draft(c, pid, sid, body, *d)) return *e;
    auto w = std::make_shared<ServerWrite>();
    w->pid = pid;
    w->sid = sid;
    w->action = "server.put";
    w->require_tier = true;
    // A full replace: keeps created_at, and is_default / is_active when the
    // body does not say; test results belong to the old configuration.
    w->build = [d, sid, at = c->at](const std::string &old) -> std::variant<ServerRecord, Step> {
        ServerRecord rec;
        rec.id = sid;
        rec.created_at = at;
        try {
            ServerRecord prev = parse_server(old, sid);
            rec.created_at = prev.created_at.empty() ? at : prev.created_at;
            rec.is_default = prev.is_default;
            rec.is_active = prev.is_active;
        } catch (const Error &) {
            // An unreadable old record is simply replaced.
        }
        rec.name = d->name;
        rec.type = d->type;
        rec.config = d->config;
        rec.secrets = d->sealed;
        rec.secret_fields = d->secret_fields;
        rec.workspace_path = d->workspace_path;
        if (d->is_default) rec.is_default = *d->is_default;
        if (d->is_active) rec.is_active = *d->is_active;
        rec.updated_at = at;
        rec.config_rev = new_rev();
        return rec;
    };
    return update(c, std::move(w), 0);
}

namespace {

struct Patch {
    std::optional<std::string> name, type, workspace_path;
    std::optional<json> config;  // non-secret fields given
    std::optional<bool> is_default, is_active;
    std::shared_ptr<SecretMap> secrets = std::make_shared<SecretMap>();
};

Step secret_required() {
    return fail(409, "secret_required",
                "changing where the server's credentials are sent (host, port, username, "
                "host_key_fingerprint, endpoint, api_url) needs the secret again in the same "
                "request, or an admin token");
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

}  // namespace

Step server_patch(const CtxPtr &c, const std::string &pid, const std::string &sid, json &body) {
    auto p = std::make_shared<Patch>();
    auto secret_err = take_secrets(body, *p->secrets);
    if (auto e = check_fields(body, {{"name", Kind::String, false},
                                     {"server_type", Kind::String, false},
                                     {"connection_config", Kind::Object, false},
                                     {"workspace_path", Kind::String, false},
                                     {"is_default", Kind::Bool, false},
                                     {"is_active", Kind::Bool, false}}))
        return *e;
    if (secret_err) return *secret_err;
    if (auto e = check_text(body, "name", 200, false)) return *e;
    if (auto e = check_type(body)) return *e;
    if (auto e = check_text(body, "workspace_path", kMaxPath, true)) return *e;
    if (body.contains("name")) p->name = body["name"].get<std::string>();
    if (body.contains("server_type")) p->type = body["server_type"].get<std::string>();
    if (body.contains("workspace_path"))
        p->workspace_path = body["workspace_path"].get<std::string>();
    if (body.contains("connection_config")) p->config = body["connection_config"];
    if (body.contains("is_default")) p->is_default = body["is_default"].get<bool>();
    if (body.contains("is_active")) p->is_active = body["is_active"].get<bool>();

    auto w = std::make_shared<ServerWrite>();
    w->pid = pid;
    w->sid = sid;
    w->action = "server.patch";
    const Config *cfg = c->cfg;
    std::shared_ptr<const Patch> patch = p;
    w->build = [cfg, pid, sid, patch, at = c->at, admin = c->who.admin](const std::string &old) {
        return apply_patch(*cfg, pid, sid, at, admin, *patch, old);
    };
    return update(c, std::move(w), 0);
}

Step server_delete(const CtxPtr &c, const std::string &pid, const std::string &sid) {
    const Layout &l = c->cfg->layout;
    auto argv = mutation(*c, kScriptServerDelete, pid, {l.project(pid), l.servers(pid)}, {sid});
    return redis(std::move(argv), [sid](const Reply &r) {
        long long code = script_code(r);
        if (code == kNoProject) return project_not_found();
        if (code == kNotFound) return server_missing();
        bool was_default = script_item(r, 1).integer == 1;
        return respond(200, json{{"id", sid}, {"deleted", true}, {"was_default", was_default}});
    });
}

// ---- connection test ------------------------------------------------------------------

namespace {

struct Outcome {
    bool ok = false;
    std::string stage;    // connect | host_key | auth | workspace | done
    std::string message;  // fixed per outcome: never text from the target
    std::string excerpt;  // what the target said, through redact_excerpt()
    int http_status = 0;  // docker / kubernetes; 0 = no answer
    int64_t latency_ms = 0;
    bool ssh = false;
    std::string fingerprint;  // seen (ssh)
    bool tofu = false;
    std::string workspace_check;  // ssh: "sftp" | "exec", how the workspace was checked
};

// Self-service tests must not map the operator's network nor scan ports: a
// refused target, a closed port, a filtered one and a name that does not
// resolve all give this one answer (no excerpt, no latency).
constexpr const char *kUnreachable =
    "the server could not be reached, or the target is not allowed for self-service tests";

const char *fixed_message(std::string_view type, std::string_view stage) {
    if (stage == "done") {
        if (type == "ssh") return "connected, authenticated and found the workspace";
        if (type == "local") return "the workspace path exists and is a directory";
        if (type == "docker") return "the Docker engine answered the ping";
        return "the Kubernetes API accepted the token";
    }
    if (stage == "host_key") return "the host key check failed";
    if (stage == "auth") return "the server refused the credentials";
    if (stage == "workspace") return "workspace_path does not exist or is not a directory";
    return "cannot connect to the server";
}

// One POSIX shell word: single quotes, each embedded ' as '\''.
std::string shell_quote(std::string_view s) {
    std::string out = "'";
    for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    return out + "'";
}

std::vector<std::string_view> secret_views(const SecretMap *secrets) {
    std::vector<std::string_view> out;
    if (secrets)
        for (const auto &kv : *secrets) out.push_back(kv.second.view());
    return out;
}

void hide_reachability(Outcome &o) {
    o.message = kUnreachable;
    o.excerpt.clear();
    o.http_status = 0;
    o.latency_ms = 0;
}

Outcome failed(std::string stage, std::string message) {
    Outcome o;
    o.stage = std::move(stage);
    o.message = std::move(message);
    return o;
}

Outcome from_probe(const ProbeResult &r, const std::string &type, bool self_service,
                   const SecretMap *secrets) {
    Outcome o;
    o.ok = r.ok;
    static const char *const stages[] = {"connect", "host_key", "auth", "workspace"};
    o.stage = "done";
    if (!r.ok) {
        o.stage = "connect";
        for (const char *s : stages)
            if (r.stage == s) o.stage = s;
    }
    o.message = fixed_message(type, o.stage);
    o.excerpt = redact_excerpt(r.message, secret_views(secrets));
    o.latency_ms = r.latency_ms;
    o.ssh = type == "ssh";
    if (o.ssh) {
        std::string norm;
        if (valid_fingerprint(r.host_key_fingerprint, &norm)) o.fingerprint = norm;
        o.tofu = r.trusted_on_first_use;
        if (r.workspace_check == "sftp" || r.workspace_check == "exec")
            o.workspace_check = r.workspace_check;
    }
    if (self_service && o.stage == "connect") hide_reachability(o);
    return o;
}

Outcome from_http(const HttpResult &h, const std::string &type, bool self_service,
                  const SecretMap *secrets) {
    Outcome o;
    o.latency_ms = h.latency_ms;
    o.http_status = h.status;
    o.stage = "connect";
    if (h.status >= 200 && h.status < 300) {
        o.ok = true;
        o.stage = "done";
    } else if (h.status == 401 || h.status == 403) {
        o.stage = "auth";
    }
    o.message = h.status == 0 || o.stage != "connect" ? fixed_message(type, o.stage)
                                                      : "the endpoint answered with an "
                                                        "unexpected HTTP status";
    std::string said = h.body;
    json j = json::parse(h.body, nullptr, false);
    if (type == "kubernetes" && o.ok && j.is_object() && j.contains("gitVersion") &&
        j["gitVersion"].is_string())
        said = "Kubernetes " + j["gitVersion"].get<std::string>();
    o.excerpt = redact_excerpt(said, secret_views(secrets));
    if (self_service && h.status == 0) hide_reachability(o);
    return o;
}

json outcome_json(const std::string &sid, const std::string &type, const Outcome &o) {
    json out{{"id", sid},
             {"server_type", type},
             {"status", o.ok ? "ok" : "failed"},
             {"stage", o.stage},
             {"message", o.message},
             {"excerpt", o.excerpt},
             {"latency_ms", o.latency_ms}};
    if (type == "docker" || type == "kubernetes") out["http_status"] = o.http_status;
    if (o.ssh) {
        out["host_key_fingerprint"] = o.fingerprint;
        out["trusted_on_first_use"] = o.tofu;
        out["workspace_check"] = or_null(o.workspace_check);
    }
    return out;
}

// The record's secrets re-sealed for the fingerprint pinned on first use (it
// is bound into their associated data), as the JSON of the `secrets` member.
std::string resealed_for_pin(const Config &cfg, const std::string &pid, const ServerRecord &rec,
                             const std::string &fingerprint, const SecretMap &secrets) {
    json pinned = rec.config;
    pinned["host_key_fingerprint"] = fingerprint;
    Sealed sealed =
        seal_secrets(*cfg.ring, ServerBinding(pid, rec.id, rec.type, pinned).get(), secrets);
    nlohmann::ordered_json j;
    write_sealed_fields(j, sealed);
    j["fields"] = rec.secret_fields;
    return j.dump();
}

// Stores the result (only on the configuration that was tested) and answers
// with it whatever the store outcome. `secrets` (decrypted) are needed only
// to pin a fingerprint on first use.
Step store_outcome(const CtxPtr &c, const std::string &pid, const ServerRecord &rec,
                   const Outcome &o, const SecretMap *secrets = nullptr) {
    json out = outcome_json(rec.id, rec.type, o);
    std::string pin = o.tofu ? o.fingerprint : std::string();
    std::string resealed;
    if (!pin.empty() && rec.secrets && secrets && !secrets->empty())
        resealed = resealed_for_pin(*c->cfg, pid, rec, pin, *secrets);
    const Layout &l = c->cfg->layout;
    auto argv = mutation(*c, kScriptServerTestStore, pid, {l.servers(pid)},
                         {rec.id, rec.config_rev, c->at, o.ok ? "ok" : "failed", o.message, pin,
                          o.excerpt, std::to_string(o.http_status), resealed});
    return redis(std::move(argv), [out](const Reply &r) mutable {
        if (out.contains("trusted_on_first_use"))
            out["host_key_recorded"] = script_code(r) == kOk && script_item(r, 1).integer == 1;
        return respond(200, out);
    });
}

Step run_test(const CtxPtr &c, const std::string &pid, std::shared_ptr<const ServerRecord> rec) {
    auto secrets = std::make_shared<SecretMap>();
    if (rec->secrets) {
        try {
            *secrets = open_secrets(*c->cfg->ring, ServerBinding(*rec, pid).get(), *rec->secrets);
        } catch (const Error &) {
            Outcome o = failed("auth", "the stored credentials do not decrypt");
            o.ssh = rec->type == "ssh";
            return store_outcome(c, pid, *rec, o);
        }
    }
    auto secret = [&](const char *f) -> std::shared_ptr<SecretString> {
        auto it = secrets->find(f);
        if (it == secrets->end()) return nullptr;
        return std::make_shared<SecretString>(it->second.view());
    };
    const json &cc = rec->config;
    int timeout = c->cfg->server_test_timeout_ms;
    bool self_service = !c->who.admin;

    if (rec->type == "ssh" || rec->type == "local") {
        ProbeCall call;
        call.kind = rec->type;
        call.workspace_path = rec->workspace_path;
        call.timeout_ms = timeout;
        bool ssh = rec->type == "ssh";
        if (ssh) {
            call.host = cc_string(cc, "host");
            auto port = cc.find("port");
            call.port = port != cc.end() && port->is_number_integer() ? port->get<int>() : 22;
            call.username = cc_string(cc, "username");
            call.auth_method = cc_string(cc, "auth_method");
            call.host_key_fingerprint = cc_string(cc, "host_key_fingerprint");
            call.secret = secret(call.auth_method == "key" ? "private_key" : "password");
            call.check_resolved_address = self_service;
            call.workspace_exec = "test -d " + shell_quote(rec->workspace_path);
            if (!call.secret) {
                Outcome o = failed("auth", "no credentials are stored for this server");
                o.ssh = true;
                return store_outcome(c, pid, *rec, o);
            }
        }
        call.next = [c, pid, rec, self_service, secrets](const ProbeResult &r) {
            return guarded([&] {
                return store_outcome(c, pid, *rec,
                                     from_probe(r, rec->type, self_service, secrets.get()),
                                     secrets.get());
            });
        };
        return Step{std::move(call)};
    }

    HttpCall call;
    call.method = "GET";
    call.timeout_ms = timeout;
    call.check_resolved_address = self_service;
    if (rec->type == "docker") {
        call.url = cc_string(cc, "endpoint") + "/_ping";
    } else {
        auto token = secrets->find("token");
        if (token == secrets->end()) {
            Outcome o =
                secrets->count("kubeconfig")
                    ? failed("auth", "kubeconfig-based tests are not supported; store a token")
                    : failed("auth", "no credentials are stored for this server");
            return store_outcome(c, pid, *rec, o);
        }
        call.url = cc_string(cc, "api_url") + "/version";
        call.headers.push_back(
            Header{"Authorization", "Bearer " + std::string(token->second.view())});
        call.headers.push_back(Header{"Accept", "application/json"});
    }
    call.next = [c, pid, rec, self_service, secrets](const HttpResult &h) {
        return guarded([&] {
            return store_outcome(c, pid, *rec,
                                 from_http(h, rec->type, self_service, secrets.get()));
        });
    };
    return Step{std::move(call)};
}

// A project's own gateway key may not turn the gateway into a probe of the
// operator's network. "local" tests (a path on the gateway host) need an
// admin token; docker / kubernetes URLs follow the custom-endpoint rules
// (https, no private/loopback/link-local literals unless in
// byok_allow_endpoint). Every target is then resolved and checked by the
// glue (check_resolved_address), and ssh relies on that alone so that a
// private literal, a name resolving inside and a closed port look the same.
std::optional<Step> self_service_target_refused(const CtxPtr &c, const ServerRecord &rec) {
    if (c->who.admin || rec.type == "ssh") return std::nullopt;
    if (rec.type == "local")
        return fail(403, "admin_only", "testing a local server needs an admin token");
    std::string target = cc_string(rec.config, rec.type == "docker" ? "endpoint" : "api_url");
    if (endpoint_problem(*c->cfg, target, nullptr).empty()) return std::nullopt;
    return fail(403, "target_refused",
                "self-service connection tests may only reach public https endpoints; use an "
                "admin token or list the host in byok_allow_endpoint");
}

}  // namespace

Step server_test(const CtxPtr &c, const std::string &pid, const std::string &sid, json &body) {
    if (auto e = check_fields(body, {})) return *e;
    const Layout &l = c->cfg->layout;
    return redis(eval(kScriptReadProject, {l.project(pid), l.servers(pid)}, {}),
                 [c, pid, sid](const Reply &r) -> Step {
                     if (script_code(r) == kNoProject) return project_not_found();
                     Fields servers = to_fields(script_item(r, 2));
                     auto it = servers.find(sid);
                     if (it == servers.end()) return server_missing();
                     std::shared_ptr<const ServerRecord> rec;
                     try {
                         rec = std::make_shared<ServerRecord>(parse_server(it->second, sid));
                     } catch (const Error &) {
                         Outcome o = failed("connect", "stored record is malformed");
                         return respond(200, outcome_json(sid, "", o));
                     }
                     if (auto refused = self_service_target_refused(c, *rec)) return *refused;
                     return run_test(c, pid, rec);
                 });
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
