// Shared pieces of the provider-key routes (admin_keys.cpp: storage and
// routes; admin_key_test.cpp: live tests and stats). Issue 14: several keys
// per provider, stored as one set per provider (lib/record.h).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "lib/admin_internal.h"

namespace byok::admin::detail {

Step key_missing();     // the provider has no key
Step key_id_missing();  // no key with this id

// What a CAS write of a provider's key set stores and answers.
struct SetWrite {
    std::vector<KeyRecord> keys;  // empty = remove the provider's field
    int status = 200;
    json answer;
    std::vector<std::string> clear_health;  // key ids whose health starts over
};
// Builds the new set from the stored JSON (nullptr = none stored), or a Step
// to answer instead.
using SetBuilder = std::function<std::variant<SetWrite, Step>(const std::string *old_raw)>;

// Read, build, compare-and-set (re-reading on a concurrent change, 3 tries);
// audited as `action` on `<provider>` or `<provider>/<key id>`.
Step write_key_set(const CtxPtr &c, const std::string &pid, const Provider &p, bool require_tier,
                   std::string action, std::string target, SetBuilder build);

// Per-key state that lives beside the records: health and last use.
struct KeyExtras {
    Fields health;     // byok:{pid}:key_health
    Fields last_used;  // byok:{pid}:last_used
    int64_t now_ms = 0;
};
json key_view(const std::string &provider, const std::string &provider_name, const KeyRecord &r,
              const KeyExtras *extras);
// The project's key sets (by provider) with their extras; 404 without the project.
Step read_keys(const CtxPtr &c, const std::string &pid,
               std::function<Step(const Fields &records, const KeyExtras &)> next);

// The live test (admin_key_test.cpp).
struct TestResult {
    std::string status;  // valid | invalid | error
    int http_status = 0;
    std::string message;  // fixed per outcome: never text from the provider
    int64_t latency_ms = 0;
    std::string excerpt;  // what the provider said, through redact_excerpt()
};
TestResult classify(const HttpResult &h, std::string_view key);
// The test URL of `p` for a key with `endpoint`; "" and `why` when none.
std::string test_url(const Config &cfg, const Provider &p, const std::string &endpoint,
                     std::string *why);
// A live test of `key` against `url`, then `next` with the result.
Step run_key_test(const Provider &p, const std::string &url, std::shared_ptr<SecretString> key,
                  std::function<Step(const TestResult &)> next);

}  // namespace byok::admin::detail
