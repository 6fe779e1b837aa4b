// Admin API entry point: authentication, routing and dispatch to the
// handlers in admin_*.cpp (their shared helpers: admin_internal.cpp).
#include "lib/admin.h"

#include "lib/admin_internal.h"
#include "lib/client_api.h"
#include "lib/gateway.h"
#include "lib/key_select.h"
#include "lib/layout.h"
#include "lib/text.h"

namespace byok::admin {

namespace {

using namespace detail;

// The request with owned copies; the body is kept in wiped memory because a
// PUT of a provider key carries the plaintext.
struct Pending {
    std::shared_ptr<Ctx> ctx;
    std::shared_ptr<SecretString> body;
    std::string content_type;
    bool body_too_large = false;
};

Step unauthorized(std::string_view message) {
    Step s = fail(401, "unauthorized", message);
    std::get<Response>(s.action).headers.push_back(
        Header{"WWW-Authenticate", "Bearer realm=\"byok-admin\""});
    return s;
}

int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

std::string percent_decode(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '+') {
            out += ' ';
        } else if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 &&
                   hexval(s[i + 2]) >= 0) {
            out += static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out += s[i];
        }
    }
    return out;
}

void parse_query(std::string_view q, std::map<std::string, std::string, std::less<>> &out) {
    while (!q.empty()) {
        size_t amp = q.find('&');
        std::string_view part = q.substr(0, amp);
        q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
        if (part.empty()) continue;
        size_t eq = part.find('=');
        std::string k = percent_decode(part.substr(0, eq));
        std::string v = eq == std::string_view::npos ? "" : percent_decode(part.substr(eq + 1));
        out.emplace(std::move(k), std::move(v));  // first occurrence wins
    }
}

// "/projects/p1/keys/" → {"projects","p1","keys"}; an empty inner segment
// ("//") yields an empty string that matches no route.
std::vector<std::string> split_path(std::string_view p) {
    std::vector<std::string> seg;
    while (!p.empty() && p.front() == '/') p.remove_prefix(1);
    while (!p.empty() && p.back() == '/') p.remove_suffix(1);
    while (!p.empty()) {
        size_t slash = p.find('/');
        seg.emplace_back(p.substr(0, slash));
        p = slash == std::string_view::npos ? std::string_view() : p.substr(slash + 1);
    }
    return seg;
}

// "a b  c" → {"a","b","c"}
std::vector<std::string> split_words(std::string_view s) {
    std::vector<std::string> out;
    while (!s.empty()) {
        size_t sp = s.find(' ');
        if (sp != 0) out.emplace_back(s.substr(0, sp));
        s = sp == std::string_view::npos ? std::string_view() : s.substr(sp + 1);
    }
    return out;
}

bool is_json_media_type(std::string_view ct) {
    return iequals(trim_ows(ct.substr(0, ct.find(';'))), "application/json");
}

// Nesting depth of a JSON text, ignoring strings (bounds the parser's work
// before it runs).
size_t json_depth(std::string_view s) {
    size_t depth = 0, max_depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < s.size(); ++i) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\')
                ++i;
            else if (ch == '"')
                in_str = false;
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == '{' || ch == '[') {
            max_depth = std::max(max_depth, ++depth);
        } else if ((ch == '}' || ch == ']') && depth > 0) {
            --depth;
        }
    }
    return max_depth;
}

enum class RouteId {
    None,
    Index,
    Providers,
    Projects,
    Project,
    ApiKeys,
    ApiKey,
    Keys,
    Key,
    KeyTest,
    KeyItem,      // /projects/{pid}/keys/{provider}/{key_id} (issue 14)
    KeyItemTest,  // …/{key_id}/test
    Stats,
    Servers,
    ServerDefault,
    Server,
    ServerTest,
    Audit,
    Rotate,
    Keyring,
    Me,
    Usage,     // GET /projects/{pid}/usage
    UsageAll,  // GET /usage (admin)
};

// Who may call a route with a method. A gateway key always sees its own
// project only; Who::ManageKeys is checked by the route itself.
enum class Who { Any, AdminOnly, ManageKeys };

