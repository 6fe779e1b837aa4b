// Admin API: provider keys (add, list masked, update, delete, live test),
// per-key endpoint rules and project stats.
#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "lib/admin_internal.h"
#include "lib/layout.h"
#include "lib/project.h"
#include "lib/redact.h"

namespace byok::admin::detail {

namespace {

constexpr int kCasAttempts = 3;

Step project_missing() { return fail(404, "project_not_found", "no such project"); }
Step key_missing() { return fail(404, "key_not_found", "no key stored for this provider"); }

std::string lower(std::string_view s) {
    std::string out(s);
    for (auto &ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    while (!out.empty() && out.back() == '.') out.pop_back();
    return out;
}

// An IP literal as 16 bytes (IPv4 as ::ffff:a.b.c.d) or nullopt.
std::optional<std::array<uint8_t, 16>> parse_ip(std::string_view host) {
    std::string h(host);
    std::array<uint8_t, 16> a{};
    in_addr v4{};
    if (inet_pton(AF_INET, h.c_str(), &v4) == 1) {
        a[10] = a[11] = 0xff;
        std::memcpy(a.data() + 12, &v4, 4);
        return a;
    }
    if (inet_pton(AF_INET6, h.c_str(), a.data()) == 1) return a;
    return std::nullopt;
}

bool prefix_match(const std::array<uint8_t, 16> &a, const std::array<uint8_t, 16> &net, int bits) {
    for (int i = 0; i < 16 && bits > 0; ++i, bits -= 8) {
        uint8_t mask = bits >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - bits));
        if ((a[i] & mask) != (net[i] & mask)) return false;
    }
    return true;
}

bool in_cidr(const std::array<uint8_t, 16> &a, const char *cidr) {
    std::string s(cidr);
    size_t slash = s.find('/');
    auto net = parse_ip(s.substr(0, slash));
    if (!net) return false;
    int bits = std::stoi(s.substr(slash + 1));
    if (s.find(':') == std::string::npos) bits += 96;  // IPv4 inside ::ffff:0:0/96
    return prefix_match(a, *net, bits);
}

// Why an IP is not a public unicast destination, or nullptr.
const char *private_ip(const std::array<uint8_t, 16> &a) {
    static const char *const v4[] = {"0.0.0.0/8",      "10.0.0.0/8",     "100.64.0.0/10",
                                     "127.0.0.0/8",    "169.254.0.0/16", "172.16.0.0/12",
                                     "192.168.0.0/16", "224.0.0.0/4",    "240.0.0.0/4"};
    static const char *const v6[] = {"::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8"};
    std::array<uint8_t, 16> mapped = a;
    // NAT64 (64:ff9b::/96) and IPv4-compatible (::/96) embed an IPv4 address.
    if (in_cidr(a, "64:ff9b::/96") || (in_cidr(a, "::/96") && !in_cidr(a, "::/127"))) {
        std::memset(mapped.data(), 0, 10);
        mapped[10] = mapped[11] = 0xff;
    }
    bool is_v4 = in_cidr(mapped, "::ffff:0:0/96");
    if (is_v4) {
        for (const char *c : v4)
            if (in_cidr(mapped, c)) return "a private, loopback or link-local address";
    } else {
        for (const char *c : v6)
            if (in_cidr(a, c)) return "a private, loopback or link-local address";
    }
    return nullptr;
}

bool host_allowed(const Config &cfg, const std::string &host) {
    auto ip = parse_ip(host);
    for (const auto &entry : cfg.allow_endpoint) {
        size_t slash = entry.find('/');
        if (slash != std::string::npos) {
            if (!ip) continue;
            auto net = parse_ip(entry.substr(0, slash));
            const std::string bits_s = entry.substr(slash + 1);
            if (!net || bits_s.empty() || bits_s.size() > 3 ||
                !std::all_of(bits_s.begin(), bits_s.end(), ::isdigit))
                continue;
            int bits = std::stoi(bits_s);
            if (entry.find(':') == std::string::npos) bits += 96;
            if (bits <= 128 && prefix_match(*ip, *net, bits)) return true;
        } else if (ip) {
            auto other = parse_ip(entry);
            if (other && *other == *ip) return true;
        } else if (lower(entry) == host) {
            return true;
        }
    }
    return false;
}

// A host whose last label is numeric is an IP attempt ("127.1", "0x7f.1",
// "2130706433") that resolvers accept but inet_pton does not.
bool numeric_host(const std::string &host) {
    size_t dot = host.rfind('.');
    std::string last = dot == std::string::npos ? host : host.substr(dot + 1);
    if (last.empty()) return false;
    if (last.size() > 2 && last[0] == '0' && last[1] == 'x') return true;
    return std::all_of(last.begin(), last.end(), ::isdigit);
}

json key_record_view(const std::string &provider, const std::string &provider_name,
                     const KeyRecord &r) {
    return json{{"provider", provider},         {"provider_name", provider_name},
                {"key_hint", r.key_hint},       {"label", r.label},
                {"endpoint", r.endpoint},       {"is_active", r.is_active},
                {"created_at", r.created_at},   {"updated_at", r.updated_at},
                {"last_tested", r.last_tested}, {"test_status", r.test_status}};
}

std::string field_or(const Fields &f, const std::string &k) {
    auto it = f.find(k);
    return it == f.end() ? std::string() : it->second;
}

bool tier_allows_byok(const Fields &project) {
    auto t = parse_tier(field_or(project, "tier"));
    return t && *t != Tier::Free;
}

// Endpoint field rules shared by PUT and PATCH; fills `normalized`.
std::optional<Step> check_endpoint_field(const Config &cfg, const Provider &p, const json &body,
                                         std::string *normalized) {
    auto it = body.find("endpoint");
    if (it == body.end()) return std::nullopt;
    if (!p.per_key_endpoint)
        return fail(422, "invalid_value",
                    "field 'endpoint' is only allowed for providers with per-key endpoints");
    std::string why = endpoint_problem(cfg, it->get_ref<const std::string &>(), normalized);
    if (!why.empty()) return fail(422, "invalid_endpoint", why);
    return std::nullopt;
}

// Writes `next_record(old)` with a compare-and-set, re-reading on a
// concurrent change. `build` returns the record to write, or a Step to
// answer instead (e.g. 404 for PATCH of a missing record).
using Builder = std::function<std::variant<KeyRecord, Step>(const Fields &project,
                                                            const std::string *old_json)>;
struct CasWrite {
    std::string pid;
    const Provider *provider;
    bool require_tier;
    std::string action;
    Builder build;
};

Step cas_write(const CtxPtr &c, std::shared_ptr<const CasWrite> w, int attempt) {
    const Layout &l = c->cfg->layout;
    auto read = eval(kScriptReadProject, {l.project(w->pid), l.keys(w->pid)}, {});
    return redis(std::move(read), [c, w, attempt](const Reply &r) -> Step {
        if (script_code(r) == kNoProject) return project_missing();
        Fields project = to_fields(script_item(r, 1));
        if (w->require_tier && !tier_allows_byok(project)) return tier_refused();
        Fields keys = to_fields(script_item(r, 2));
        auto it = keys.find(w->provider->id);
        const std::string *old = it == keys.end() ? nullptr : &it->second;
        auto built = w->build(project, old);
        if (auto *s = std::get_if<Step>(&built)) return std::move(*s);
        auto rec = std::make_shared<KeyRecord>(std::move(std::get<KeyRecord>(built)));

        const Layout &lay = c->cfg->layout;
        auto argv = mutation(*c, kScriptKeySet, w->pid, {lay.project(w->pid), lay.keys(w->pid)},
                             {w->provider->id, old ? *old : std::string(),
                              serialize_key_record(*rec), w->require_tier ? "1" : "0", w->action});
        return redis(std::move(argv), [c, w, attempt, rec](const Reply &wr) -> Step {
            long long code = script_code(wr);
            if (code == kNoProject) return project_missing();
            if (code == kTier) return tier_refused();
            if (code == kConflict) {
                if (attempt + 1 >= kCasAttempts)
                    return fail(409, "conflict", "the key was changed concurrently, retry");
                return cas_write(c, w, attempt + 1);
            }
            return respond(code == kCreated ? 201 : 200,
                           key_record_view(w->provider->id, w->provider->name, *rec));
        });
    });
}

}  // namespace

