// lib/project: the tier rule, written once (issue 12 item 4).
#include <criterion/criterion.h>

#include <string>

#include "lib/admin_internal.h"
#include "lib/project.h"

using namespace byok;

Test(project, i12_04_byok_needs_starter_or_above) {
    cr_assert_not(byok_allowed(Tier::Free));
    cr_assert(byok_allowed(Tier::Starter));
    cr_assert(byok_allowed(Tier::Pro));
    cr_assert(byok_allowed(Tier::Enterprise));
}

// The scripts that write BYOK records check the tier atomically in Lua; the
// set they check is generated from byok_allowed(), not written again.
Test(project, i12_04_lua_tier_set_is_generated_from_the_cpp_rule) {
    for (const std::string *script :
         {&admin::detail::kScriptKeySet, &admin::detail::kScriptServerSet}) {
        cr_assert(script->find("byok_tier(redis.call('HGET', KEYS[2], 'tier'))") !=
                  std::string::npos);
        cr_assert(script->find("tier ~= 'starter'") == std::string::npos);
        for (Tier t : kTiers) {
            std::string entry = "['" + std::string(tier_name(t)) + "']=true";
            cr_assert_eq(script->find(entry) != std::string::npos, byok_allowed(t), "%s",
                         entry.c_str());
        }
    }
}
