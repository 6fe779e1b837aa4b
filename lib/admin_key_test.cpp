// Admin API: live tests of provider keys (one key, or each key of a
// provider) and the project's stats.
#include <algorithm>

#include "lib/key_admin.h"
#include "lib/layout.h"
#include "lib/project.h"
#include "lib/redact.h"
#include "lib/usage.h"

namespace byok::admin::detail {

namespace {

constexpr int64_t kExpiringWindowS = 7 * 86400;

std::string field_or(const Fields &f, const std::string &k) {
    auto it = f.find(k);
    return it == f.end() ? std::string() : it->second;
}

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

}  // namespace

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

std::string test_url(const Config &cfg, const Provider &p, const std::string &endpoint,
                     std::string *why) {
    if (p.test_path.empty()) {
        *why = "provider '" + p.id + "' has no live test";
        return "";
    }
    if (!p.per_key_endpoint) return p.openai_base.origin() + p.openai_base.path + p.test_path;
    std::string base;
    *why = endpoint.empty() ? "the key has no endpoint" : endpoint_problem(cfg, endpoint, &base);
    return why->empty() ? base + p.test_path : "";
}

Step run_key_test(const Provider &p, const std::string &url, std::shared_ptr<SecretString> key,
                  std::function<Step(const TestResult &)> next) {
    HttpCall call;
    call.method = p.test_method;
    call.url = url;
    call.headers = upstream_headers(p, key->view());
    call.check_resolved_address = p.per_key_endpoint;
    call.next = [key, next](const HttpResult &h) {
        return guarded([&] { return next(classify(h, key->view())); });
    };
    return Step{std::move(call)};
}

namespace {

// Runs `then` once `s` has finished, whatever it answered (a test result is
// reported even when storing it failed).
Step chain_after(Step s, std::function<Step()> then) {
    if (auto *rc = std::get_if<RedisCall>(&s.action)) {
        auto next = std::move(rc->next);
        rc->next = [next, then](const Reply &r) { return chain_after(next(r), then); };
        return s;
    }
    if (auto *hc = std::get_if<HttpCall>(&s.action)) {
        auto next = std::move(hc->next);
        hc->next = [next, then](const HttpResult &h) { return chain_after(next(h), then); };
        return s;
    }
    return then();
}

json result_json(const std::string &provider, const std::string &key_id, const TestResult &t) {
    return json{{"provider", provider},         {"key_id", key_id},     {"status", t.status},
                {"http_status", t.http_status}, {"message", t.message}, {"excerpt", t.excerpt},
                {"latency_ms", t.latency_ms}};
}

// Stores a result on the key (only while it still holds the ciphertext that
// was tested: a replaced key is not marked with the old key's result); a
// valid result ends an `invalid` health verdict.
Step store_result(const CtxPtr &c, const std::string &pid, const Provider &p,
                  const KeyRecord &tested, const TestResult &t, std::function<Step()> then) {
    auto out = std::make_shared<bool>(false);
    Step write = write_key_set(
        c, pid, p, false, "key.test", p.id + "/" + tested.id,
        [c, tested, t](const std::string *old) -> std::variant<SetWrite, Step> {
            SetWrite w;
            std::optional<std::vector<KeyRecord>> set;
            try {
                if (old) set = parse_key_set(*old);
            } catch (const Error &) {
            }
            auto it = !set ? std::vector<KeyRecord>::iterator()
                           : std::find_if(set->begin(), set->end(), [&](const KeyRecord &k) {
                                 return k.id == tested.id && k.sealed.ct == tested.sealed.ct;
                             });
            if (!set || it == set->end()) return Step{Response{200, "", {}}};  // nothing to store
            it->last_tested = c->at;
            it->test_status = t.status;
            it->test_message = t.message;
            if (t.status == "valid") w.clear_health = {tested.id};
            w.keys = std::move(*set);
            return w;
        });
    return chain_after(std::move(write), std::move(then));
}

}  // namespace

namespace {

struct TestRun {
    CtxPtr c;
    std::string pid;
    const Provider *p;
    std::vector<KeyRecord> targets;
    bool one;  // …/{key_id}/test: answer with that key's result only
    json results = json::array();
};

Step test_next(std::shared_ptr<TestRun> run, size_t i) {
    if (i == run->targets.size()) {
        if (run->one) return respond(200, run->results.front());
        json out = run->results.front();
        out["keys"] = run->results;
        return respond(200, out);
    }
    const KeyRecord &rec = run->targets[i];
    const Config &cfg = *run->c->cfg;
    std::string why;
    std::string url = test_url(cfg, *run->p, rec.endpoint, &why);
    if (url.empty()) return fail(422, "invalid_endpoint", why);
    auto record = [run, i](const TestResult &t) {
        const KeyRecord &k = run->targets[i];
        run->results.push_back(result_json(run->p->id, k.id, t));
        return store_result(run->c, run->pid, *run->p, k, t,
                            [run, i] { return test_next(run, i + 1); });
    };
    std::shared_ptr<SecretString> key;
    try {
        key = std::make_shared<SecretString>(
            open_sealed(*cfg.ring, rec.sealed, key_binding(run->pid, run->p->id, rec.endpoint)));
    } catch (const Error &) {
        return record(TestResult{"error", 0, "stored key does not decrypt", 0, ""});
    }
    return run_key_test(*run->p, url, key, record);
}

}  // namespace

Step key_test(const CtxPtr &c, const std::string &pid, const Provider &p, json &body,
              const std::string &key_id) {
    if (auto e = check_fields(body, {})) return *e;
    if (p.test_path.empty())
        return fail(422, "no_live_test", "provider '" + p.id + "' has no live test");
    const Layout &l = c->cfg->layout;
    const Provider *prov = &p;
    return redis(eval(kScriptReadProject, {l.project(pid), l.keys(pid)}, {}),
                 [c, pid, prov, key_id](const Reply &r) -> Step {
                     if (script_code(r) == kNoProject) return project_not_found();
                     Fields keys = to_fields(script_item(r, 2));
                     auto it = keys.find(prov->id);
                     if (it == keys.end()) return key_missing();
                     auto run = std::make_shared<TestRun>();
                     run->c = c;
                     run->pid = pid;
                     run->p = prov;
                     run->one = !key_id.empty();
                     try {
                         run->targets = parse_key_set(it->second);
                     } catch (const Error &) {
                         return respond(200, json{{"provider", prov->id},
                                                  {"status", "error"},
                                                  {"http_status", 0},
                                                  {"message", "stored record is malformed"},
                                                  {"latency_ms", 0}});
                     }
                     if (run->one) {
                         auto &t = run->targets;
                         t.erase(std::remove_if(t.begin(), t.end(),
                                                [&](const KeyRecord &k) { return k.id != key_id; }),
                                 t.end());
                         if (t.empty()) return key_id_missing();
                     }
                     return test_next(run, 0);
                 });
}

namespace {

// Provider keys and gateway keys whose expires_at falls within the next 7
// days (or has passed: an expired key is never used, and is listed until
// someone replaces it).
json expiring_keys(const Ctx &c, const Fields &records, const Fields &apikeys) {
    json out = json::array();
    auto consider = [&](json row, const std::string &expires_at) {
        auto at = parse_rfc3339(expires_at);
        if (!at || *at - c.now > kExpiringWindowS) return;
        row["expires_at"] = expires_at;
        row["expired"] = *at <= c.now;
        out.push_back(std::move(row));
    };
    for (const auto &[provider, raw] : records) {
        try {
            for (const auto &k : parse_key_set(raw))
                consider(json{{"kind", "provider_key"},
                              {"provider", provider},
                              {"key_id", k.id},
                              {"key_hint", k.key_hint},
                              {"label", k.label}},
                         k.expires_at);
        } catch (const Error &) {
        }
    }
    for (const auto &[id, raw] : apikeys) {
        json m = json::parse(raw, nullptr, false);
        if (!m.is_object() || !m.contains("expires_at") || !m["expires_at"].is_string()) continue;
        consider(json{{"kind", "gateway_key"}, {"id", id}, {"label", m.value("label", "")}},
                 m["expires_at"].get<std::string>());
    }
    return out;
}

}  // namespace

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
    std::vector<std::string> keys{l.project(pid), l.keys(pid), l.apikeys(pid)};
    for (int d = 0; d < days; ++d) keys.push_back(l.usage(pid, yyyymmdd_utc(c->now - d * 86400LL)));
    for (auto &k : meter_keys(*c, pid, 30)) keys.push_back(std::move(k));
    return redis(eval(kScriptReadProject, std::move(keys), {}), [c, days](const Reply &r) {
        if (script_code(r) == kNoProject) return project_not_found();
        Fields project = to_fields(script_item(r, 1));
        Fields records = to_fields(script_item(r, 2));
        size_t tested = 0, valid = 0;
        json expiring = expiring_keys(*c, records, to_fields(script_item(r, 3)));
        for (const auto &kv : records) {
            try {
                // A provider counts as tested / valid when one of its keys is.
                bool any_tested = false, any_valid = false;
                for (const auto &rec : parse_key_set(kv.second)) {
                    any_tested = any_tested || !rec.last_tested.empty();
                    any_valid = any_valid || rec.test_status == "valid";
                }
                tested += any_tested ? 1 : 0;
                valid += any_valid ? 1 : 0;
            } catch (const Error &) {
                // counted as configured only
            }
        }
        json usage = json::object();
        for (int d = 0; d < days; ++d) {
            for (const auto &[field, value] : to_fields(script_item(r, 4 + d))) {
                auto parsed = parse_usage_field(field);
                if (!parsed) continue;
                const auto &[provider, route] = *parsed;
                long long n = std::strtoll(value.c_str(), nullptr, 10);
                json &u = usage[provider];
                if (u.is_null()) u = json{{"byok", 0}, {"system", 0}, {"fallback", 0}};
                u[route] = u.value(route, 0LL) + n;
            }
        }
        std::vector<const Reply *> meter;
        for (size_t i = 4 + days; i < r.elements.size(); ++i) meter.push_back(&r.elements[i]);
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
                                 {"savings_30d", savings_30d},
                                 {"expiring_keys", expiring}});
    });
}

}  // namespace byok::admin::detail
