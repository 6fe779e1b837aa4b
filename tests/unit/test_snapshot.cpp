#include <criterion/criterion.h>

#include <string>

#include "lib/project.h"
#include "lib/record.h"
#include "tests/unit/test_support.h"

using namespace byok;

namespace {

using byok::test::error_of;

std::string record_json(bool active) {
    KeyRing ring = KeyRing::parse("k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", "t");
    KeyRecord r;
    r.sealed = seal(ring, "sk-abcdefgh1234", key_binding("acme", "openai", "https://e.example"));
    r.is_active = active;
    r.key_hint = "sk-\u20261234";
    r.endpoint = "https://e.example";
    r.created_at = r.updated_at = "2026-11-22T04:31:00Z";
    return serialize_key_record(r);
}

FieldMap apikey() { return {{"project", "acme"}, {"id", "k1"}, {"revoked", "0"}}; }
FieldMap project(const char *tier = "pro", const char *fallback = "no_key") {
    return {{"name", "Acme"}, {"tier", tier}, {"fallback", fallback}, {"default_server", "s1"}};
}

}  // namespace

Test(snapshot, build_ok) {
    FieldMap keys = {
        {"openai", record_json(true)}, {"anthropic", record_json(false)}, {"broken", "{not json"}};
    GatewaySnapshot s = build_snapshot(apikey(), project(), keys);
    cr_assert_eq(s.status, GatewaySnapshot::Status::Ok);
    cr_assert_eq(s.project, "acme");
    cr_assert_eq(s.tier, Tier::Pro);
    cr_assert_eq(s.policy, Policy::NoKey);
    cr_assert_eq(s.default_server, "s1");
    cr_assert_eq(s.keys.size(), 3u);
    const StoredKey *o = s.find_key("openai");
    cr_assert_not_null(o);
    cr_assert(o->is_active);
    cr_assert_not(o->malformed);
    cr_assert_eq(o->kid, "k1");
    cr_assert_eq(o->salt.size(), 16u);
    cr_assert_eq(o->nonce.size(), 12u);
    cr_assert_eq(o->endpoint, "https://e.example");
    cr_assert_eq(o->key_hint, "sk-...1234");  // i11_09: stored U+2026 comes out ASCII
    cr_assert_not(s.find_key("anthropic")->is_active);
    cr_assert(s.find_key("broken")->malformed);
    cr_assert_null(s.find_key("google"));
}

Test(snapshot, build_unknown_revoked_defaults) {
    cr_assert_eq(build_snapshot({}, project(), {}).status, GatewaySnapshot::Status::Unknown);
    cr_assert_eq(build_snapshot(apikey(), {}, {}).status, GatewaySnapshot::Status::Unknown);
    FieldMap rev = apikey();
    rev["revoked"] = "1";
    cr_assert_eq(build_snapshot(rev, project(), {}).status, GatewaySnapshot::Status::Revoked);
    rev["revoked"] = "2026-11-22T04:31:00Z";
    cr_assert_eq(build_snapshot(rev, project(), {}).status, GatewaySnapshot::Status::Revoked);
    rev["revoked"] = "";
    cr_assert_eq(build_snapshot(rev, project(), {}).status, GatewaySnapshot::Status::Ok);
    // Missing policy is the default (auto); garbage never spends operator money.
    FieldMap p = {{"name", "Acme"}};
    GatewaySnapshot s = build_snapshot(apikey(), p, {});
    cr_assert_eq(s.tier, Tier::Free);
    cr_assert_eq(s.policy, Policy::Auto);
    s = build_snapshot(apikey(), project("gold", "sometimes"), {});
    cr_assert_eq(s.tier, Tier::Free);
    cr_assert_eq(s.policy, Policy::Off);
}

Test(snapshot, encode_decode_round_trip) {
    FieldMap keys = {{"openai", record_json(true)}, {"broken", "[]"}};
    GatewaySnapshot s = build_snapshot(apikey(), project("enterprise", "off"), keys);
    std::string blob = encode_snapshot(s);
    GatewaySnapshot d = decode_snapshot(blob);
    cr_assert_eq(d.status, s.status);
    cr_assert_eq(d.project, "acme");
    cr_assert_eq(d.tier, Tier::Enterprise);
    cr_assert_eq(d.policy, Policy::Off);
    cr_assert_eq(d.default_server, "s1");
    cr_assert_eq(d.keys.size(), 2u);
    for (size_t i = 0; i < 2; i++) {
        const StoredKey &a = s.keys[i], &b = d.keys[i];
        cr_assert_eq(a.provider, b.provider);
        cr_assert_eq(a.is_active, b.is_active);
        cr_assert_eq(a.malformed, b.malformed);
        cr_assert_eq(a.kid, b.kid);
        cr_assert(a.salt == b.salt);
        cr_assert(a.nonce == b.nonce);
        cr_assert(a.ct == b.ct);
        cr_assert_eq(a.endpoint, b.endpoint);
        cr_assert_eq(a.key_hint, b.key_hint);
    }
    cr_assert(d.find_key("broken")->malformed);
    GatewaySnapshot unknown;
    cr_assert_eq(decode_snapshot(encode_snapshot(unknown)).status,
                 GatewaySnapshot::Status::Unknown);
}

