// Admin API: POST /rotate re-encrypts every provider-key record and every
// execution-server secret that is not under the active master key or not of
// the current record version (v1 records are upgraded to v2, which binds the
// target fields into the associated data). One
// project per batch: read its keys and servers hashes, decrypt and re-seal
// here, then one compare-and-set script writes the batch (records changed
// meanwhile are left alone and counted as skipped).
#include <algorithm>

#include "lib/admin_internal.h"
#include "lib/layout.h"

namespace byok::admin::detail {

namespace {

struct Rotation {
    std::vector<std::string> pids;
    size_t next = 0;
    long long rotated = 0, unchanged = 0, failed = 0, skipped = 0;
    KidCounts before;
};

// {"k1": {"keys": 2, "servers": 1, "in_ring": true}, ...}
json counts_json(const KeyRing &ring, const KidCounts &counts) {
    json out = json::object();
    for (const auto &[kid, n] : counts.by_kid)
        out[kid] = {
            {"keys", n.keys}, {"servers", n.servers}, {"in_ring", ring.find(kid) != nullptr}};
    return out;
}

// The answer carries the counts read again after the last batch, so the
// operator sees from this one call whether the old kid is still in use.
Step finish(const CtxPtr &c, const Rotation &st) {
    json out{{"rotated", st.rotated},
             {"unchanged", st.unchanged},
             {"failed", st.failed},
             {"skipped", st.skipped},
             {"active_kid", c->cfg->ring->active().kid},
             {"before", counts_json(*c->cfg->ring, st.before)}};
    return count_records_by_kid(c->cfg->layout, [c, out](const KidCounts &after) mutable {
        out["after"] = counts_json(*c->cfg->ring, after);
        return respond(200, out);
    });
}

struct Walk {
    std::vector<std::string> pids;
    size_t next = 0;
    KidCounts counts;
};

void count_hash(const Fields &records, bool servers, KidCounts &counts) {
    for (const auto &[field, raw] : records) {
        try {
            if (!servers) {  // every key of the provider's set
                for (const auto &rec : parse_key_set(raw)) ++counts.by_kid[rec.sealed.kid].keys;
                continue;
            }
            std::string kid = server_record_kid(field, raw);
            if (kid.empty()) continue;  // a server without secrets
            ++counts.by_kid[kid].servers;
        } catch (const Error &) {
            ++counts.unreadable;
        }
    }
}

Step walk_next(const Layout &l, std::shared_ptr<Walk> w,
               std::function<Step(const KidCounts &)> done) {
    if (w->next >= w->pids.size()) return done(w->counts);
    std::string pid = w->pids[w->next++];
    return redis(eval(kScriptMultiHgetall, {l.keys(pid), l.servers(pid)}, {}),
                 [l, w, done](const Reply &r) {
                     count_hash(to_fields(script_item(r, 0)), false, w->counts);
                     count_hash(to_fields(script_item(r, 1)), true, w->counts);
                     return walk_next(l, w, done);
                 });
}

// Re-seals the provider keys of one project, key by key; returns (provider,
// old, new) triples. A record written before keys had ids gets its id (the
// one derived from its old ciphertext) stored with the new ciphertext, so
// the id stays the same.
std::vector<std::string> reseal_keys(const CtxPtr &c, const std::string &pid, const Fields &records,
                                     Rotation &st) {
    const KeyRing &ring = *c->cfg->ring;
    const std::string &active = ring.active().kid;
    std::vector<std::string> triples;
    for (const auto &[provider, raw] : records) {
        std::vector<KeyRecord> set;
        try {
            set = parse_key_set(raw);
        } catch (const Error &) {
            ++st.failed;  // malformed: left untouched
            continue;
        }
        bool resealed = false;
        for (auto &rec : set) {
            if (rec.sealed.kid == active && rec.sealed.v == kSealVersion) {
                ++st.unchanged;
                continue;
            }
            if (!ring.find(rec.sealed.kid)) {
                ++st.failed;  // unknown kid: left untouched
                continue;
            }
            try {
                Binding binding = key_binding(pid, provider, rec.endpoint);
                SecretString plain = open_sealed(ring, rec.sealed, binding);
                rec.sealed = seal(ring, plain.view(), binding);
                resealed = true;
            } catch (const Error &) {
                ++st.failed;  // does not decrypt: left untouched
            }
        }
        if (!resealed) continue;
        triples.push_back(provider);
        triples.push_back(raw);
        triples.push_back(serialize_key_set(set));
    }
    return triples;
}

// Same for the sealed secrets of the execution-server records.
std::vector<std::string> reseal_servers(const CtxPtr &c, const std::string &pid,
                                        const Fields &records, Rotation &st) {
    std::vector<std::string> triples;
    for (const auto &[sid, raw] : records) {
        try {
            auto fresh = reseal_server_record(*c->cfg->ring, pid, sid, raw);
            if (!fresh) {
                ++st.unchanged;
                continue;
            }
            triples.push_back(sid);
            triples.push_back(raw);
            triples.push_back(std::move(*fresh));
        } catch (const Error &) {
            ++st.failed;  // malformed, unknown kid or does not decrypt: left untouched
        }
    }
    return triples;
}

Step next_project(const CtxPtr &c, std::shared_ptr<Rotation> st) {
    if (st->next >= st->pids.size()) return finish(c, *st);
    std::string pid = st->pids[st->next++];
    const Layout &l = c->cfg->layout;
    auto read = eval(kScriptMultiHgetall, {l.keys(pid), l.servers(pid)}, {});
    return redis(std::move(read), [c, st, pid](const Reply &r) {
        std::vector<std::string> keys = reseal_keys(c, pid, to_fields(script_item(r, 0)), *st);
        std::vector<std::string> servers =
            reseal_servers(c, pid, to_fields(script_item(r, 1)), *st);
        if (keys.empty() && servers.empty()) return next_project(c, st);
        std::vector<std::string> args{c->cfg->ring->active().kid, std::to_string(keys.size() / 3)};
        args.insert(args.end(), keys.begin(), keys.end());
        args.insert(args.end(), servers.begin(), servers.end());
        const Layout &lay = c->cfg->layout;
        auto argv =
            mutation(*c, kScriptRotate, pid, {lay.keys(pid), lay.servers(pid)}, std::move(args));
        return mutate(*c, pid, std::move(argv), [c, st](const Reply &wr) {
            st->rotated += script_item(wr, 1).integer;
            st->skipped += script_item(wr, 2).integer;
            return next_project(c, st);
        });
    });
}

}  // namespace

Step rotate(const CtxPtr &c, json &body) {
    if (auto e = check_fields(body, {})) return *e;
    return count_records_by_kid(c->cfg->layout, [c](const KidCounts &before) {
        return redis({"SMEMBERS", c->cfg->layout.projects()}, [c, before](const Reply &r) {
            auto st = std::make_shared<Rotation>();
            st->before = before;
            for (const auto &e : r.elements)
                if (valid_id(e.str)) st->pids.push_back(e.str);
            std::sort(st->pids.begin(), st->pids.end());
            return next_project(c, st);
        });
    });
}

// The ring this worker loaded (ids only, never key material) and the
// records per kid; a kid that records use but the ring lacks shows with
// "in_ring": false.
Step keyring_get(const CtxPtr &c) {
    return count_records_by_kid(c->cfg->layout, [c](const KidCounts &counts) {
        const KeyRing &ring = *c->cfg->ring;
        json kids = json::array();
        for (const auto &k : ring.keys()) kids.push_back(k.kid);
        json records = counts_json(ring, counts);
        for (const auto &k : ring.keys())
            if (!records.contains(k.kid))
                records[k.kid] = {{"keys", 0}, {"servers", 0}, {"in_ring", true}};
        return respond(200, json{{"kids", kids},
                                 {"active_kid", ring.active().kid},
                                 {"records", records},
                                 {"unreadable", counts.unreadable},
                                 {"missing_kids", !ring_gap(ring, counts).empty()}});
    });
}

}  // namespace byok::admin::detail

