// Issue 18, session 6 (s6-meter): the usage event batch and the per-request
// metering record, cheaper for Redis and for the worker, the same entries.
#include <criterion/criterion.h>

#include <string>
#include <vector>

#include "lib/metering.h"

using namespace byok;

namespace {

size_t count(const std::string &s, const std::string &what) {
    size_t n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) n++;
    return n;
}

}  // namespace

// The cap is applied once per batch: one XTRIM MAXLEN ~ ARGV[1] after the
// loop of XADDs, and no XADD carries MAXLEN (old code: MAXLEN ~ on every
// XADD, no XTRIM).
Test(i18_meter3, i18_meter3_01_batch_trims_once_after_the_xadds) {
    const std::string &script = usage_events_script();
    cr_assert_eq(count(script, "MAXLEN"), 1u, "%s", script.c_str());
    cr_assert_eq(count(script, "'XTRIM'"), 1u, "%s", script.c_str());
    cr_assert_eq(count(script, "'XADD'"), 1u, "%s", script.c_str());
    size_t loop_end = script.find("\nend\n");
    size_t xtrim = script.find("redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])");
    cr_assert_neq(loop_end, std::string::npos, "%s", script.c_str());
    cr_assert_neq(xtrim, std::string::npos, "%s", script.c_str());
    cr_assert_gt(xtrim, loop_end, "the trim runs once, after the loop: %s", script.c_str());
    cr_assert_neq(script.find("redis.call('XADD', KEYS[1], '*', 'request_id', ARGV[i + 0]"),
                  std::string::npos, "the XADD names its ID right after the key: %s",
                  script.c_str());
    // The batch still passes the cap as ARGV[1].
    std::string head = usage_events_batch_head("byok:usage:events", 1);
    cr_assert_neq(head.find("$6\r\n" + std::to_string(kUsageEventsMaxLen) + "\r\n"),
                  std::string::npos);
}
