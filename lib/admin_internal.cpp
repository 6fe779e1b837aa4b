// The helpers shared by the admin handlers in admin_*.cpp (declared in
// admin_internal.h): responses, Redis steps, script replies, strict input.
#include <algorithm>
#include <ctime>

#include "lib/admin_internal.h"
#include "lib/project.h"

namespace byok::admin::detail {

// ---- responses ----------------------------------------------------------

std::string dump(const json &j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

Step respond(int status, const json &body) { return Step{Response{status, dump(body), {}}}; }

Step fail(int status, std::string_view code, std::string_view message) {
    return Step{Response{status, json_error(code, message, error_type(status)), {}}};
}

Step tier_refused() { return fail(403, "tier_required", std::string(kByokTierMessage)); }

Step project_not_found() { return fail(404, "project_not_found", "no such project"); }

static Step internal_error() { return fail(500, "internal_error", "internal error"); }

Step guarded(const std::function<Step()> &fn) {
    try {
        return fn();
    } catch (const std::exception &) {
        // Messages of lib/ errors are secret-free, but a 500 body says nothing
        // more than needed; the glue logs the status.
        return internal_error();
    } catch (...) {
        return internal_error();
    }
}

Step redis(std::vector<std::string> argv, std::function<Step(const Reply &)> next) {
    RedisCall call;
    call.argv = std::move(argv);
    call.next = [next = std::move(next)](const Reply &r) -> Step {
        if (r.type == Reply::Type::Unavailable)
            return fail(503, "redis_unavailable", "the key store is unavailable, retry later");
        if (r.type == Reply::Type::Error)
            return fail(500, "redis_error", "unexpected reply from the key store");
        return guarded([&] { return next(r); });
    };
    return Step{std::move(call)};
}

std::vector<std::string> eval(const std::string &script, std::vector<std::string> keys,
                              std::vector<std::string> args) {
    std::vector<std::string> argv{"EVAL", script, std::to_string(keys.size())};
    argv.reserve(3 + keys.size() + args.size());
    for (auto &k : keys) argv.push_back(std::move(k));
    for (auto &a : args) argv.push_back(std::move(a));
    return argv;
}

std::vector<std::string> mutation_argv(const Layout &l, const std::string &body,
                                       std::string_view pid, std::string_view actor,
                                       std::string_view at, std::string_view channel,
                                       std::vector<std::string> keys,
                                       std::vector<std::string> args) {
    keys.insert(keys.begin(), l.cluster() ? l.project_audit(pid) : l.audit());
    std::vector<std::string> all{std::string(actor), std::string(at), std::string(channel),
                                 std::string(pid)};
    for (auto &a : args) all.push_back(std::move(a));
    return eval(mutation_script(body, l.cluster()), std::move(keys), std::move(all));
}

std::vector<std::string> mutation(const Ctx &c, const std::string &script, std::string_view pid,
                                  std::vector<std::string> keys, std::vector<std::string> args) {
    const Layout &l = c.cfg->layout;
    return mutation_argv(l, script, pid, c.who.actor, c.at, l.invalidate_channel(), std::move(keys),
                         std::move(args));
}

std::vector<std::string> audit_fields(std::string_view actor, std::string_view action,
                                      std::string_view pid, std::string_view target,
                                      std::string_view at) {
    return {"actor",   std::string(actor), "action", std::string(action),
            "project", std::string(pid),   "target", std::string(target),
            "at",      std::string(at)};
}

std::vector<std::string> global_audit_copy(const Layout &l, std::vector<std::string> fields,
                                           std::string_view project_entry) {
    std::vector<std::string> argv{"XADD", l.audit(), "MAXLEN", "~", "100000", "*"};
    for (auto &f : fields) argv.push_back(std::move(f));
    if (!project_entry.empty()) {
        argv.push_back("project_entry");
        argv.push_back(std::string(project_entry));
    }
    return argv;
}

namespace {

using Commands = std::shared_ptr<std::vector<std::vector<std::string>>>;

// Sends cmds[i..] one after the other whatever they answer, then `done`.
Step best_effort(Commands cmds, size_t i, std::function<Step()> done) {
    if (i >= cmds->size()) return guarded(done);
    RedisCall call;
    call.argv = (*cmds)[i];
    call.next = [cmds, i, done](const Reply &) { return best_effort(cmds, i + 1, done); };
    return Step{std::move(call)};
}

}  // namespace

Step best_effort(std::vector<std::string> argv, std::function<Step()> done) {
    auto cmds = std::make_shared<std::vector<std::vector<std::string>>>();
    cmds->push_back(std::move(argv));
    return best_effort(cmds, 0, std::move(done));
}

namespace {

// The follow-ups of a cluster-mode script reply {reply, audited, pointers}.
Commands follow_ups(const Layout &l, std::string_view pid, const Reply &audited,
                    const Reply &pointers) {
    auto cmds = std::make_shared<std::vector<std::vector<std::string>>>();
    const auto &p = pointers.elements;
    for (size_t i = 0; i + 2 < p.size(); i += 3) {
        const std::string &hash = p[i + 1].str;
        bool hex = !hash.empty() && std::all_of(hash.begin(), hash.end(), [](char ch) {
            return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
        });
        if (!hex) continue;
        cmds->push_back(
            eval(kScriptPointer, {l.apikey(hash)}, {p[i].str, std::string(pid), p[i + 2].str}));
    }
    for (const auto &e : audited.elements) {
        if (e.elements.empty()) continue;
        std::vector<std::string> fields;
        for (size_t i = 1; i < e.elements.size(); ++i) fields.push_back(e.elements[i].str);
        cmds->push_back(global_audit_copy(l, std::move(fields), e.elements[0].str));
    }
    return cmds;
}

}  // namespace

Step mutate(const Ctx &c, std::string_view pid, std::vector<std::string> argv,
            std::function<Step(const Reply &)> next) {
    if (!c.cfg->layout.cluster()) return redis(std::move(argv), std::move(next));
    return redis(std::move(argv), [l = c.cfg->layout, pid = std::string(pid),
                                   next = std::move(next)](const Reply &r) {
        auto own = std::make_shared<Reply>(script_item(r, 0));
        Commands cmds = follow_ups(l, pid, script_item(r, 1), script_item(r, 2));
        return best_effort(cmds, 0, [own, next] { return next(*own); });
    });
}

namespace {

Step hgetall_each(std::shared_ptr<std::vector<std::string>> keys, size_t i,
                  std::shared_ptr<Reply> acc, std::function<Step(const Reply &)> next) {
    if (i >= keys->size()) return next(*acc);
    return redis({"HGETALL", (*keys)[i]}, [keys, i, acc, next](const Reply &r) {
        acc->elements.push_back(r);
        return hgetall_each(keys, i + 1, acc, next);
    });
}

}  // namespace

Step read_hashes(std::vector<std::string> keys, bool cluster,
                 std::function<Step(const Reply &)> next) {
    if (!cluster) return redis(eval(kScriptMultiHgetall, std::move(keys), {}), std::move(next));
    auto acc = std::make_shared<Reply>();
    acc->type = Reply::Type::Array;
    return hgetall_each(std::make_shared<std::vector<std::string>>(std::move(keys)), 0, acc,
                        std::move(next));
}

// ---- reply decoding -----------------------------------------------------

long long script_code(const Reply &r) {
    if (r.type != Reply::Type::Array || r.elements.empty() ||
        r.elements[0].type != Reply::Type::Integer)
        throw Error("unexpected script reply");
    return r.elements[0].integer;
}

const Reply &script_item(const Reply &r, size_t i) {
    if (r.type != Reply::Type::Array || i >= r.elements.size())
        throw Error("unexpected script reply");
    return r.elements[i];
}

// ---- strict JSON input --------------------------------------------------

static std::string_view kind_name(Kind k) {
    switch (k) {
        case Kind::String:
            return "a string";
        case Kind::Bool:
            return "a boolean";
        case Kind::Int:
            return "an integer";
        case Kind::Object:
            return "an object";
        case Kind::Array:
            return "an array";
    }
    return "a value";
}

static bool kind_matches(Kind k, const json &v) {
    switch (k) {
        case Kind::String:
            return v.is_string();
        case Kind::Bool:
            return v.is_boolean();
        case Kind::Int:
            return v.is_number_integer();
        case Kind::Object:
            return v.is_object();
        case Kind::Array:
            return v.is_array();
    }
    return false;
}

std::optional<Step> check_fields(const json &body, std::initializer_list<FieldSpec> spec) {
    for (const auto &item : body.items()) {
        bool known = false;
        for (const auto &f : spec) known = known || item.key() == f.name;
        if (!known) return fail(422, "unknown_field", "unknown field '" + item.key() + "'");
    }
    for (const auto &f : spec) {
        auto it = body.find(std::string(f.name));
        if (it == body.end()) {
            if (f.required)
                return fail(422, "missing_field",
                            "field '" + std::string(f.name) + "' is required");
            continue;
        }
        if (!kind_matches(f.kind, *it))
            return fail(
                400, "invalid_type",
                "field '" + std::string(f.name) + "' must be " + std::string(kind_name(f.kind)));
    }
    return std::nullopt;
}

std::optional<Step> check_text(const json &body, std::string_view name, size_t max_len,
                               bool allow_empty) {
    auto it = body.find(std::string(name));
    if (it == body.end()) return std::nullopt;
    const auto &s = it->get_ref<const std::string &>();
    if (s.size() > max_len)
        return fail(422, "invalid_value",
                    "field '" + std::string(name) + "' is longer than " + std::to_string(max_len) +
                        " bytes");
    if (!allow_empty && s.empty())
        return fail(422, "invalid_value", "field '" + std::string(name) + "' must not be empty");
    if (contains_control(s))
        return fail(422, "invalid_value",
                    "field '" + std::string(name) + "' contains control characters");
    return std::nullopt;
}

// ---- misc ---------------------------------------------------------------

std::string base64url(const Bytes &b) {
    std::string s = base64_encode(b);
    while (!s.empty() && s.back() == '=') s.pop_back();
    for (auto &ch : s) {
        if (ch == '+')
            ch = '-';
        else if (ch == '/')
            ch = '_';
    }
    return s;
}

std::string new_id(char first) {
    Bytes b = random_bytes(6);
    return std::string(1, first) + hex_encode(b.data(), b.size());
}

std::string fetch_query(const Ctx &c, std::string_view name) {
    auto it = c.query.find(name);
    return it == c.query.end() ? std::string() : it->second;
}

bool has_query(const Ctx &c, std::string_view name) { return c.query.count(name) > 0; }

}  // namespace byok::admin::detail