// ---- endpoint rules (SPEC §10) -------------------------------------------
// Checked here on the literal URL. Names that resolve to private addresses
// can only be caught after resolution, which is the glue's job.
std::string endpoint_problem(const Config &cfg, std::string_view endpoint,
                             std::string *normalized) {
    Url u;
    try {
        u = parse_url(endpoint, "endpoint");
    } catch (const Error &e) {
        return e.what();
    }
    std::string host = lower(u.host);
    bool allowed = host_allowed(cfg, host);
    if (!allowed) {
        if (u.scheme != "https")
            return "field 'endpoint' must use https unless its host is in byok_allow_endpoint";
        if (host == "localhost" ||
            (host.size() > 10 && host.compare(host.size() - 10, 10, ".localhost") == 0))
            return "field 'endpoint' points to a loopback host";
        if (auto ip = parse_ip(host)) {
            if (const char *why = private_ip(*ip))
                return std::string("field 'endpoint' points to ") + why;
        } else if (numeric_host(host)) {
            return "field 'endpoint' has a host that is not a valid address";
        }
    }
    if (normalized) *normalized = u.origin() + u.path;
    return "";
}

json masked_key(const Provider &p, const KeyRecord &r) { return key_record_view(p.id, p.name, r); }

bool endpoint_host_allowed(const Config &cfg, std::string_view host) {
    return host_allowed(cfg, lower(host));
}

