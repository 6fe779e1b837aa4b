// lib/usage: the usage-counter key and field, written and read (issue 12).
#include <criterion/criterion.h>

#include "lib/usage.h"

using namespace byok;

Test(usage, i12_06_field_round_trips) {
    for (Route r : {Route::Byok, Route::System, Route::Fallback}) {
        auto got = parse_usage_field(usage_field("openai", r));
        cr_assert(got.has_value());
        cr_assert_eq(got->first, "openai");
        cr_assert_eq(got->second, route_name(r));
    }
    cr_assert(!parse_usage_field("openai"));
    cr_assert(!parse_usage_field(":byok"));
    cr_assert(!parse_usage_field("openai:"));
}

Test(usage, i12_06_key_is_the_layouts_day_hash) {
    Layout l;
    cr_assert_eq(usage_key(l, "acme", 1764460800), l.usage("acme", "20251130"));
}
