// Admin API: provider keys — several per provider (issue 14), each with an
// id, label, weight, is_active and expires_at. The provider's keys are one
// set in one field of byok:{<pid>}:keys (lib/record.h), so every write is a
// compare-and-set of that field: atomic, audited, invalidating every node.
// The single-key routes act on the set (PUT replaces all with one).
#include <algorithm>

#include "lib/endpoint_policy.h"
#include "lib/key_admin.h"
#include "lib/key_health.h"
#include "lib/layout.h"
#include "lib/project.h"

namespace byok::admin::detail {

Step key_missing() { return fail(404, "key_not_found", "no key stored for this provider"); }
Step key_id_missing() {
    return fail(404, "key_not_found", "no key with this id for this provider");
}

namespace {

// A stored set, or nullopt when it does not parse.
std::optional<std::vector<KeyRecord>> read_set(const std::string &raw) {
    try {
        return parse_key_set(raw);
    } catch (const Error &) {
        return std::nullopt;
    }
}

Step malformed_set() {
    return fail(409, "malformed_record",
                "the stored record is malformed; replace the key with PUT");
}

json malformed_row(const std::string &provider, const std::string &name) {
    return json{
        {"provider", provider}, {"provider_name", name}, {"error", "stored record is malformed"}};
}

// Endpoint field rules shared by PUT, POST and PATCH; fills `normalized`.
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

// The fields of a key write, checked. `key` is in wiped memory; the parser's
// copy is scrubbed.
struct KeyInput {
    std::shared_ptr<SecretString> key;
    std::optional<std::string> label, endpoint, expires_at;
    std::optional<bool> active;
    std::optional<int> weight;
    bool test = false;
};

std::variant<KeyInput, Step> read_input(const Ctx &c, const Provider &p, json &body,
                                        bool key_required, bool allow_test) {
    KeyInput in;
    auto spec = {
        FieldSpec{"key", Kind::String, key_required}, FieldSpec{"label", Kind::String, false},
        FieldSpec{"endpoint", Kind::String, false},   FieldSpec{"is_active", Kind::Bool, false},
        FieldSpec{"weight", Kind::Int, false},        FieldSpec{"expires_at", Kind::String, false},
        FieldSpec{"test", Kind::Bool, false}};
    // check_fields names unknown fields; "test" only where a key is stored.
    if (!allow_test && body.contains("test"))
        return fail(422, "unknown_field", "unknown field 'test'");
    if (auto e = check_fields(body, spec)) {
        if (auto it = body.find("key"); it != body.end() && it->is_string()) {
            std::string &raw = it->get_ref<std::string &>();
            wipe(raw.data(), raw.size());
        }
        return *e;
    }
    if (auto it = body.find("key"); it != body.end()) {
        std::string &raw = it->get_ref<std::string &>();
        in.key = std::make_shared<SecretString>(raw);
        wipe(raw.data(), raw.size());
        raw.clear();
        try {
            check_key_format(p, in.key->view());
        } catch (const Error &e) {
            return fail(422, "invalid_key_format", e.what());
        }
    }
    if (auto e = check_text(body, "label", 200, true)) return *e;
    std::string endpoint;
    if (auto e = check_endpoint_field(*c.cfg, p, body, &endpoint)) return *e;
    if (body.contains("label")) in.label = body["label"].get<std::string>();
    if (body.contains("endpoint")) in.endpoint = endpoint;
    if (body.contains("is_active")) in.active = body["is_active"].get<bool>();
    if (body.contains("weight")) {
        int64_t w = body["weight"].get<int64_t>();
        if (w < 1 || w > 100) return fail(422, "invalid_value", "field 'weight' must be 1..100");
        in.weight = static_cast<int>(w);
    }
    if (body.contains("expires_at")) {
        std::string e = body["expires_at"].get<std::string>();
        if (!e.empty() && !parse_rfc3339(e))
            return fail(422, "invalid_value",
                        "field 'expires_at' must be an RFC 3339 date-time, e.g. "
                        "2027-01-31T00:00:00Z");
        in.expires_at = e;
    }
    in.test = body.value("test", false) || fetch_query(c, "test") == "true";
    return in;
}

// A new record holding `in.key`, sealed for `endpoint`.
KeyRecord fresh_record(const Ctx &c, const std::string &pid, const Provider &p, const KeyInput &in,
                       const std::string &endpoint) {
    KeyRecord r;
    r.id = new_key_id();
    r.sealed = seal(*c.cfg->ring, in.key->view(), key_binding(pid, p.id, endpoint));
    r.key_hint = key_hint(p, in.key->view());
    r.endpoint = endpoint;
    r.label = in.label.value_or("");
    r.is_active = in.active.value_or(true);
    r.weight = in.weight.value_or(1);
    r.expires_at = in.expires_at.value_or("");
    r.created_at = r.updated_at = c.at;
    r.test_status = "untested";
    return r;
}

void apply_test(KeyRecord &r, const Ctx &c, const TestResult &t) {
    r.last_tested = c.at;
    r.test_status = t.status;
    r.test_message = t.message;
}

// With `test`, runs the live test on the plaintext before anything is
// stored: an invalid key is refused with 422 key_invalid (the provider's
// status, no secret). Then `store` with the result (nullptr: not tested).
Step maybe_test_first(const CtxPtr &c, const Provider &p, const KeyInput &in,
                      const std::string &endpoint, std::function<Step(const TestResult *)> store) {
    if (!in.test) {
        in.key->clear();
        return store(nullptr);
    }
    std::string why;
    std::string url = test_url(*c->cfg, p, endpoint, &why);
    if (url.empty()) return fail(422, "no_live_test", why);
    return run_key_test(p, url, in.key, [store, key = in.key](const TestResult &t) -> Step {
        key->clear();
        if (t.status == "invalid") {
            return respond(422,
                           json{{"error",
                                 {{"code", "key_invalid"},
                                  {"message", "the provider refused the key; it was not stored"},
                                  {"http_status", t.http_status},
                                  {"excerpt", t.excerpt}}}});
        }
        return store(&t);
    });
}

std::string endpoint_for(const Provider &p, const KeyInput &in) { return in.endpoint.value_or(""); }

std::optional<Step> endpoint_required(const Provider &p, const std::string &endpoint) {
    if (p.per_key_endpoint && endpoint.empty())
        return fail(422, "missing_field", "field 'endpoint' is required for this provider");
    return std::nullopt;
}

std::vector<std::string> ids_of(const std::vector<KeyRecord> &keys) {
    std::vector<std::string> ids;
    for (const auto &k : keys) ids.push_back(k.id);
    return ids;
}

// Applies a metadata/key change to one record; a Step on refusal.
std::optional<Step> change_record(KeyRecord &rec, const KeyInput &in, const Ctx &c,
                                  const std::string &pid, const Provider &p) {
    bool retarget = in.endpoint && *in.endpoint != rec.endpoint;
    if (retarget && !in.key && !c.who.admin)
        return fail(409, "secret_required",
                    "changing 'endpoint' changes where the stored key is sent: supply 'key' "
                    "again in the same request, or use an admin token");
    std::string target = in.endpoint.value_or(rec.endpoint);
    const KeyRing &ring = *c.cfg->ring;
    if (in.key) {
        rec.sealed = seal(ring, in.key->view(), key_binding(pid, p.id, target));
        rec.key_hint = key_hint(p, in.key->view());
    } else if (retarget) {
        try {
            SecretString plain =
                open_sealed(ring, rec.sealed, key_binding(pid, p.id, rec.endpoint));
            rec.sealed = seal(ring, plain.view(), key_binding(pid, p.id, target));
        } catch (const Error &) {
            return fail(409, "key_unreadable",
                        "the stored key does not decrypt; replace it with PUT");
        }
    }
    if (in.key || retarget) {  // test results belong to the old key or target
        rec.last_tested.clear();
        rec.test_status = "untested";
        rec.test_message.clear();
    }
    rec.endpoint = target;
    if (in.label) rec.label = *in.label;
    if (in.active) rec.is_active = *in.active;
    if (in.weight) rec.weight = *in.weight;
    if (in.expires_at) rec.expires_at = *in.expires_at;
    rec.updated_at = c.at;
    return std::nullopt;
}

}  // namespace

json masked_key(const Provider &p, const KeyRecord &r) {
    return key_view(p.id, p.name, r, nullptr);
}

// GET …/keys/{provider}: the provider's keys; the first one's fields at the
// top level too, as the single-key route answered before.
Step key_get(const CtxPtr &c, const std::string &pid, const Provider &p) {
    return read_keys(c, pid, [&p](const Fields &f, const KeyExtras &x) {
        auto it = f.find(p.id);
        if (it == f.end()) return key_missing();
        auto set = read_set(it->second);
        if (!set) return respond(200, malformed_row(p.id, p.name));
        json out = key_view(p.id, p.name, set->front(), &x);
        json rows = json::array();
        for (const auto &k : *set) rows.push_back(key_view(p.id, p.name, k, &x));
        out["keys"] = rows;
        return respond(200, out);
    });
}

// GET …/keys: one row per key, with its provider.
Step keys_list(const CtxPtr &c, const std::string &pid) {
    return read_keys(c, pid, [c](const Fields &f, const KeyExtras &x) {
        json out = json::array();
        for (const auto &[provider, raw] : f) {
            const Provider *p = c->cfg->catalog->find(provider);
            std::string name = p ? p->name : provider;
            auto set = read_set(raw);
            if (!set) {
                out.push_back(malformed_row(provider, name));
                continue;
            }
            for (const auto &k : *set) out.push_back(key_view(provider, name, k, &x));
        }
        return respond(200, out);
    });
}

// The body of PUT and POST …/keys/{provider}: the validated input, the
// endpoint it resolves to, and the record a new key starts from.
struct NewKey {
    KeyInput in;
    std::string endpoint;
    KeyRecord record;
};

std::variant<NewKey, Step> read_new_key(const Ctx &c, const std::string &pid, const Provider &p,
                                        json &body) {
    auto read = read_input(c, p, body, true, true);
    if (auto *e = std::get_if<Step>(&read)) return std::move(*e);
    NewKey k{std::move(std::get<KeyInput>(read)), {}, {}};
    k.endpoint = endpoint_for(p, k.in);
    if (auto e = endpoint_required(p, k.endpoint)) return *e;
    k.record = fresh_record(c, pid, p, k.in, k.endpoint);
    return k;
}

// PUT …/keys/{provider}: replaces all the provider's keys with this one. A
// replaced single key keeps created_at (and its label, is_active, weight and
// expires_at when none is given: a deliberately disabled key is not silently
// re-enabled); test results belong to the old key and are dropped.
Step key_put(const CtxPtr &c, const std::string &pid, const Provider &p, json &body) {
    auto read = read_new_key(*c, pid, p, body);
    if (auto *e = std::get_if<Step>(&read)) return std::move(*e);
    auto &[in, endpoint, tmpl] = std::get<NewKey>(read);
    const Provider *prov = &p;
    return maybe_test_first(
        c, p, in, endpoint, [c, pid, prov, tmpl = tmpl, in = in](const TestResult *t) {
            KeyRecord base = tmpl;
            if (t) apply_test(base, *c, *t);
            return write_key_set(
                c, pid, *prov, true, "key.put", prov->id,
                [base, in, prov](const std::string *old) -> std::variant<SetWrite, Step> {
                    KeyRecord rec = base;
                    SetWrite out;
                    auto prev = old ? read_set(*old) : std::nullopt;
                    if (prev && prev->size() == 1) {
                        const KeyRecord &o = prev->front();
                        rec.created_at = o.created_at;
                        if (!in.label) rec.label = o.label;
                        if (!in.active) rec.is_active = o.is_active;
                        if (!in.weight) rec.weight = o.weight;
                        if (!in.expires_at) rec.expires_at = o.expires_at;
                    }
                    if (prev) out.clear_health = ids_of(*prev);
                    out.keys = {rec};
                    out.status = old ? 200 : 201;
                    out.answer = key_view(prov->id, prov->name, rec, nullptr);
                    return out;
                });
        });
}

// POST …/keys/{provider}: adds one key to the set → 201 with key_id.
Step key_add(const CtxPtr &c, const std::string &pid, const Provider &p, json &body) {
    auto read = read_new_key(*c, pid, p, body);
    if (auto *e = std::get_if<Step>(&read)) return std::move(*e);
    auto &[in, endpoint, tmpl] = std::get<NewKey>(read);
    const Provider *prov = &p;
    return maybe_test_first(c, p, in, endpoint, [c, pid, prov, tmpl = tmpl](const TestResult *t) {
        KeyRecord rec = tmpl;
        if (t) apply_test(rec, *c, *t);
        return write_key_set(c, pid, *prov, true, "key.add", prov->id + "/" + rec.id,
                             [rec, prov](const std::string *old) -> std::variant<SetWrite, Step> {
                                 SetWrite out;
                                 if (old) {
                                     auto prev = read_set(*old);
                                     if (!prev) return malformed_set();
                                     out.keys = std::move(*prev);
                                 }
                                 if (out.keys.size() >= kMaxKeysPerProvider)
                                     return fail(
                                         409, "too_many_keys",
                                         "a provider holds at most 16 keys; delete one first");
                                 out.keys.push_back(rec);
                                 out.status = 201;
                                 out.answer = key_view(prov->id, prov->name, rec, nullptr);
                                 return out;
                             });
    });
}

// PATCH …/keys/{provider}[/{key_id}]: metadata of one key, or of every key
// of the provider. Changing `endpoint` changes where the stored key is sent,
// so it needs the key again in the same request (`key`) or an admin token
// (SPEC §10); the key is then re-sealed bound to the new endpoint. `key`
// and `endpoint` on the whole set need a set of one.
Step key_patch(const CtxPtr &c, const std::string &pid, const Provider &p, json &body,
               const std::string &key_id) {
    auto read = read_input(*c, p, body, false, false);
    if (auto *e = std::get_if<Step>(&read)) return std::move(*e);
    auto in = std::make_shared<KeyInput>(std::move(std::get<KeyInput>(read)));
    const Provider *prov = &p;
    std::string target = key_id.empty() ? p.id : p.id + "/" + key_id;
    // A new key is a key write, as PUT.
    return write_key_set(
        c, pid, p, in->key != nullptr, "key.patch", target,
        [c, pid, prov, in, key_id](const std::string *old) -> std::variant<SetWrite, Step> {
            if (!old) return key_missing();
            auto set = read_set(*old);
            if (!set) return malformed_set();
            if (key_id.empty() && set->size() > 1 && (in->key || in->endpoint))
                return fail(409, "ambiguous",
                            "the provider holds several keys: change 'key' or 'endpoint' with "
                            "PATCH …/keys/{provider}/{key_id}");
            SetWrite out;
            bool found = false;
            for (auto &rec : *set) {
                if (!key_id.empty() && rec.id != key_id) continue;
                found = true;
                if (auto e = change_record(rec, *in, *c, pid, *prov)) return *e;
                if (in->key) out.clear_health.push_back(rec.id);
                out.answer = key_view(prov->id, prov->name, rec, nullptr);
            }
            if (!found) return key_id_missing();
            out.keys = std::move(*set);
            return out;
        });
}

// DELETE …/keys/{provider}[/{key_id}].
Step key_delete(const CtxPtr &c, const std::string &pid, const Provider &p,
                const std::string &key_id) {
    const Provider *prov = &p;
    std::string target = key_id.empty() ? p.id : p.id + "/" + key_id;
    return write_key_set(c, pid, p, false, "key.delete", target,
                         [prov, key_id](const std::string *old) -> std::variant<SetWrite, Step> {
                             if (!old) return key_missing();
                             SetWrite out;
                             out.answer = json{{"provider", prov->id}, {"deleted", true}};
                             auto set = read_set(*old);
                             if (key_id.empty()) {  // all of them, readable or not
                                 if (set) out.clear_health = ids_of(*set);
                                 return out;
                             }
                             if (!set) return malformed_set();
                             auto it =
                                 std::find_if(set->begin(), set->end(),
                                              [&](const KeyRecord &k) { return k.id == key_id; });
                             if (it == set->end()) return key_id_missing();
                             out.clear_health = {key_id};
                             set->erase(it);
                             out.keys = std::move(*set);
                             out.answer["key_id"] = key_id;
                             return out;
                         });
}

}  // namespace byok::admin::detail