// One provider's masked key; the read script of keys_list, narrowed to one field.
Step key_get(const CtxPtr &c, const std::string &pid, const Provider &p) {
    const Layout &l = c->cfg->layout;
    return redis(eval(kScriptReadProject, {l.project(pid), l.keys(pid)}, {}), [&p](const Reply &r) {
        if (script_code(r) == kNoProject) return project_missing();
        Fields f = to_fields(script_item(r, 2));
        auto it = f.find(p.id);
        if (it == f.end()) return key_missing();
        try {
            return respond(200, masked_key(p, parse_key_record(it->second)));
        } catch (const Error &) {
            return respond(200, json{{"provider", p.id},
                                     {"provider_name", p.name},
                                     {"error", "stored record is malformed"}});
        }
    });
}

Step keys_list(const CtxPtr &c, const std::string &pid) {
    const Layout &l = c->cfg->layout;
    return redis(eval(kScriptReadProject, {l.project(pid), l.keys(pid)}, {}), [c](const Reply &r) {
        if (script_code(r) == kNoProject) return project_missing();
        json out = json::array();
        for (const auto &[provider, raw] : to_fields(script_item(r, 2))) {
            const Provider *p = c->cfg->catalog->find(provider);
            std::string name = p ? p->name : provider;
            try {
                out.push_back(key_record_view(provider, name, parse_key_record(raw)));
            } catch (const Error &) {
                out.push_back(json{{"provider", provider},
                                   {"provider_name", name},
                                   {"error", "stored record is malformed"}});
            }
        }
        return respond(200, out);
    });
}

namespace {

// Moves the plaintext `key` of a PUT/PATCH body into wiped memory, scrubs the
// parser's copy and checks its format. nullptr when the body has no key.
std::variant<std::shared_ptr<SecretString>, Step> take_key(const Provider &p, json &body) {
    auto it = body.find("key");
    if (it == body.end()) return std::shared_ptr<SecretString>();
    std::string &raw_key = it->get_ref<std::string &>();
    auto key = std::make_shared<SecretString>(raw_key);
    wipe(raw_key.data(), raw_key.size());
    raw_key.clear();
    try {
        check_key_format(p, key->view());
    } catch (const Error &e) {
        return fail(422, "invalid_key_format", e.what());
    }
    return key;
}

}  // namespace

Step key_put(const CtxPtr &c, const std::string &pid, const Provider &p, json &body) {
    if (auto e = check_fields(body, {{"key", Kind::String, true},
                                     {"label", Kind::String, false},
                                     {"endpoint", Kind::String, false},
                                     {"is_active", Kind::Bool, false}}))
        return *e;
    auto taken = take_key(p, body);
    if (auto *e = std::get_if<Step>(&taken)) return std::move(*e);
    std::shared_ptr<SecretString> key = std::get<std::shared_ptr<SecretString>>(taken);

    if (auto e = check_text(body, "label", 200, true)) return *e;
    std::string endpoint;
    if (auto e = check_endpoint_field(*c->cfg, p, body, &endpoint)) return *e;
    if (p.per_key_endpoint && endpoint.empty())
        return fail(422, "missing_field", "field 'endpoint' is required for this provider");

    KeyRecord tmpl;
    tmpl.sealed = seal(*c->cfg->ring, key->view(), key_binding(pid, p.id, endpoint));
    tmpl.key_hint = key_hint(p, key->view());
    key->clear();
    tmpl.endpoint = endpoint;
    tmpl.is_active = body.value("is_active", true);
    tmpl.updated_at = c->at;
    bool has_label = body.contains("label");
    tmpl.label = has_label ? body["label"].get<std::string>() : std::string();
    bool has_active = body.contains("is_active");

    auto w = std::make_shared<CasWrite>();
    w->pid = pid;
    w->provider = &p;
    w->require_tier = true;
    w->action = "key.put";
    // A replaced key keeps created_at (and its label and is_active when none
    // is given: a deliberately disabled key is not silently re-enabled); test
    // results belong to the old key and are dropped.
    w->build = [tmpl, has_label, has_active, at = c->at](
                   const Fields &, const std::string *old) -> std::variant<KeyRecord, Step> {
        KeyRecord rec = tmpl;
        rec.created_at = at;
        if (old) {
            try {
                KeyRecord prev = parse_key_record(*old);
                rec.created_at = prev.created_at;
                if (!has_label) rec.label = prev.label;
                if (!has_active) rec.is_active = prev.is_active;
            } catch (const Error &) {
                // An unreadable old record is simply replaced.
            }
        }
        return rec;
    };
    return cas_write(c, std::move(w), 0);
}

