// The helpers shared by the admin handlers in admin_*.cpp (declared in
// admin_internal.h): responses, Redis steps, script replies, strict input.
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

std::vector<std::string> mutation(const Ctx &c, const std::string &script, std::string_view pid,
                                  std::vector<std::string> keys, std::vector<std::string> args) {
    keys.insert(keys.begin(), c.cfg->layout.audit());
    std::vector<std::string> all{c.who.actor, c.at, c.cfg->layout.invalidate_channel(),
                                 std::string(pid)};
    for (auto &a : args) all.push_back(std::move(a));
    return eval(script, std::move(keys), std::move(all));
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