namespace byok::admin {

Step count_records_by_kid(const Layout &layout, std::function<Step(const KidCounts &)> done) {
    using namespace detail;
    return guarded([&] {
        return redis({"SMEMBERS", layout.projects()}, [layout, done](const Reply &r) {
            auto w = std::make_shared<Walk>();
            for (const auto &e : r.elements)
                if (valid_id(e.str)) w->pids.push_back(e.str);
            std::sort(w->pids.begin(), w->pids.end());
            return walk_next(layout, w, done);
        });
    });
}

std::string ring_gap(const KeyRing &ring, const KidCounts &counts) {
    std::string out;
    for (const auto &[kid, n] : counts.by_kid) {
        if (ring.find(kid) != nullptr) continue;
        long long total = n.keys + n.servers;
        if (!out.empty()) out += "; ";
        out += "master key '" + kid + "' is still used by " + std::to_string(total) +
               (total == 1 ? " record (" : " records (") + std::to_string(n.keys) +
               (n.keys == 1 ? " provider key, " : " provider keys, ") + std::to_string(n.servers) +
               (n.servers == 1 ? " server secret)" : " server secrets)");
    }
    if (!out.empty())
        out += ": keep it in the ring until POST /rotate leaves it unused (GET /keyring shows 0)";
    return out;
}

}  // namespace byok::admin