struct RouteMethod {
    std::string_view method;
    Who who;
};

struct RouteSpec {
    RouteId id;
    std::string_view path;  // as documented, relative to the admin prefix
    std::vector<RouteMethod> methods;
};

// The route table: match_route's result is looked up here for the allowed
// methods and who may call them, and GET / lists it as it is.
const std::vector<RouteSpec> &route_table() {
    static const std::vector<RouteSpec> routes = {
        {RouteId::Index, "/", {{"GET", Who::Any}}},
        {RouteId::Me, "/me", {{"GET", Who::Any}}},
        {RouteId::Providers, "/providers", {{"GET", Who::Any}}},
        {RouteId::Projects, "/projects", {{"GET", Who::AdminOnly}, {"POST", Who::AdminOnly}}},
        {RouteId::Project,
         "/projects/{pid}",
         {{"GET", Who::Any}, {"PATCH", Who::Any}, {"DELETE", Who::AdminOnly}}},
        {RouteId::ApiKeys,
         "/projects/{pid}/api-keys",
         {{"GET", Who::Any}, {"POST", Who::ManageKeys}}},
        {RouteId::ApiKey, "/projects/{pid}/api-keys/{id}", {{"DELETE", Who::ManageKeys}}},
        {RouteId::Keys, "/projects/{pid}/keys", {{"GET", Who::Any}}},
        {RouteId::Key,
         "/projects/{pid}/keys/{provider}",
         {{"GET", Who::Any},
          {"POST", Who::Any},
          {"PUT", Who::Any},
          {"PATCH", Who::Any},
          {"DELETE", Who::Any}}},
        {RouteId::KeyTest, "/projects/{pid}/keys/{provider}/test", {{"POST", Who::Any}}},
        {RouteId::KeyItem,
         "/projects/{pid}/keys/{provider}/{key_id}",
         {{"PATCH", Who::Any}, {"DELETE", Who::Any}}},
        {RouteId::KeyItemTest,
         "/projects/{pid}/keys/{provider}/{key_id}/test",
         {{"POST", Who::Any}}},
        {RouteId::Stats, "/projects/{pid}/stats", {{"GET", Who::Any}}},
        {RouteId::Usage, "/projects/{pid}/usage", {{"GET", Who::Any}}},
        {RouteId::Servers, "/projects/{pid}/servers", {{"GET", Who::Any}, {"POST", Who::Any}}},
        {RouteId::ServerDefault, "/projects/{pid}/servers/default", {{"GET", Who::Any}}},
        {RouteId::Server,
         "/projects/{pid}/servers/{sid}",
         {{"GET", Who::Any}, {"PUT", Who::Any}, {"PATCH", Who::Any}, {"DELETE", Who::Any}}},
        {RouteId::ServerTest, "/projects/{pid}/servers/{sid}/test", {{"POST", Who::Any}}},
        {RouteId::Audit, "/audit", {{"GET", Who::Any}}},
        {RouteId::Rotate, "/rotate", {{"POST", Who::AdminOnly}}},
        {RouteId::Keyring, "/keyring", {{"GET", Who::AdminOnly}}},
        {RouteId::UsageAll, "/usage", {{"GET", Who::AdminOnly}}},
    };
    return routes;
}

const RouteSpec *route_spec(RouteId id) {
    for (const auto &r : route_table())
        if (r.id == id) return &r;
    return nullptr;
}

std::string_view who_name(Who w) {
    switch (w) {
        case Who::AdminOnly:
            return "admin";
        case Who::ManageKeys:
            return "admin, project key with manage_keys";
        case Who::Any:
            break;
    }
    return "admin, project key";
}

Step routes_list() {
    json out = json::array();
    for (const auto &r : route_table())
        for (const auto &m : r.methods)
            out.push_back({{"method", m.method}, {"path", r.path}, {"who", who_name(m.who)}});
    return respond(200, out);
}

struct Match {
    RouteId id = RouteId::None;
    std::string pid, item;  // item: gateway-key id, provider id or server id
    std::string key_id;     // KeyItem, KeyItemTest
};

