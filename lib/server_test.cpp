// Admin API: the execution-server connection test (SPEC §8): ssh/local
// through a ProbeCall the glue runs on its thread pool, docker/kubernetes
// through an HttpCall; the outcome is stored on the record.
#include "lib/layout.h"
#include "lib/redact.h"
#include "lib/server_config.h"

namespace byok::admin::detail {

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
    return mutate(*c, pid, std::move(argv), [out](const Reply &r) mutable {
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

}  // namespace byok::admin::detail