// Metadata changes. Changing `endpoint` changes where the stored key is sent,
// so it needs the key again in the same request (`key`) or an admin token
// (SPEC §10); the key is then re-sealed bound to the new endpoint.
Step key_patch(const CtxPtr &c, const std::string &pid, const Provider &p, json &body) {
    if (auto e = check_fields(body, {{"key", Kind::String, false},
                                     {"label", Kind::String, false},
                                     {"endpoint", Kind::String, false},
                                     {"is_active", Kind::Bool, false}}))
        return *e;
    auto taken = take_key(p, body);
    if (auto *e = std::get_if<Step>(&taken)) return std::move(*e);
    std::shared_ptr<const SecretString> key = std::get<std::shared_ptr<SecretString>>(taken);
    if (auto e = check_text(body, "label", 200, true)) return *e;
    std::string endpoint;
    if (auto e = check_endpoint_field(*c->cfg, p, body, &endpoint)) return *e;
    std::optional<std::string> label, new_endpoint;
    std::optional<bool> active;
    if (body.contains("label")) label = body["label"].get<std::string>();
    if (body.contains("endpoint")) new_endpoint = endpoint;
    if (body.contains("is_active")) active = body["is_active"].get<bool>();

    auto w = std::make_shared<CasWrite>();
    w->pid = pid;
    w->provider = &p;
    w->require_tier = key != nullptr;  // a new key is a key write, as PUT
    w->action = "key.patch";
    const KeyRing *ring = c->cfg->ring;
    bool admin = c->who.admin;
    std::string hint = key ? key_hint(p, key->view()) : std::string();
    w->build = [label, new_endpoint, active, key, hint, ring, admin, pid, provider = p.id,
                at = c->at](const Fields &,
                            const std::string *old) -> std::variant<KeyRecord, Step> {
        if (!old) return key_missing();
        KeyRecord rec;
        try {
            rec = parse_key_record(*old);
        } catch (const Error &) {
            return fail(409, "malformed_record",
                        "the stored record is malformed; replace the key with PUT");
        }
        bool retarget = new_endpoint && *new_endpoint != rec.endpoint;
        if (retarget && !key && !admin)
            return fail(409, "secret_required",
                        "changing 'endpoint' changes where the stored key is sent: supply 'key' "
                        "again in the same request, or use an admin token");
        std::string target = new_endpoint ? *new_endpoint : rec.endpoint;
        if (key) {
            rec.sealed = seal(*ring, key->view(), key_binding(pid, provider, target));
            rec.key_hint = hint;
        } else if (retarget) {
            try {
                SecretString plain =
                    open_sealed(*ring, rec.sealed, key_binding(pid, provider, rec.endpoint));
                rec.sealed = seal(*ring, plain.view(), key_binding(pid, provider, target));
            } catch (const Error &) {
                return fail(409, "key_unreadable",
                            "the stored key does not decrypt; replace it with PUT");
            }
        }
        if (key || retarget) {  // test results belong to the old key or target
            rec.last_tested.clear();
            rec.test_status.clear();
            rec.test_message.clear();
        }
        rec.endpoint = target;
        if (label) rec.label = *label;
        if (active) rec.is_active = *active;
        rec.updated_at = at;
        return rec;
    };
    return cas_write(c, std::move(w), 0);
}