Match match_route(const std::vector<std::string> &s) {
    Match m;
    size_t n = s.size();
    if (n == 0)
        m.id = RouteId::Index;
    else if (n == 1 && s[0] == "providers")
        m.id = RouteId::Providers;
    else if (n == 1 && s[0] == "projects")
        m.id = RouteId::Projects;
    else if (n == 1 && s[0] == "audit")
        m.id = RouteId::Audit;
    else if (n == 1 && s[0] == "rotate")
        m.id = RouteId::Rotate;
    else if (n == 1 && s[0] == "keyring")
        m.id = RouteId::Keyring;
    else if (n == 1 && s[0] == "me")
        m.id = RouteId::Me;
    else if (n == 1 && s[0] == "usage")
        m.id = RouteId::UsageAll;
    if (m.id != RouteId::None || n < 2 || s[0] != "projects") return m;
    m.pid = s[1];
    if (n == 2)
        m.id = RouteId::Project;
    else if (n == 3 && s[2] == "servers")
        m.id = RouteId::Servers;
    else if (n == 4 && s[2] == "servers" && s[3] == "default")
        m.id = RouteId::ServerDefault;
    else if (n == 4 && s[2] == "servers")
        m.id = RouteId::Server;
    else if (n == 5 && s[2] == "servers" && s[4] == "test")
        m.id = RouteId::ServerTest;
    else if (n == 3 && s[2] == "api-keys")
        m.id = RouteId::ApiKeys;
    else if (n == 4 && s[2] == "api-keys")
        m.id = RouteId::ApiKey;
    else if (n == 3 && s[2] == "keys")
        m.id = RouteId::Keys;
    else if (n == 4 && s[2] == "keys")
        m.id = RouteId::Key;
    else if (n == 5 && s[2] == "keys" && s[4] == "test")
        m.id = RouteId::KeyTest;
    else if (n == 5 && s[2] == "keys")
        m.id = RouteId::KeyItem;
    else if (n == 6 && s[2] == "keys" && s[5] == "test")
        m.id = RouteId::KeyItemTest;
    else if (n == 3 && s[2] == "stats")
        m.id = RouteId::Stats;
    else if (n == 3 && s[2] == "usage")
        m.id = RouteId::Usage;
    if (n >= 4) m.item = s[3];
    if (m.id == RouteId::KeyItem || m.id == RouteId::KeyItemTest) m.key_id = s[4];
    return m;
}

Step method_not_allowed(const std::vector<std::string_view> &allowed) {
    std::string allow;
    for (auto m : allowed) allow += (allow.empty() ? "" : ", ") + std::string(m);
    Step s = fail(405, "method_not_allowed", "method not allowed; allowed: " + allow);
    std::get<Response>(s.action).headers.push_back(Header{"Allow", allow});
    return s;
}

// Size, media type and syntax of the body; on success `out` is an object
// ({} for an empty body).
std::optional<Step> read_body(const Pending &p, json &out) {
    if (p.body_too_large)
        return fail(413, "payload_too_large", "request body is larger than the limit");
    std::string_view body = p.body->view();
    if (trim_ows(body).empty()) {
        out = json::object();
        return std::nullopt;
    }
    if (!is_json_media_type(p.content_type))
        return fail(415, "unsupported_media_type", "the body must be application/json");
    if (json_depth(body) > 16) return fail(400, "invalid_json", "the body is nested too deeply");
    out = json::parse(body.begin(), body.end(), nullptr, false);
    if (out.is_discarded()) return fail(400, "invalid_json", "the body is not valid JSON");
    if (!out.is_object()) return fail(400, "invalid_json", "the body must be a JSON object");
    return std::nullopt;
}

