// Admin API: POST /rotate re-encrypts every provider-key record that is not
// under the active master key. One project per batch: HGETALL its keys,
// decrypt and re-seal here, then one compare-and-set script writes the
// batch (records changed meanwhile are left alone and counted as skipped).
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

// Re-seals the records of one project; returns (provider, old, new) triples.
std::vector<std::string> reseal(const CtxPtr &c, const std::string &pid, const Fields &records,
                                Rotation &st) {
    const KeyRing &ring = *c->cfg->ring;
    const std::string &active = ring.active().kid;
    std::vector<std::string> triples;
    for (const auto &[provider, raw] : records) {
        try {
            KeyRecord rec = parse_key_record(raw);
            if (rec.sealed.kid == active) {
                ++st.unchanged;
                continue;
            }
            if (!ring.find(rec.sealed.kid)) {
                ++st.failed;  // unknown kid: left untouched
                continue;
            }
            SecretString plain = open_sealed(ring, rec.sealed, pid, provider);
            rec.sealed = seal(ring, plain.view(), pid, provider);
            triples.push_back(provider);
            triples.push_back(raw);
            triples.push_back(serialize_key_record(rec));
        } catch (const Error &) {
            ++st.failed;  // malformed or does not decrypt: left untouched
        }
    }
    return triples;
}

Step next_project(const CtxPtr &c, std::shared_ptr<Rotation> st) {
    if (st->next >= st->pids.size()) return finish(c, *st);
    std::string pid = st->pids[st->next++];
    return redis({"HGETALL", c->cfg->layout.keys(pid)}, [c, st, pid](const Reply &r) {
        std::vector<std::string> triples = reseal(c, pid, to_fields(r), *st);
        if (triples.empty()) return next_project(c, st);
        std::vector<std::string> args{c->cfg->ring->active().kid};
        args.insert(args.end(), triples.begin(), triples.end());
        auto argv = mutation(*c, kScriptRotate, pid, {c->cfg->layout.keys(pid)}, std::move(args));
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