Step key_delete(const CtxPtr &c, const std::string &pid, const Provider &p) {
    const Layout &l = c->cfg->layout;
    auto argv = mutation(*c, kScriptKeyDelete, pid, {l.project(pid), l.keys(pid)}, {p.id});
    std::string provider = p.id;
    return redis(std::move(argv), [provider](const Reply &r) {
        long long code = script_code(r);
        if (code == kNoProject) return project_missing();
        if (code == kNotFound) return key_missing();
        return respond(200, json{{"provider", provider}, {"deleted", true}});
    });
}

// ---- live key test --------------------------------------------------------

namespace {

struct TestResult {
    std::string status;  // valid | invalid | error
    int http_status = 0;
    std::string message;  // fixed per outcome: never text from the provider
    int64_t latency_ms = 0;
    std::string excerpt;  // what the provider said, through redact_excerpt()
};

// The provider's own error text when it has one, else the body.
std::string provider_said(const HttpResult &h) {
    json j = json::parse(h.body, nullptr, false);
    if (j.is_discarded()) return h.body;
    if (!j.is_object()) return "";
    auto err = j.find("error");
    if (err != j.end() && err->is_object() && err->contains("message") &&
        (*err)["message"].is_string())
        return (*err)["message"].get<std::string>();
    if (err != j.end() && err->is_string()) return err->get<std::string>();
    for (const char *f : {"message", "detail"})
        if (j.contains(f) && j[f].is_string()) return j[f].get<std::string>();
    return "";  // JSON, but no message we know (e.g. a model list)
}

TestResult classify(const HttpResult &h, std::string_view key) {
    TestResult t;
    t.http_status = h.status;
    t.latency_ms = h.latency_ms;
    if (h.status >= 200 && h.status < 300) {
        t.status = "valid";
        t.message = "the provider accepted the key";
    } else if (h.status == 401 || h.status == 403) {
        t.status = "invalid";
        t.message = "the provider refused the key";
    } else {
        t.status = "error";
        t.message = h.status == 0 ? "connection failed or timed out"
                                  : "the provider answered with an unexpected HTTP status";
    }
    t.excerpt = redact_excerpt(provider_said(h), {key});
    return t;
}

// Stores the result on the record (only if it still holds `ct`) and answers
// with it whatever the store outcome.
Step store_result(const CtxPtr &c, const std::string &pid, const std::string &provider,
                  const std::string &ct, const TestResult &t) {
    json out{{"provider", provider}, {"status", t.status},   {"http_status", t.http_status},
             {"message", t.message}, {"excerpt", t.excerpt}, {"latency_ms", t.latency_ms}};
    const Layout &l = c->cfg->layout;
    auto argv = mutation(
        *c, kScriptKeyTestStore, pid, {l.keys(pid)},
        {provider, ct, c->at, t.status, t.message, t.excerpt, std::to_string(t.http_status)});
    return redis(std::move(argv), [out](const Reply &) { return respond(200, out); });
}

}  // namespace

Step key_test(const CtxPtr &c, const std::string &pid, const Provider &p, json &body) {
    if (auto e = check_fields(body, {})) return *e;
    if (p.test_path.empty())
        return fail(422, "no_live_test", "provider '" + p.id + "' has no live test");
    const Layout &l = c->cfg->layout;
    const Provider *prov = &p;
    return redis(eval(kScriptReadProject, {l.project(pid), l.keys(pid)}, {}),
                 [c, pid, prov](const Reply &r) -> Step {
                     if (script_code(r) == kNoProject) return project_missing();
                     Fields keys = to_fields(script_item(r, 2));
                     auto it = keys.find(prov->id);
                     if (it == keys.end()) return key_missing();
                     KeyRecord rec;
                     std::string ct;
                     try {
                         rec = parse_key_record(it->second);
                         ct = json::parse(it->second).at("ct").get<std::string>();
                     } catch (const std::exception &) {
                         return respond(200, json{{"provider", prov->id},
                                                  {"status", "error"},
                                                  {"http_status", 0},
                                                  {"message", "stored record is malformed"},
                                                  {"latency_ms", 0}});
                     }
                     std::string url;
                     if (prov->per_key_endpoint) {
                         std::string base;
                         std::string why = rec.endpoint.empty()
                                               ? "the key has no endpoint"
                                               : endpoint_problem(*c->cfg, rec.endpoint, &base);
                         if (!why.empty()) return fail(422, "invalid_endpoint", why);
                         url = base + prov->test_path;
                     } else {
                         url =
                             prov->openai_base.origin() + prov->openai_base.path + prov->test_path;
                     }
                     std::shared_ptr<SecretString> key;
                     try {
                         key = std::make_shared<SecretString>(open_sealed(
                             *c->cfg->ring, rec.sealed, key_binding(pid, prov->id, rec.endpoint)));
                     } catch (const Error &) {
                         TestResult t{"error", 0, "stored key does not decrypt", 0, ""};
                         return store_result(c, pid, prov->id, ct, t);
                     }
                     HttpCall call;
                     call.method = prov->test_method;
                     call.url = url;
                     call.headers = upstream_headers(*prov, key->view());
                     call.check_resolved_address = prov->per_key_endpoint;
                     call.next = [c, pid, prov, ct, key](const HttpResult &h) {
                         return guarded([&] {
                             return store_result(c, pid, prov->id, ct, classify(h, key->view()));
                         });
                     };
                     return Step{std::move(call)};
                 });
}