Step dispatch(const Pending &p) {
    CtxPtr c = p.ctx;
    const Ctx &ctx = *c;
    Match m = match_route(ctx.seg);
    const RouteSpec *spec = route_spec(m.id);
    if (spec == nullptr) return fail(404, "not_found", "no such route");
    const RouteMethod *method = nullptr;
    std::vector<std::string_view> allowed;
    for (const auto &rm : spec->methods) {
        allowed.push_back(rm.method);
        if (ctx.method == rm.method) method = &rm;
    }
    if (method == nullptr) return method_not_allowed(allowed);

    const Principal &who = ctx.who;
    bool project_route = !m.pid.empty();
    if (!who.admin) {
        // A gateway key sees its own project only; others do not exist for it.
        if (project_route && m.pid != who.project) return project_not_found();
        if (method->who == Who::AdminOnly)
            return fail(403, "forbidden", "this route needs an admin token");
    }
    if (project_route && !valid_id(m.pid))
        return fail(400, "invalid_id", "path segment 'pid' is not a valid project id");
    if ((m.id == RouteId::Server || m.id == RouteId::ServerTest) && !valid_id(m.item))
        return fail(400, "invalid_id", "path segment 'sid' is not a valid server id");

    const Provider *provider = nullptr;
    if (m.id == RouteId::Key || m.id == RouteId::KeyTest || m.id == RouteId::KeyItem ||
        m.id == RouteId::KeyItemTest) {
        provider = ctx.cfg->catalog->find(m.item);
        if (!provider) return fail(404, "provider_not_found", "unknown provider");
        // Storing or testing a key of a provider that is off here (a local
        // one the operator did not allow) is refused; deleting stays possible.
        if (!provider->enabled && ctx.method != "DELETE" && ctx.method != "GET")
            return fail(403, "provider_not_allowed", provider_not_allowed_message(*provider));
    }
    if (!m.key_id.empty() && !valid_key_id(m.key_id))
        return fail(400, "invalid_id", "path segment 'key_id' is not a valid key id");
    if (m.id == RouteId::ApiKey && !valid_id(m.item))
        return fail(400, "invalid_id", "path segment 'id' is not a valid gateway-key id");

    json body = json::object();
    bool has_body = ctx.method == "POST" || ctx.method == "PUT" || ctx.method == "PATCH";
    if (has_body) {
        if (auto err = read_body(p, body)) return *err;
    }

    const std::string &meth = ctx.method;
    switch (m.id) {
        case RouteId::Index:
            return routes_list();
        case RouteId::Providers:
            return providers_list(c);
        case RouteId::Projects:
            return meth == "GET" ? projects_list(c) : projects_create(c, body);
        case RouteId::Project:
            if (meth == "GET") return project_get(c, m.pid);
            if (meth == "PATCH") return project_patch(c, m.pid, body);
            return project_delete(c, m.pid);
        case RouteId::ApiKeys:
            return meth == "GET" ? apikeys_list(c, m.pid) : apikeys_create(c, m.pid, body);
        case RouteId::ApiKey:
            return apikey_revoke(c, m.pid, m.item);
        case RouteId::Keys:
            return keys_list(c, m.pid);
        case RouteId::Key:
            if (meth == "GET") return key_get(c, m.pid, *provider);
            if (meth == "POST") return key_add(c, m.pid, *provider, body);
            if (meth == "PUT") return key_put(c, m.pid, *provider, body);
            if (meth == "PATCH") return key_patch(c, m.pid, *provider, body, "");
            return key_delete(c, m.pid, *provider, "");
        case RouteId::KeyTest:
            return key_test(c, m.pid, *provider, body, "");
        case RouteId::KeyItem:
            if (meth == "PATCH") return key_patch(c, m.pid, *provider, body, m.key_id);
            return key_delete(c, m.pid, *provider, m.key_id);
        case RouteId::KeyItemTest:
            return key_test(c, m.pid, *provider, body, m.key_id);
        case RouteId::Stats:
            return project_stats(c, m.pid);
        case RouteId::Audit:
            return audit_list(c);
        case RouteId::Rotate:
            return rotate(c, body);
        case RouteId::Keyring:
            return keyring_get(c);
        case RouteId::Me:
            return whoami(c);
        case RouteId::Usage:
            return project_usage(c, m.pid);
        case RouteId::UsageAll:
            return usage_all(c);
        case RouteId::Servers:
            return meth == "GET" ? servers_list(c, m.pid) : server_create(c, m.pid, body);
        case RouteId::ServerDefault:
            return server_default(c, m.pid);
        case RouteId::Server:
            if (meth == "GET") return server_get(c, m.pid, m.item);
            if (meth == "PUT") return server_put(c, m.pid, m.item, body);
            if (meth == "PATCH") return server_patch(c, m.pid, m.item, body);
            return server_delete(c, m.pid, m.item);
        case RouteId::ServerTest:
            return server_test(c, m.pid, m.item, body);
        case RouteId::None:
            break;
    }
    return fail(404, "not_found", "no such route");
}

