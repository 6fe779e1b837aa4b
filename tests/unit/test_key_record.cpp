// Issue 14: a provider's key set in one field of byok:{pid}:keys.
#include <criterion/criterion.h>

#include <nlohmann/json.hpp>

#include "lib/record.h"
#include "tests/unit/test_support.h"

using namespace byok;
using byok::test::error_of;

namespace {

KeyRecord rec(const std::string &key) {
    KeyRecord r;
    r.sealed = seal(test::test_ring(), key, key_binding("acme", "openai", ""));
    r.id = new_key_id();
    r.key_hint = "sk-...x";
    r.created_at = r.updated_at = "2026-11-22T04:31:00Z";
    return r;
}

}  // namespace

Test(key_record, i14_01_one_key_keeps_the_record_shape_several_are_a_set) {
    KeyRecord a = rec("sk-aaaaaaaa"), b = rec("sk-bbbbbbbb");
    b.weight = 7;
    b.expires_at = "2027-01-01T00:00:00+02:00";
    std::string one = serialize_key_set({a});
    cr_assert(nlohmann::json::parse(one).contains("ct"));
    cr_assert_eq(parse_key_set(one).size(), 1u);
    std::string two = serialize_key_set({a, b});
    auto set = parse_key_set(two);
    cr_assert_eq(set.size(), 2u);
    cr_assert_eq(set[1].id, b.id);
    cr_assert_eq(set[1].weight, 7);
    cr_assert_eq(
        open_sealed(test::test_ring(), set[1].sealed, key_binding("acme", "openai", "")).view(),
        "sk-bbbbbbbb");
    cr_assert(two.find("sk-bbbbbbbb") == std::string::npos);
}

Test(key_record, i14_01_legacy_records_get_a_stable_id_from_their_ciphertext) {
    KeyRecord a = rec("sk-aaaaaaaa");
    nlohmann::json j = nlohmann::json::parse(serialize_key_record(a));
    j.erase("id");
    j.erase("weight");
    j.erase("expires_at");
    KeyRecord back = parse_key_record(j.dump());
    cr_assert(valid_key_id(back.id));
    cr_assert_eq(back.id, legacy_key_id(a.sealed));
    cr_assert_eq(parse_key_record(j.dump()).id, back.id);
    cr_assert_eq(back.weight, 1);
}

Test(key_record, i14_01_bad_sets_are_refused) {
    KeyRecord a = rec("sk-aaaaaaaa");
    std::string dup = serialize_key_set({a, a});
    cr_assert_eq(error_of([&] { parse_key_set(dup); }), "key record: field 'id': duplicate key id");
    cr_assert_eq(error_of([&] { parse_key_set(R"({"keys":[]})"); }),
                 "key record: field 'keys': expected an array of 1..16 records");
    nlohmann::json j = nlohmann::json::parse(serialize_key_record(a));
    j["weight"] = 101;
    cr_assert_eq(error_of([&] { parse_key_record(j.dump()); }),
                 "key record: field 'weight': expected 1..100");
    j["weight"] = 1;
    j["id"] = "k_XYZ";
    cr_assert_eq(error_of([&] { parse_key_record(j.dump()); }),
                 "key record: field 'id': expected k_ and 12 hex digits");
}

Test(key_record, i14_04_rfc3339) {
    cr_assert_eq(*parse_rfc3339("1970-01-01T00:00:00Z"), 0);
    cr_assert_eq(*parse_rfc3339("2026-11-30T12:00:00Z"), 1796040000);
    cr_assert_eq(*parse_rfc3339("2026-11-30T14:00:00.250+02:00"), 1796040000);
    cr_assert_eq(*parse_rfc3339("2000-02-29T00:00:00Z"), 951782400);
    for (const char *bad : {"", "2026-11-30", "2026-13-01T00:00:00Z", "2026-11-30T12:00:00",
                            "2026-11-30T12:00:00+0200", "2026-11-30 12:00:00Z", "x"})
        cr_assert_not(parse_rfc3339(bad).has_value(), "%s", bad);
}