// ---- stats ----------------------------------------------------------------

Step project_stats(const CtxPtr &c, const std::string &pid) {
    int days = 1;
    if (has_query(*c, "days")) {
        std::string v = fetch_query(*c, "days");
        bool digits = !v.empty() && v.size() <= 2 && std::all_of(v.begin(), v.end(), ::isdigit);
        days = digits ? std::stoi(v) : 0;
        if (days < 1 || days > 31)
            return fail(400, "invalid_value", "query parameter 'days' must be 1..31");
    }
    const Layout &l = c->cfg->layout;
    std::vector<std::string> keys{l.project(pid), l.keys(pid)};
    for (int d = 0; d < days; ++d) keys.push_back(l.usage(pid, yyyymmdd_utc(c->now - d * 86400LL)));
    for (auto &k : meter_keys(*c, pid, 30)) keys.push_back(std::move(k));
    return redis(eval(kScriptReadProject, std::move(keys), {}), [c, days](const Reply &r) {
        if (script_code(r) == kNoProject) return project_missing();
        Fields project = to_fields(script_item(r, 1));
        Fields records = to_fields(script_item(r, 2));
        size_t tested = 0, valid = 0;
        for (const auto &kv : records) {
            try {
                KeyRecord rec = parse_key_record(kv.second);
                tested += rec.last_tested.empty() ? 0 : 1;
                valid += rec.test_status == "valid" ? 1 : 0;
            } catch (const Error &) {
                // counted as configured only
            }
        }
        json usage = json::object();
        for (int d = 0; d < days; ++d) {
            for (const auto &[field, value] : to_fields(script_item(r, 3 + d))) {
                size_t colon = field.rfind(':');
                if (colon == std::string::npos || colon == 0) continue;
                std::string provider = field.substr(0, colon), route = field.substr(colon + 1);
                if (route.empty()) continue;
                long long n = std::strtoll(value.c_str(), nullptr, 10);
                json &u = usage[provider];
                if (u.is_null()) u = json{{"byok", 0}, {"system", 0}, {"fallback", 0}};
                u[route] = u.value(route, 0LL) + n;
            }
        }
        std::vector<const Reply *> meter;
        for (size_t i = 3 + days; i < r.elements.size(); ++i) meter.push_back(&r.elements[i]);
        json usage_30d, savings_30d;
        summarize_30d(meter, &usage_30d, &savings_30d);
        std::string tier = field_or(project, "tier");
        return respond(200, json{{"total_providers", c->cfg->catalog->providers().size()},
                                 {"configured_providers", records.size()},
                                 {"tested_providers", tested},
                                 {"valid_providers", valid},
                                 {"tier", tier.empty() ? "free" : tier},
                                 {"days", days},
                                 {"usage", usage},
                                 {"usage_30d", usage_30d},
                                 {"savings_30d", savings_30d}});
    });
}

}  // namespace byok::admin::detail

namespace byok::admin {

bool allow_listed(const Config &cfg, std::string_view host) {
    return detail::endpoint_host_allowed(cfg, host);
}

std::string resolved_address_problem(const Config &cfg, std::string_view host,
                                     std::string_view ip) {
    if (detail::host_allowed(cfg, detail::lower(host)) ||
        detail::host_allowed(cfg, detail::lower(ip)))
        return "";
    auto addr = detail::parse_ip(ip);
    if (!addr) return "the host did not resolve to an IP address";
    if (const char *why = detail::private_ip(*addr))
        return std::string("the host resolves to ") + why;
    return "";
}

}  // namespace byok::admin