Test(snapshot, decode_rejects_every_truncation_and_corruption) {
    FieldMap keys = {{"openai", record_json(true)}};
    std::string blob = encode_snapshot(build_snapshot(apikey(), project(), keys));
    const std::string msg = "cached snapshot is truncated or corrupt";
    // A blob cached before key_id existed ends right before it; one cached
    // before the per-key extras (issue 14: id, weight, expiry) before those.
    const size_t extras = 8 + 4 + 14 + 4 + 8;
    const size_t legacy = blob.size() - extras - 4 - std::string("k1").size();
    for (size_t n = 0; n < blob.size(); n++) {
        if (n == legacy || n == blob.size() - extras) continue;
        cr_assert_eq(error_of([&] { decode_snapshot(blob.substr(0, n)); }), msg, "len %zu", n);
    }
    cr_assert_eq(error_of([&] { decode_snapshot(blob + "x"); }), msg);
    std::string bad = blob;
    bad[0] = 'X';
    cr_assert_eq(error_of([&] { decode_snapshot(bad); }), msg);
    bad = blob;
    bad[4] = 9;  // status out of range
    cr_assert_eq(error_of([&] { decode_snapshot(bad); }), msg);
    bad = blob;
    bad[8] = '\xff';  // project length huge
    cr_assert_eq(error_of([&] { decode_snapshot(bad); }), msg);
}

Test(snapshot, tier_policy_names) {
    for (Tier t : {Tier::Free, Tier::Starter, Tier::Pro, Tier::Enterprise}) {
        cr_assert(parse_tier(tier_name(t)) == t);
    }
    for (Policy p : {Policy::Auto, Policy::NoKey, Policy::Off}) {
        cr_assert(parse_policy(policy_name(p)) == p);
    }
    cr_assert_not(parse_tier("gold").has_value());
    cr_assert_not(parse_policy("on").has_value());
}

Test(snapshot, i10_08_record_version_survives_the_cache_and_binds_the_endpoint) {
    KeyRing ring = KeyRing::parse("k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", "t");
    KeyRecord old;
    old.sealed = byok::test::seal_v1(ring, "sk-old-12345678", "acme", "anthropic");
    old.key_hint = "sk-…5678";
    old.created_at = old.updated_at = "2026-11-22T04:31:00Z";
    FieldMap keys = {{"openai", record_json(true)}, {"anthropic", serialize_key_record(old)}};
    GatewaySnapshot s = decode_snapshot(encode_snapshot(build_snapshot(apikey(), project(), keys)));
    cr_assert_eq(s.find_key("openai")->v, 2);
    cr_assert_eq(s.find_key("anthropic")->v, 1);
    cr_assert_eq(open_stored_key(ring, "acme", *s.find_key("openai")).view(), "sk-abcdefgh1234");
    cr_assert_eq(open_stored_key(ring, "acme", *s.find_key("anthropic")).view(), "sk-old-12345678");
    // The endpoint of a v2 record rewritten before it was cached: no plaintext.
    StoredKey moved = *s.find_key("openai");
    moved.endpoint = "https://attacker.example";
    cr_assert_eq(error_of([&] { open_stored_key(ring, "acme", moved); }),
                 "record does not decrypt (tampered, moved or wrong key)");
}

Test(snapshot, i13_key_id_round_trips_and_legacy_blobs_still_decode) {
    FieldMap keys = {{"openai", record_json(true)}};
    std::string blob = encode_snapshot(build_snapshot(apikey(), project(), keys));
    cr_assert_eq(decode_snapshot(blob).key_id, "k1");
    GatewaySnapshot legacy = decode_snapshot(blob.substr(0, blob.size() - 38 - 6));
    cr_assert_eq(legacy.key_id, "");
    cr_assert_eq(legacy.project, "acme");
    cr_assert_eq(legacy.keys.size(), 1u);
}

// Issue 17 item 7: the project's fallback_on_rate_limit survives the cache;
// only the string "false" turns it off.
Test(snapshot, i17_07_fallback_on_rate_limit_is_read_and_cached) {
    FieldMap p = project();
    cr_assert(build_snapshot(apikey(), p, {}).fallback_on_rate_limit);
    p["fallback_on_rate_limit"] = "true";
    cr_assert(
        decode_snapshot(encode_snapshot(build_snapshot(apikey(), p, {}))).fallback_on_rate_limit);
    p["fallback_on_rate_limit"] = "false";
    GatewaySnapshot s = build_snapshot(apikey(), p, {});
    cr_assert_not(s.fallback_on_rate_limit);
    cr_assert_not(decode_snapshot(encode_snapshot(s)).fallback_on_rate_limit);
}

Test(snapshot, i17_04_default_provider_is_read_and_cached) {
    FieldMap p = project();
    cr_assert_eq(build_snapshot(apikey(), p, {}).default_provider, "");
    p["default_provider"] = "anthropic";
    GatewaySnapshot s = decode_snapshot(encode_snapshot(build_snapshot(apikey(), p, {})));
    cr_assert_eq(s.default_provider, "anthropic");
    cr_assert_eq(s.default_server, "s1");
}
