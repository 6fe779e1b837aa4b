#include <criterion/criterion.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "lib/record.h"
#include "tests/unit/test_support.h"

using namespace byok;
using nlohmann::json;

namespace {

using byok::test::error_of;
using byok::test::test_ring;

KeyRecord sample() {
    KeyRecord r;
    r.sealed = seal(test_ring(), "sk-ant-secret-9999", key_binding("acme", "anthropic", ""));
    r.label = "prod \"main\"";
    r.endpoint = "";
    r.is_active = true;
    r.key_hint = "sk-ant-...9999";
    r.created_at = "2026-11-22T04:31:00Z";
    r.updated_at = "2026-11-22T04:32:00Z";
    return r;
}

json sample_json() { return json::parse(serialize_key_record(sample())); }

}  // namespace

Test(record, round_trip_and_decrypts) {
    KeyRecord r = sample();
    std::string text = serialize_key_record(r);
    cr_assert_eq(text.find("sk-ant-secret"), std::string::npos, "plaintext leaked");
    KeyRecord back = parse_key_record(text);
    cr_assert_eq(back.sealed.v, 2);
    cr_assert_eq(back.sealed.kid, "k1");
    cr_assert(back.sealed.salt == r.sealed.salt);
    cr_assert(back.sealed.nonce == r.sealed.nonce);
    cr_assert(back.sealed.ct == r.sealed.ct);
    cr_assert_eq(back.label, r.label);
    cr_assert_eq(back.key_hint, r.key_hint);
    cr_assert_eq(back.created_at, r.created_at);
    cr_assert_eq(back.updated_at, r.updated_at);
    cr_assert(back.is_active);
    cr_assert_eq(back.last_tested, "");
    cr_assert_eq(open_sealed(test_ring(), back.sealed, key_binding("acme", "anthropic", "")).view(),
                 "sk-ant-secret-9999");
}

Test(record, i11_09_unicode_hint_of_an_old_record_is_read_as_ascii) {
    KeyRecord r = sample();
    r.key_hint = "sk-ant-\u20269999";
    cr_assert_eq(parse_key_record(serialize_key_record(r)).key_hint, "sk-ant-...9999");
}

Test(record, json_fields_are_spec_names) {
    json j = sample_json();
    for (const char *f :
         {"v", "kid", "salt", "nonce", "ct", "label", "endpoint", "is_active", "key_hint",
          "created_at", "updated_at", "last_tested", "test_status", "test_message"}) {
        cr_assert(j.contains(f), "%s", f);
    }
    cr_assert_eq(j["v"].get<int>(), 2);
    cr_assert_eq(j["salt"].get<std::string>().size(), 24u);
    cr_assert_eq(j["nonce"].get<std::string>().size(), 16u);
}

Test(record, optional_fields_absent_or_null_and_unknown_ignored) {
    json j = sample_json();
    j.erase("label");
    j["endpoint"] = nullptr;
    j.erase("last_tested");
    j["test_status"] = nullptr;
    j["future_field"] = {1, 2};
    KeyRecord r = parse_key_record(j.dump());
    cr_assert_eq(r.label, "");
    cr_assert_eq(r.endpoint, "");
    cr_assert_eq(r.test_status, "");
}

Test(record, strict_errors_name_the_field) {
    struct {
        std::function<void(json &)> edit;
        std::string err;
    } cases[] = {
        {[](json &j) { j.erase("kid"); }, "key record: field 'kid': missing"},
        {[](json &j) { j.erase("is_active"); }, "key record: field 'is_active': missing"},
        {[](json &j) { j.erase("created_at"); }, "key record: field 'created_at': missing"},
        {[](json &j) { j["v"] = 3; }, "key record: field 'v': unsupported version"},
        {[](json &j) { j["v"] = "1"; }, "key record: field 'v': expected an integer"},
        {[](json &j) { j["is_active"] = "yes"; },
         "key record: field 'is_active': expected a boolean"},
        {[](json &j) { j["label"] = 5; }, "key record: field 'label': expected a string"},
        {[](json &j) { j["nonce"] = "AAAA"; }, "key record: field 'nonce': expected 12 bytes"},
        {[](json &j) { j["salt"] = "AAAA"; }, "key record: field 'salt': expected 16 bytes"},
        {[](json &j) { j["ct"] = "AAAA"; }, "key record: field 'ct': expected at least 16 bytes"},
        {[](json &j) { j["ct"] = "!!!!"; }, "key record: field 'ct': invalid base64"},
        {[](json &j) { j["kid"] = ""; }, "key record: field 'kid': must not be empty"},
    };
    for (auto &c : cases) {
        json j = sample_json();
        c.edit(j);
        std::string err = error_of([&] { parse_key_record(j.dump()); });
        cr_assert_eq(err, c.err, "got: %s", err.c_str());
    }
    cr_assert_eq(error_of([] { parse_key_record("{"); }), "key record: not valid JSON");
    cr_assert_eq(error_of([] { parse_key_record("[1]"); }), "key record: expected a JSON object");
}

Test(record, i10_08_v2_binds_the_endpoint_and_v1_still_reads) {
    const KeyRing &ring = test_ring();
    KeyRecord r = sample();
    r.endpoint = "https://llm.example/v1";
    r.sealed = seal(ring, "sk-custom-1234", key_binding("acme", "custom", r.endpoint));
    KeyRecord back = parse_key_record(serialize_key_record(r));
    cr_assert_eq(back.sealed.v, 2);
    cr_assert_eq(
        open_sealed(ring, back.sealed, key_binding("acme", "custom", back.endpoint)).view(),
        "sk-custom-1234");
    // The endpoint rewritten in the stored JSON: the key no longer opens.
    json j = json::parse(serialize_key_record(r));
    j["endpoint"] = "https://attacker.example";
    KeyRecord moved = parse_key_record(j.dump());
    cr_assert_eq(error_of([&] {
                     open_sealed(ring, moved.sealed, key_binding("acme", "custom", moved.endpoint));
                 }),
                 "record does not decrypt (tampered, moved or wrong key)");
    // A v1 record (first release) keeps reading and opening.
    KeyRecord old = sample();
    old.sealed = byok::test::seal_v1(ring, "sk-ant-old-1234", "acme", "anthropic");
    KeyRecord old_back = parse_key_record(serialize_key_record(old));
    cr_assert_eq(old_back.sealed.v, 1);
    cr_assert_eq(json::parse(serialize_key_record(old))["v"].get<int>(), 1);
    cr_assert_eq(open_sealed(ring, old_back.sealed, key_binding("acme", "anthropic", "")).view(),
                 "sk-ant-old-1234");
}
