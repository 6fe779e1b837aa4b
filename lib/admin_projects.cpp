// Admin API: catalog listing, projects, gateway keys and the audit trail.
#include <algorithm>

#include "lib/admin_internal.h"
#include "lib/layout.h"
#include "lib/project.h"

namespace byok::admin::detail {

namespace {

json project_json(const std::string &pid, const Fields &f) {
    auto get = [&](const char *k) {
        auto it = f.find(k);
        return it == f.end() ? std::string() : it->second;
    };
    return json{{"id", pid},
                {"name", get("name")},
                {"tier", get("tier").empty() ? "free" : get("tier")},
                {"fallback", get("fallback").empty() ? "auto" : get("fallback")},
                {"created_at", get("created_at")},
                {"updated_at", get("updated_at")}};
}

Step project_missing() { return fail(404, "project_not_found", "no such project"); }

std::optional<Step> check_id_field(const json &body, const char *name) {
    auto it = body.find(name);
    if (it != body.end() && !valid_id(it->get_ref<const std::string &>()))
        return fail(422, "invalid_value",
                    std::string("field '") + name + "' must match [a-z0-9][a-z0-9_-]{0,63}");
    return std::nullopt;
}

std::optional<Step> check_tier_policy(const json &body) {
    auto t = body.find("tier");
    if (t != body.end() && !parse_tier(t->get_ref<const std::string &>()))
        return fail(422, "invalid_value",
                    "field 'tier' must be one of free, starter, pro, enterprise");
    auto f = body.find("fallback");
    if (f != body.end() && !parse_policy(f->get_ref<const std::string &>()))
        return fail(422, "invalid_value", "field 'fallback' must be one of auto, no_key, off");
    return std::nullopt;
}

std::string str_or(const json &body, const char *name, const std::string &dflt) {
    auto it = body.find(name);
    return it == body.end() ? dflt : it->get<std::string>();
}

// Escapes Redis glob metacharacters so a key prefix matches literally.
std::string glob_escape(std::string_view s) {
    std::string out;
    for (char ch : s) {
        if (ch == '*' || ch == '?' || ch == '[' || ch == ']' || ch == '\\') out += '\\';
        out += ch;
    }
    return out;
}

}  // namespace

Step providers_list(const CtxPtr &c) {
    auto render = [c](const Fields *configured) {
        json out = json::array();
        for (const auto &p : c->cfg->catalog->providers()) {
            json e{{"id", p.id},
                   {"name", p.name},
                   {"key_prefix", p.key_prefix},
                   {"auth", std::string(auth_style_name(p.auth))},
                   {"models", p.models}};
            if (configured) e["configured"] = configured->count(p.id) > 0;
            out.push_back(std::move(e));
        }
        return respond(200, out);
    };
    if (!has_query(*c, "project")) return render(nullptr);
    std::string pid = fetch_query(*c, "project");
    if (!c->who.admin && pid != c->who.project) return project_missing();
    if (!valid_id(pid))
        return fail(400, "invalid_id", "query parameter 'project' is not a valid project id");
    const Layout &l = c->cfg->layout;
    return redis(eval(kScriptReadProject, {l.project(pid), l.keys(pid)}, {}),
                 [render](const Reply &r) {
                     if (script_code(r) == kNoProject) return project_missing();
                     Fields keys = to_fields(script_item(r, 2));
                     return render(&keys);
                 });
}

Step projects_create(const CtxPtr &c, json &body) {
    if (auto e = check_fields(body, {{"id", Kind::String, false},
                                     {"name", Kind::String, true},
                                     {"tier", Kind::String, false},
                                     {"fallback", Kind::String, false}}))
        return *e;
    if (auto e = check_id_field(body, "id")) return *e;
    if (auto e = check_text(body, "name", 200, false)) return *e;
    if (auto e = check_tier_policy(body)) return *e;

    std::string pid = str_or(body, "id", "");
    if (pid.empty()) pid = new_id('p');
    std::string name = body["name"].get<std::string>();
    std::string tier = str_or(body, "tier", "free");
    std::string fallback = str_or(body, "fallback", "auto");
    const Layout &l = c->cfg->layout;
    auto argv = mutation(*c, kScriptProjectCreate, pid, {l.project(pid), l.projects()},
                         {name, tier, fallback});
    return redis(std::move(argv), [c, pid, name, tier, fallback](const Reply &r) {
        if (script_code(r) == kExists)
            return fail(409, "conflict", "a project with this id already exists");
        Fields f{{"name", name},
                 {"tier", tier},
                 {"fallback", fallback},
                 {"created_at", c->at},
                 {"updated_at", c->at}};
        return respond(201, project_json(pid, f));
    });
}

Step projects_list(const CtxPtr &c) {
    const Layout &l = c->cfg->layout;
    return redis({"SMEMBERS", l.projects()}, [c](const Reply &r) {
        std::vector<std::string> pids;
        for (const auto &e : r.elements)
            if (valid_id(e.str)) pids.push_back(e.str);
        std::sort(pids.begin(), pids.end());
        if (pids.empty()) return respond(200, json::array());
        std::vector<std::string> keys;
        for (const auto &pid : pids) keys.push_back(c->cfg->layout.project(pid));
        return redis(eval(kScriptMultiHgetall, std::move(keys), {}), [pids](const Reply &rr) {
            json out = json::array();
            for (size_t i = 0; i < pids.size() && i < rr.elements.size(); ++i) {
                Fields f = to_fields(rr.elements[i]);
                if (!f.empty()) out.push_back(project_json(pids[i], f));
            }
            return respond(200, out);
        });
    });
}

Step project_get(const CtxPtr &c, const std::string &pid) {
    const Layout &l = c->cfg->layout;
    return redis({"HGETALL", l.project(pid)}, [pid](const Reply &r) {
        Fields f = to_fields(r);
        if (f.empty()) return project_missing();
        return respond(200, project_json(pid, f));
    });
}

Step project_patch(const CtxPtr &c, const std::string &pid, json &body) {
    if (auto e = check_fields(body, {{"name", Kind::String, false},
                                     {"tier", Kind::String, false},
                                     {"fallback", Kind::String, false}}))
        return *e;
    if (!c->who.admin && (body.contains("tier") || body.contains("fallback")))
        return fail(403, "forbidden", "only an admin can change tier or fallback");
    if (auto e = check_text(body, "name", 200, false)) return *e;
    if (auto e = check_tier_policy(body)) return *e;
    std::vector<std::string> pairs;
    for (const char *k : {"name", "tier", "fallback"}) {
        if (!body.contains(k)) continue;
        pairs.push_back(k);
        pairs.push_back(body[k].get<std::string>());
    }
    const Layout &l = c->cfg->layout;
    auto argv = mutation(*c, kScriptProjectUpdate, pid, {l.project(pid)}, std::move(pairs));
    return redis(std::move(argv), [pid](const Reply &r) {
        if (script_code(r) == kNoProject) return project_missing();
        return respond(200, project_json(pid, to_fields(script_item(r, 1))));
    });
}

Step project_delete(const CtxPtr &c, const std::string &pid) {
    const Layout &l = c->cfg->layout;
    auto argv = mutation(
        *c, kScriptProjectDelete, pid,
        {l.project(pid), l.projects(), l.keys(pid), l.servers(pid), l.apikeys(pid)},
        {l.apikey(""), glob_escape(l.usage(pid, "")) + "*", glob_escape(l.meter(pid, "")) + "*"});
    return redis(std::move(argv), [pid](const Reply &r) {
        if (script_code(r) == kNoProject) return project_missing();
        return respond(200, json{{"id", pid}, {"deleted", true}});
    });
}

Step apikeys_create(const CtxPtr &c, const std::string &pid, json &body) {
    if (auto e = check_fields(body, {{"label", Kind::String, false}})) return *e;
    if (auto e = check_text(body, "label", 200, true)) return *e;
    std::string label = str_or(body, "label", "");

    // The key exists in clear only in this response; Redis sees its hash.
    auto key = std::make_shared<SecretString>("byok_" + base64url(random_bytes(32)));
    std::string sha = sha256_hex(key->view());
    std::string id = new_id('k');
    std::string prefix(key->view().substr(0, 12));
    json meta{{"prefix", prefix}, {"label", label}, {"created_at", c->at}, {"hash", sha}};
    const Layout &l = c->cfg->layout;
    auto argv = mutation(*c, kScriptApiKeyCreate, pid,
                         {l.project(pid), l.apikeys(pid), l.apikey(sha)}, {id, label, dump(meta)});
    return redis(std::move(argv), [c, key, id, prefix, label](const Reply &r) {
        long long code = script_code(r);
        if (code == kNoProject) return project_missing();
        if (code == kExists) return fail(409, "conflict", "id collision, retry the request");
        return respond(201, json{{"id", id},
                                 {"key", std::string(key->view())},
                                 {"prefix", prefix},
                                 {"label", label},
                                 {"created_at", c->at}});
    });
}

Step apikeys_list(const CtxPtr &c, const std::string &pid) {
    const Layout &l = c->cfg->layout;
    return redis(eval(kScriptReadProject, {l.project(pid), l.apikeys(pid)}, {}),
                 [](const Reply &r) {
                     if (script_code(r) == kNoProject) return project_missing();
                     json out = json::array();
                     for (const auto &[id, raw] : to_fields(script_item(r, 2))) {
                         json m = json::parse(raw, nullptr, false);
                         json e{{"id", id}};
                         if (!m.is_object()) {
                             e["error"] = "metadata is unreadable";
                             out.push_back(std::move(e));
                             continue;
                         }
                         for (const char *k : {"prefix", "label", "created_at"})
                             e[k] = m.value(k, "");
                         e["revoked"] = m.value("revoked", false);
                         if (m.contains("revoked_at")) e["revoked_at"] = m["revoked_at"];
                         out.push_back(std::move(e));
                     }
                     return respond(200, out);
                 });
}

Step apikey_revoke(const CtxPtr &c, const std::string &pid, const std::string &id) {
    const Layout &l = c->cfg->layout;
    auto argv = mutation(*c, kScriptApiKeyRevoke, pid, {l.project(pid), l.apikeys(pid)},
                         {id, l.apikey("")});
    return redis(std::move(argv), [id](const Reply &r) {
        long long code = script_code(r);
        if (code == kNoProject) return project_missing();
        if (code == kNotFound) return fail(404, "not_found", "no such gateway key");
        if (code == kMalformed)
            return fail(500, "internal_error", "gateway key metadata is unreadable");
        json m = json::parse(script_item(r, 1).str, nullptr, false);
        std::string revoked_at = m.is_object() ? m.value("revoked_at", "") : "";
        return respond(200, json{{"id", id}, {"revoked", true}, {"revoked_at", revoked_at}});
    });
}

// ---- audit --------------------------------------------------------------

namespace {

struct AuditScan {
    std::string project;  // "" = all
    size_t limit = 50;
    size_t scanned = 0;
    json out = json::array();
};

constexpr size_t kAuditPage = 1000;
constexpr size_t kAuditScanMax = 200000;

Step audit_page(const CtxPtr &c, std::shared_ptr<AuditScan> st, std::string end) {
    size_t count = st->project.empty() ? st->limit : kAuditPage;
    std::vector<std::string> argv{"XREVRANGE", c->cfg->layout.audit(), end, "-",
                                  "COUNT",     std::to_string(count)};
    return redis(std::move(argv), [c, st, count](const Reply &r) {
        std::string last;
        for (const auto &entry : r.elements) {
            if (entry.elements.size() != 2) continue;
            last = entry.elements[0].str;
            Fields f = to_fields(entry.elements[1]);
            auto get = [&](const char *k) {
                auto it = f.find(k);
                return it == f.end() ? std::string() : it->second;
            };
            if (!st->project.empty() && get("project") != st->project) continue;
            if (st->out.size() >= st->limit) break;
            st->out.push_back(json{{"id", last},
                                   {"at", get("at")},
                                   {"actor", get("actor")},
                                   {"action", get("action")},
                                   {"project", get("project")},
                                   {"target", get("target")}});
        }
        st->scanned += r.elements.size();
        bool more = !st->project.empty() && r.elements.size() == count && !last.empty() &&
                    st->out.size() < st->limit && st->scanned < kAuditScanMax;
        if (!more) return respond(200, st->out);
        return audit_page(c, st, "(" + last);
    });
}

}  // namespace

Step audit_list(const CtxPtr &c) {
    auto st = std::make_shared<AuditScan>();
    st->project = fetch_query(*c, "project");
    if (!c->who.admin) {
        if (st->project.empty())
            return fail(403, "forbidden", "a gateway key may only read its own project's audit");
        if (st->project != c->who.project) return project_missing();
    }
    if (!st->project.empty() && !valid_id(st->project))
        return fail(400, "invalid_id", "query parameter 'project' is not a valid project id");
    if (has_query(*c, "limit")) {
        std::string v = fetch_query(*c, "limit");
        bool digits = !v.empty() && v.size() <= 9 && std::all_of(v.begin(), v.end(), [](char ch) {
            return ch >= '0' && ch <= '9';
        });
        if (!digits || std::stoul(v) == 0)
            return fail(400, "invalid_value", "query parameter 'limit' must be a positive integer");
        st->limit = std::min<size_t>(std::stoul(v), 1000);
    }
    return audit_page(c, st, "+");
}

}  // namespace byok::admin::detail
