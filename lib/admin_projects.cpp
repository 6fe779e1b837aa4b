// Admin API: catalog listing, projects, gateway keys and the audit trail.
#include <algorithm>

#include "lib/admin_internal.h"
#include "lib/layout.h"
#include "lib/limits.h"
#include "lib/project.h"

namespace byok::admin::detail {

namespace {

json project_json(const std::string &pid, const Fields &f) {
    auto get = [&](const char *k) {
        auto it = f.find(k);
        return it == f.end() ? std::string() : it->second;
    };
    // limits: as stored by PATCH (serialize_limits), null when none.
    json limits = json::parse(get("limits"), nullptr, false);
    return json{{"id", pid},
                {"name", get("name")},
                {"tier", get("tier").empty() ? "free" : get("tier")},
                {"fallback", get("fallback").empty() ? "auto" : get("fallback")},
                {"fallback_on_rate_limit", get("fallback_on_rate_limit") != "false"},
                {"default_provider", get("default_provider")},
                {"limits", limits.is_object() ? limits : json(nullptr)},
                {"created_at", get("created_at")},
                {"updated_at", get("updated_at")}};
}

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

}  // namespace

Step providers_list(const CtxPtr &c) {
    auto render = [c](const Fields *configured) {
        json out = json::array();
        for (const auto &p : c->cfg->catalog->providers()) {
            json e{{"id", p.id},
                   {"name", p.name},
                   {"key_prefix", p.key_prefix},
                   {"auth", std::string(auth_style_name(p.auth))},
                   {"models", p.models},
                   {"enabled", p.enabled}};
            if (configured) e["configured"] = configured->count(p.id) > 0;
            out.push_back(std::move(e));
        }
        return respond(200, out);
    };
    if (!has_query(*c, "project")) return render(nullptr);
    std::string pid = fetch_query(*c, "project");
    if (!c->who.admin && pid != c->who.project) return project_not_found();
    if (!valid_id(pid))
        return fail(400, "invalid_id", "query parameter 'project' is not a valid project id");
    const Layout &l = c->cfg->layout;
    return redis(eval(kScriptReadProject, {l.project(pid), l.keys(pid)}, {}),
                 [render](const Reply &r) {
                     if (script_code(r) == kNoProject) return project_not_found();
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
    std::vector<std::string> keys{l.project(pid)};
    if (!l.cluster()) keys.push_back(l.projects());
    auto argv = mutation(*c, kScriptProjectCreate, pid, std::move(keys), {name, tier, fallback});
    auto create = [c, pid, name, tier, fallback, argv = std::move(argv)]() {
        return mutate(*c, pid, argv, [c, pid, name, tier, fallback](const Reply &r) {
            if (script_code(r) == kExists)
                return fail(409, "conflict", "a project with this id already exists");
            Fields f{{"name", name},
                     {"tier", tier},
                     {"fallback", fallback},
                     {"created_at", c->at},
                     {"updated_at", c->at}};
            return respond(201, project_json(pid, f));
        });
    };
    if (!l.cluster()) return create();
    // Cluster mode: the projects set is in another slot. The id goes in
    // first; an id whose project hash is missing is skipped by GET /projects.
    return redis({"SADD", l.projects(), pid}, [create](const Reply &) { return create(); });
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
        // An id whose hash is gone (a create or delete cut short) is skipped.
        return read_hashes(std::move(keys), c->cfg->layout.cluster(), [pids](const Reply &rr) {
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
        if (f.empty()) return project_not_found();
        return respond(200, project_json(pid, f));
    });
}

// `limits` of PATCH (admin only; issue 13): the whole set, replacing the
// stored one; null, {} or every limit null/0 removes them. → the value to
// store ("" = none), or the refusal.
std::optional<Step> patch_limits(const Ctx &c, json &body, std::optional<std::string> *out) {
    auto it = body.find("limits");
    if (it == body.end()) return std::nullopt;
    if (!c.who.admin) return fail(403, "forbidden", "only an admin can change limits");
    try {
        *out = it->is_null() ? "" : serialize_limits(parse_limits(it->dump()));
    } catch (const Error &e) {
        return fail(400, "invalid_limits", e.what());
    }
    body.erase(it);
    return std::nullopt;
}

Step project_patch(const CtxPtr &c, const std::string &pid, json &body) {
    std::optional<std::string> limits;
    if (auto e = patch_limits(*c, body, &limits)) return *e;
    if (auto e = check_fields(body, {{"name", Kind::String, false},
                                     {"tier", Kind::String, false},
                                     {"fallback", Kind::String, false},
                                     {"fallback_on_rate_limit", Kind::Bool, false},
                                     {"default_provider", Kind::String, false}}))
        return *e;
    if (auto d = body.find("default_provider"); d != body.end()) {
        const std::string &id = d->get_ref<const std::string &>();
        if (!id.empty() && (c->cfg->catalog == nullptr || c->cfg->catalog->find(id) == nullptr))
            return fail(422, "invalid_value",
                        "field 'default_provider' must be a catalog provider id or \"\"");
    }
    if (!c->who.admin && (body.contains("tier") || body.contains("fallback")))
        return fail(403, "forbidden", "only an admin can change tier or fallback");
    if (auto e = check_text(body, "name", 200, false)) return *e;
    if (auto e = check_tier_policy(body)) return *e;
    std::vector<std::string> pairs;
    for (const char *k : {"name", "tier", "fallback", "default_provider"}) {
        if (!body.contains(k)) continue;
        pairs.push_back(k);
        pairs.push_back(body[k].get<std::string>());
    }
    // A tenant's own choice: turning it off only ever spends less.
    if (body.contains("fallback_on_rate_limit")) {
        pairs.push_back("fallback_on_rate_limit");
        pairs.push_back(body["fallback_on_rate_limit"].get<bool>() ? "true" : "false");
    }
    if (limits) {
        pairs.push_back("limits");
        pairs.push_back(*limits);
    }
    const Layout &l = c->cfg->layout;
    auto argv = mutation(*c, kScriptProjectUpdate, pid, {l.project(pid)}, std::move(pairs));
    return mutate(*c, pid, std::move(argv), [pid](const Reply &r) {
        if (script_code(r) == kNoProject) return project_not_found();
        return respond(200, project_json(pid, to_fields(script_item(r, 1))));
    });
}

// The keys a project's deletion names besides its hash and its gateway-key
// metadata: its other hashes, and the usage and meter keys of each day they
// may still hold — written on day D (or a little earlier or later by a node
// with a skewed clock) and expiring after kUsageRetentionDays.
static std::vector<std::string> project_keys_to_delete(const Ctx &c, const std::string &pid) {
    const Layout &l = c.cfg->layout;
    std::vector<std::string> keys{l.keys(pid), l.servers(pid), l.key_health(pid), l.last_used(pid)};
    for (int d = -1; d <= kUsageRetentionDays + 1; ++d) {
        std::string day = yyyymmdd_utc(c.now - d * 86400LL);
        keys.push_back(l.usage(pid, day));
        keys.push_back(l.meter(pid, day));
    }
    return keys;
}

Step project_delete(const CtxPtr &c, const std::string &pid) {
    const Layout &l = c->cfg->layout;
    std::vector<std::string> keys{l.project(pid), l.apikeys(pid)};
    std::vector<std::string> more = project_keys_to_delete(*c, pid);
    std::string n = std::to_string(more.size());
    keys.insert(keys.end(), more.begin(), more.end());
    if (!l.cluster()) keys.push_back(l.projects());
    auto argv = mutation(*c, kScriptProjectDelete, pid, std::move(keys), {l.apikey(""), n});
    return mutate(*c, pid, std::move(argv), [c, pid](const Reply &r) {
        if (script_code(r) == kNoProject) return project_not_found();
        auto done = respond(200, json{{"id", pid}, {"deleted", true}});
        if (!c->cfg->layout.cluster()) return done;
        // Cluster mode: the projects set is in another slot; until this runs
        // GET /projects skips the id (its hash is gone).
        return best_effort({"SREM", c->cfg->layout.projects(), pid}, [done] { return done; });
    });
}

// Minting and revoking gateway keys needs the admin token or a gateway key
// with the manage_keys scope: a leaked ordinary key cannot mint itself
// successors or revoke its siblings.
std::optional<Step> key_management_refused(const Ctx &c) {
    if (c.who.admin || c.who.has_scope(kScopeManageKeys)) return std::nullopt;
    return fail(403, "scope_required",
                "managing gateway keys needs the admin token or a gateway key with the "
                "'manage_keys' scope");
}

Step apikeys_create(const CtxPtr &c, const std::string &pid, json &body) {
    if (auto e = key_management_refused(*c)) return *e;
    if (auto e = check_fields(body, {{"label", Kind::String, false},
                                     {"scopes", Kind::Array, false},
                                     {"expires_at", Kind::String, false}}))
        return *e;
    std::string expires_at = str_or(body, "expires_at", "");
    if (!expires_at.empty() && !parse_rfc3339(expires_at))
        return fail(422, "invalid_value", "field 'expires_at' must be an RFC 3339 date-time");
    if (auto e = check_text(body, "label", 200, true)) return *e;
    std::string label = str_or(body, "label", "");
    json scopes = json::array();
    for (const auto &sc : body.value("scopes", json::array())) {
        if (!sc.is_string() || sc.get_ref<const std::string &>() != kScopeManageKeys)
            return fail(422, "invalid_value", "field 'scopes' may only hold 'manage_keys'");
        if (scopes.empty()) scopes.push_back(sc);
    }
    // Keys minted by a key record it: revoking the parent revokes them too.
    std::string parent = c->who.admin ? std::string() : c->who.key_id;

    // The key exists in clear only in this response; Redis sees its hash.
    auto key = std::make_shared<SecretString>("byok_" + base64url(random_bytes(32)));
    std::string sha = sha256_hex(key->view());
    std::string id = new_id('k');
    std::string prefix(key->view().substr(0, 12));
    json meta{{"prefix", prefix}, {"label", label}, {"created_at", c->at}, {"hash", sha}};
    if (!scopes.empty()) meta["scopes"] = scopes;
    if (!parent.empty()) meta["parent"] = parent;
    if (!expires_at.empty()) meta["expires_at"] = expires_at;
    const Layout &l = c->cfg->layout;
    std::vector<std::string> keys{l.project(pid), l.apikeys(pid)};
    if (!l.cluster()) keys.push_back(l.apikey(sha));
    std::vector<std::string> args{
        id, label, dump(meta), scopes.empty() ? "" : kScopeManageKeys, parent, expires_at};
    auto argv = mutation(*c, kScriptApiKeyCreate, pid, std::move(keys), args);
    auto answer = [c, key, id, prefix, label, scopes, parent, expires_at](long long code) {
        if (code == kNoProject) return project_not_found();
        if (code == kExists) return fail(409, "conflict", "id collision, retry the request");
        if (code == kConflict)
            return fail(409, "parent_revoked", "the gateway key used was revoked meanwhile");
        json out{{"id", id},         {"key", std::string(key->view())},
                 {"prefix", prefix}, {"label", label},
                 {"scopes", scopes}, {"created_at", c->at}};
        if (!parent.empty()) out["parent"] = parent;
        out["expires_at"] = expires_at.empty() ? json(nullptr) : json(expires_at);
        return respond(201, out);
    };
    if (!l.cluster())
        return mutate(*c, pid, std::move(argv),
                      [answer](const Reply &r) { return answer(script_code(r)); });
    // Cluster mode: the key's own hash is in another slot. It is written
    // first and authenticates nothing until the project's script has written
    // the metadata; a refused mint removes it again (else it stays inert).
    std::vector<std::string> pointer_args{c->who.actor, c->at, "", pid};
    pointer_args.insert(pointer_args.end(), args.begin(), args.end());
    auto pointer = eval(kScriptPointerCreate, {l.apikey(sha)}, std::move(pointer_args));
    return redis(
        std::move(pointer), [c, pid, sha, answer, argv = std::move(argv)](const Reply &pr) -> Step {
            if (script_code(pr) == kExists) return answer(kExists);
            return mutate(*c, pid, argv, [c, pid, sha, answer](const Reply &r) {
                long long code = script_code(r);
                if (code == kCreated) return answer(code);
                auto drop = eval(kScriptPointer, {c->cfg->layout.apikey(sha)}, {"drop", pid, ""});
                return best_effort(std::move(drop), [answer, code] { return answer(code); });
            });
        });
}

Step apikeys_list(const CtxPtr &c, const std::string &pid) {
    const Layout &l = c->cfg->layout;
    return redis(eval(kScriptReadProject, {l.project(pid), l.apikeys(pid)}, {}),
                 [](const Reply &r) {
                     if (script_code(r) == kNoProject) return project_not_found();
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
                         e["expires_at"] = m.value("expires_at", json(nullptr));
                         // Lua's cjson writes an empty array as {}.
                         auto sc = m.find("scopes");
                         e["scopes"] = sc != m.end() && sc->is_array() ? *sc : json::array();
                         if (m.contains("parent")) e["parent"] = m["parent"];
                         e["revoked"] = m.value("revoked", false);
                         if (m.contains("revoked_at")) e["revoked_at"] = m["revoked_at"];
                         out.push_back(std::move(e));
                     }
                     return respond(200, out);
                 });
}

Step apikey_revoke(const CtxPtr &c, const std::string &pid, const std::string &id) {
    if (auto e = key_management_refused(*c)) return *e;
    const Layout &l = c->cfg->layout;
    auto argv = mutation(*c, kScriptApiKeyRevoke, pid, {l.project(pid), l.apikeys(pid)},
                         {id, l.apikey("")});
    return mutate(*c, pid, std::move(argv), [id](const Reply &r) {
        long long code = script_code(r);
        if (code == kNoProject) return project_not_found();
        if (code == kNotFound) return fail(404, "not_found", "no such gateway key");
        if (code == kMalformed)
            return fail(500, "internal_error", "gateway key metadata is unreadable");
        json m = json::parse(script_item(r, 1).str, nullptr, false);
        std::string revoked_at = m.is_object() ? m.value("revoked_at", "") : "";
        json also = json::array();
        for (size_t i = 2; i < r.elements.size(); i++) also.push_back(r.elements[i].str);
        return respond(
            200,
            json{
                {"id", id}, {"revoked", true}, {"revoked_at", revoked_at}, {"also_revoked", also}});
    });
}

// ---- audit --------------------------------------------------------------

// A project's entries come from its own stream (Layout::project_audit):
// reading them costs O(limit) however busy the other projects are.
Step audit_list(const CtxPtr &c) {
    std::string project = fetch_query(*c, "project");
    if (!c->who.admin) {
        if (project.empty())
            return fail(403, "forbidden", "a gateway key may only read its own project's audit");
        if (project != c->who.project) return project_not_found();
    }
    if (!project.empty() && !valid_id(project))
        return fail(400, "invalid_id", "query parameter 'project' is not a valid project id");
    size_t limit = 50;
    if (has_query(*c, "limit")) {
        std::string v = fetch_query(*c, "limit");
        bool digits = !v.empty() && v.size() <= 9 && std::all_of(v.begin(), v.end(), [](char ch) {
            return ch >= '0' && ch <= '9';
        });
        if (!digits || std::stoul(v) == 0)
            return fail(400, "invalid_value", "query parameter 'limit' must be a positive integer");
        limit = std::min<size_t>(std::stoul(v), 1000);
    }
    const Layout &l = c->cfg->layout;
    std::string stream = project.empty() ? l.audit() : l.project_audit(project);
    std::vector<std::string> argv{"XREVRANGE", stream, "+", "-", "COUNT", std::to_string(limit)};
    return redis(std::move(argv), [project](const Reply &r) {
        json out = json::array();
        for (const auto &entry : r.elements) {
            if (entry.elements.size() != 2) continue;
            Fields f = to_fields(entry.elements[1]);
            auto get = [&](const char *k) {
                auto it = f.find(k);
                return it == f.end() ? std::string() : it->second;
            };
            // The project stream holds only its project; the check guards it.
            if (!project.empty() && get("project") != project) continue;
            out.push_back(json{{"id", entry.elements[0].str},
                               {"at", get("at")},
                               {"actor", get("actor")},
                               {"action", get("action")},
                               {"project", get("project")},
                               {"target", get("target")}});
        }
        return respond(200, out);
    });
}

}  // namespace byok::admin::detail
