// Admin API: execution servers (SPEC §8) — the CRUD routes and their
// compare-and-set writes. At most one default per project (kept atomically
// by kScriptServerSet, which also maintains the project's `default_server`
// field). The record and its sealing: server_record.h; the field rules and
// PATCH merge: server_config.h; the connection test: server_test.cpp.
#include "lib/layout.h"
#include "lib/server_config.h"

namespace byok::admin::detail {

Step server_missing() { return fail(404, "server_not_found", "no such server"); }

namespace {

constexpr int kCasAttempts = 3;

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
        return mutate(*c, w->pid, set_argv(*c, w->pid, *rec, old, w->action, w->require_tier),
                      [c, w, attempt, rec](const Reply &wr) -> Step {
                          return script_outcome(
                              script_code(wr), *rec, [&] { return update(c, w, attempt + 1); },
                              attempt);
                      });
    });
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
    return mutate(*c, pid, set_argv(*c, pid, *rec, "", "server.create", true),
                  [rec](const Reply &r) {
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
    return mutate(*c, pid, std::move(argv), [sid](const Reply &r) {
        long long code = script_code(r);
        if (code == kNoProject) return project_not_found();
        if (code == kNotFound) return server_missing();
        bool was_default = script_item(r, 1).integer == 1;
        return respond(200, json{{"id", sid}, {"deleted", true}, {"was_default", was_default}});
    });
}

}  // namespace byok::admin::detail
