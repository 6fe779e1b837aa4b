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
};

Step finish(const CtxPtr &c, const Rotation &st) {
    return respond(200, json{{"rotated", st.rotated},
                             {"unchanged", st.unchanged},
                             {"failed", st.failed},
                             {"skipped", st.skipped},
                             {"active_kid", c->cfg->ring->active().kid}});
}

// Re-seals the provider-key records of one project; returns (provider, old,
// new) triples.
std::vector<std::string> reseal_keys(const CtxPtr &c, const std::string &pid, const Fields &records,
                                     Rotation &st) {
    const KeyRing &ring = *c->cfg->ring;
    const std::string &active = ring.active().kid;
    std::vector<std::string> triples;
    for (const auto &[provider, raw] : records) {
        try {
            KeyRecord rec = parse_key_record(raw);
            if (rec.sealed.kid == active && rec.sealed.v == kSealVersion) {
                ++st.unchanged;
                continue;
            }
            if (!ring.find(rec.sealed.kid)) {
                ++st.failed;  // unknown kid: left untouched
                continue;
            }
            Binding binding = key_binding(pid, provider, rec.endpoint);
            SecretString plain = open_sealed(ring, rec.sealed, binding);
            rec.sealed = seal(ring, plain.view(), binding);
            triples.push_back(provider);
            triples.push_back(raw);
            triples.push_back(serialize_key_record(rec));
        } catch (const Error &) {
            ++st.failed;  // malformed or does not decrypt: left untouched
        }
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
        return redis(std::move(argv), [c, st](const Reply &wr) {
            st->rotated += script_item(wr, 1).integer;
            st->skipped += script_item(wr, 2).integer;
            return next_project(c, st);
        });
    });
}

}  // namespace

Step rotate(const CtxPtr &c, json &body) {
    if (auto e = check_fields(body, {})) return *e;
    return redis({"SMEMBERS", c->cfg->layout.projects()}, [c](const Reply &r) {
        auto st = std::make_shared<Rotation>();
        for (const auto &e : r.elements)
            if (valid_id(e.str)) st->pids.push_back(e.str);
        std::sort(st->pids.begin(), st->pids.end());
        return next_project(c, st);
    });
}

}  // namespace byok::admin::detail
