// lib/host_key: pinned SSH host keys (issue 12: the compare moved from the glue).
#include <criterion/criterion.h>

#include "lib/host_key.h"

using namespace byok;

Test(host_key, i12_05_fingerprints_compare_without_prefix_and_padding) {
    cr_assert(same_host_key("SHA256:abcDEF123=", "SHA256:abcDEF123"));
    cr_assert(same_host_key("abcDEF123", "SHA256:abcDEF123="));
    cr_assert(!same_host_key("SHA256:abcDEF123", "SHA256:abcDEF124"));
    cr_assert(!same_host_key("SHA256:abcdef123", "SHA256:abcDEF123"));  // base64 is case-sensitive
}