bool is_admin_token(const Config &cfg, std::string_view t) {
    bool hit = false;  // no early exit: every configured token is compared
    for (const auto &tok : cfg.admin_tokens)
        if (!tok.empty() && constant_time_equal(t, tok)) hit = true;
    return hit;
}

}  // namespace

std::string changed_project(std::string_view method, std::string_view path) {
    if (method == "GET" || method == "HEAD") return "";
    std::vector<std::string> seg = split_path(path);
    if (seg.size() < 2 || seg[0] != "projects" || !valid_id(seg[1])) return "";
    return seg[1];
}

Step handle(const Config &cfg, const Request &req) {
    return guarded([&]() -> Step {
        if (!cfg.catalog || !cfg.ring)
            return fail(500, "internal_error", "admin API not configured");
        auto ctx = std::make_shared<Ctx>();
        ctx->cfg = &cfg;
        ctx->method = std::string(req.method);
        ctx->seg = split_path(req.path);
        parse_query(req.query, ctx->query);
        ctx->now = cfg.clock.now ? cfg.clock.now() : static_cast<int64_t>(std::time(nullptr));
        ctx->at = iso8601_utc(ctx->now);

        Pending p;
        p.ctx = ctx;
        p.content_type = std::string(req.content_type);
        p.body_too_large = req.body.size() > cfg.max_body;
        p.body = std::make_shared<SecretString>(p.body_too_large ? std::string_view() : req.body);

        std::string_view token = bearer_token(req.authorization);
        if (!token.empty() && is_admin_token(cfg, token)) {
            ctx->who.admin = true;
            ctx->who.actor = "admin:" + sha256_hex(token).substr(0, 8);
            return dispatch(p);
        }
        if (token.empty() && req.authorization.empty()) token = trim_ows(req.api_key);
        if (!looks_like_gateway_key(token)) return unauthorized("missing or invalid credentials");

        std::string sha = sha256_hex(token);
        return redis({"HGETALL", cfg.layout.apikey(sha)}, [p, sha](const Reply &r) -> Step {
            Fields f = to_fields(r);
            auto scopes = f.find("scopes");
            if (scopes != f.end()) p.ctx->who.scopes = split_words(scopes->second);
            auto revoked = f.find("revoked");
            auto project = f.find("project");
            if (f.empty() || project == f.end() || !valid_id(project->second) ||
                (revoked != f.end() && !revoked->second.empty() && revoked->second != "0"))
                return unauthorized("missing or invalid credentials");
            auto expires = f.find("expires_at");  // issue 14: an expired key is never used
            if (expires != f.end() &&
                key_expired(parse_rfc3339(expires->second).value_or(0), p.ctx->now))
                return unauthorized("missing or invalid credentials");
            p.ctx->who.admin = false;
            p.ctx->who.project = project->second;
            auto id = f.find("id");
            if (id != f.end()) p.ctx->who.key_id = id->second;
            p.ctx->who.actor = "project:" + project->second;
            const Layout &l = p.ctx->cfg->layout;
            if (!l.cluster()) return dispatch(p);
            // Cluster mode: the key's metadata, in the project's slot, is the
            // authority (lib/gateway.h gateway_key_meta).
            std::vector<std::string> meta{"HGET", l.apikeys(project->second), p.ctx->who.key_id};
            return redis(std::move(meta), [p, sha](const Reply &m) -> Step {
                if (m.type != Reply::Type::String ||
                    gateway_key_meta(m.str, sha) != KeyMetaVerdict::Ok)
                    return unauthorized("missing or invalid credentials");
                return dispatch(p);
            });
        });
    });
}

}  // namespace byok::admin
