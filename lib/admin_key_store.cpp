// Storage of the provider-key sets (issue 14): the compare-and-set write of
// one provider's set, the read of a project's keys with their health and
// last use, and the masked view.
#include "lib/key_admin.h"
#include "lib/key_health.h"
#include "lib/layout.h"
#include "lib/project.h"

namespace byok::admin::detail {

namespace {

constexpr int kCasAttempts = 3;

bool tier_allows_byok(const Fields &project) {
    auto it = project.find("tier");
    auto t = parse_tier(it == project.end() ? std::string() : it->second);
    return t && byok_allowed(*t);
}

// A hash of a script reply that may be absent (a reply of fewer items).
Fields fields_at(const Reply &r, size_t i) {
    return i < r.elements.size() ? to_fields(r.elements[i]) : Fields{};
}

struct CasWrite {
    std::string pid;
    const Provider *provider;
    bool require_tier;
    std::string action, target;
    SetBuilder build;
};

Step cas_write(const CtxPtr &c, std::shared_ptr<const CasWrite> w, int attempt) {
    const Layout &l = c->cfg->layout;
    auto read = eval(kScriptReadProject, {l.project(w->pid), l.keys(w->pid)}, {});
    return redis(std::move(read), [c, w, attempt](const Reply &r) -> Step {
        if (script_code(r) == kNoProject) return project_not_found();
        if (w->require_tier && !tier_allows_byok(to_fields(script_item(r, 1))))
            return tier_refused();
        Fields keys = to_fields(script_item(r, 2));
        auto it = keys.find(w->provider->id);
        const std::string *old = it == keys.end() ? nullptr : &it->second;
        auto built = w->build(old);
        if (auto *s = std::get_if<Step>(&built)) return std::move(*s);
        auto out = std::make_shared<SetWrite>(std::move(std::get<SetWrite>(built)));

        const Layout &lay = c->cfg->layout;
        std::vector<std::string> args{w->provider->id,
                                      old ? *old : std::string(),
                                      out->keys.empty() ? "" : serialize_key_set(out->keys),
                                      w->require_tier ? "1" : "0",
                                      w->action,
                                      w->target};
        for (const auto &id : out->clear_health) args.push_back(id);
        auto argv = mutation(*c, kScriptKeySet, w->pid,
                             {lay.project(w->pid), lay.keys(w->pid), lay.key_health(w->pid)},
                             std::move(args));
        return mutate(*c, w->pid, std::move(argv), [c, w, attempt, out](const Reply &wr) -> Step {
            long long code = script_code(wr);
            if (code == kNoProject) return project_not_found();
            if (code == kTier) return tier_refused();
            if (code == kConflict) {
                if (attempt + 1 >= kCasAttempts)
                    return fail(409, "conflict", "the key was changed concurrently, retry");
                return cas_write(c, w, attempt + 1);
            }
            return respond(out->status, out->answer);
        });
    });
}

}  // namespace

Step read_keys(const CtxPtr &c, const std::string &pid,
               std::function<Step(const Fields &records, const KeyExtras &)> next) {
    const Layout &l = c->cfg->layout;
    return redis(eval(kScriptReadProject,
                      {l.project(pid), l.keys(pid), l.key_health(pid), l.last_used(pid)}, {}),
                 [c, next](const Reply &r) -> Step {
                     if (script_code(r) == kNoProject) return project_not_found();
                     KeyExtras x;
                     x.health = fields_at(r, 3);
                     x.last_used = fields_at(r, 4);
                     x.now_ms = c->now * 1000;
                     return next(to_fields(script_item(r, 2)), x);
                 });
}

Step write_key_set(const CtxPtr &c, const std::string &pid, const Provider &p, bool require_tier,
                   std::string action, std::string target, SetBuilder build) {
    auto w = std::make_shared<CasWrite>();
    w->pid = pid;
    w->provider = &p;
    w->require_tier = require_tier;
    w->action = std::move(action);
    w->target = std::move(target);
    w->build = std::move(build);
    return cas_write(c, std::move(w), 0);
}

json key_view(const std::string &provider, const std::string &provider_name, const KeyRecord &r,
              const KeyExtras *x) {
    json v{{"provider", provider},
           {"provider_name", provider_name},
           {"key_id", r.id},
           {"key_hint", r.key_hint},
           {"label", r.label},
           {"endpoint", r.endpoint},
           {"is_active", r.is_active},
           {"weight", r.weight},
           {"expires_at", r.expires_at.empty() ? json(nullptr) : json(r.expires_at)},
           {"created_at", r.created_at},
           {"updated_at", r.updated_at},
           {"last_tested", r.last_tested},
           {"test_status", r.test_status.empty() ? "untested" : r.test_status},
           {"health", "healthy"},
           {"health_until", nullptr},
           {"last_used_at", nullptr}};
    if (x == nullptr) return v;
    if (auto it = x->health.find(r.id); it != x->health.end()) {
        if (auto h = decode_health(it->second)) {
            HealthState s = effective_state(*h, x->now_ms);
            v["health"] = health_name(s);
            if (s != HealthState::Healthy && s != HealthState::Invalid)
                v["health_until"] = iso8601_utc(h->until_ms / 1000);
        }
    }
    if (auto it = x->last_used.find(r.id); it != x->last_used.end()) {
        int64_t at = std::strtoll(it->second.c_str(), nullptr, 10);
        if (at > 0) v["last_used_at"] = iso8601_utc(at);
    }
    return v;
}

}  // namespace byok::admin::detail
