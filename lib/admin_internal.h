// Shared pieces of the admin API implementation (lib/admin_*.cpp only).
#pragma once

#include <initializer_list>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/admin.h"
#include "lib/catalog.h"
#include "lib/metering.h"
#include "lib/record.h"
#include "lib/util.h"

namespace byok::admin::detail {

using nlohmann::json;

// Scope a gateway key may carry: mint and revoke the project's gateway keys.
inline constexpr const char *kScopeManageKeys = "manage_keys";

struct Principal {
    bool admin = false;
    std::string project;  // the project a gateway-key principal is bound to
    std::string key_id;   // the gateway key's id (self-service)
    std::string actor;    // "admin:<8 hex>" or "project:<pid>" (audit trail)
    // The gateway key's scopes as stored in its record ("scopes", space
    // separated); empty for the admin token and for keys minted without any.
    std::vector<std::string> scopes;
    bool has_scope(std::string_view s) const {
        for (const auto &x : scopes)
            if (x == s) return true;
        return false;
    }
};

// What every handler and continuation needs, owned: the Request's views die
// after the first call. Never holds the request body (it may carry a key).
struct Ctx {
    const Config *cfg = nullptr;  // must outlive the whole step chain
    Principal who;
    std::string method;
    std::vector<std::string> seg;  // path segments
    std::map<std::string, std::string, std::less<>> query;
    int64_t now = 0;
    std::string at;  // iso8601_utc(now)
};
using CtxPtr = std::shared_ptr<const Ctx>;

// Lua scripts return {code, payload...}; the codes shared by all scripts:
enum ScriptCode : long long {
    kOk = 0,
    kCreated = 1,
    kNoProject = 2,
    kExists = 3,
    kNotFound = 4,
    kTier = 5,
    kConflict = 6,
    kMalformed = 7,
};

// The scripts (admin_scripts.cpp); contracts are documented there. Mutation
// scripts share KEYS[1] = audit stream, ARGV[1..4] = actor, at, invalidate
// channel, project id.
extern const std::string kScriptProjectCreate;
extern const std::string kScriptProjectUpdate;
extern const std::string kScriptProjectDelete;
extern const std::string kScriptApiKeyCreate;
extern const std::string kScriptApiKeyRevoke;
extern const std::string kScriptKeySet;
extern const std::string kScriptKeyHealth;
extern const std::string kScriptRotate;
extern const std::string kScriptServerSet;
extern const std::string kScriptServerDelete;
extern const std::string kScriptServerTestStore;
extern const std::string kScriptReadProject;
extern const std::string kScriptMultiHgetall;
extern const std::string kScriptPointer;
extern const std::string kScriptPointerCreate;
// A script body above with its prelude (audit(), pointer()) for the mode.
std::string mutation_script(const std::string &body, bool cluster);

// ---- responses ----------------------------------------------------------
Step respond(int status, const json &body);
Step fail(int status, std::string_view code, std::string_view message);
std::string dump(const json &j);  // never throws on invalid UTF-8
// The Ops-Center rule: provider keys and execution servers (BYOK features)
// need the starter tier or above.
Step tier_refused();
Step project_not_found();  // 404 project_not_found: absent, or not the caller's

// A RedisCall whose continuation answers 503 on Unavailable, 500 on a Redis
// error and 500 when `next` throws.
Step redis(std::vector<std::string> argv, std::function<Step(const Reply &)> next);
// Argv for a mutation script: EVAL script N audit keys... actor at chan pid
// args... — the audit stream (KEYS[1]) is the global one, or in cluster mode
// the project's own.
std::vector<std::string> mutation_argv(const Layout &l, const std::string &body,
                                       std::string_view pid, std::string_view actor,
                                       std::string_view at, std::string_view channel,
                                       std::vector<std::string> keys,
                                       std::vector<std::string> args);
std::vector<std::string> mutation(const Ctx &c, const std::string &script, std::string_view pid,
                                  std::vector<std::string> keys, std::vector<std::string> args);
// Runs a mutation() argv, then in cluster mode its follow-ups — the
// gateway-key hashes it changed (each only if it names the project), then
// the copies of its audit entries to the global stream — and then `next`
// with the script's own reply. The script's write is authoritative and
// leaves the store fail-closed: a follow-up that fails does not change the
// answer (retrying a revoke repeats them; the global audit copy is lost).
Step mutate(const Ctx &c, std::string_view pid, std::vector<std::string> argv,
            std::function<Step(const Reply &)> next);
// One command whose answer does not matter (a follow-up), then `done`.
Step best_effort(std::vector<std::string> argv, std::function<Step()> done);
// The audit entry's fields, as the scripts' audit() writes them.
std::vector<std::string> audit_fields(std::string_view actor, std::string_view action,
                                      std::string_view pid, std::string_view target,
                                      std::string_view at);
// XADD of an entry to the global stream; `project_entry` (may be "") names
// the id of the same entry in the project's stream.
std::vector<std::string> global_audit_copy(const Layout &l, std::vector<std::string> fields,
                                           std::string_view project_entry);
// HGETALL of each key, answered as one array of their replies: one script
// in standalone mode, one HGETALL after the other in cluster mode (the keys
// are in different slots). `next` sees an empty array of hashes for keys
// that are absent.
Step read_hashes(std::vector<std::string> keys, bool cluster,
                 std::function<Step(const Reply &)> next);
std::vector<std::string> eval(const std::string &script, std::vector<std::string> keys,
                              std::vector<std::string> args);
// Wraps a continuation so no exception escapes.
Step guarded(const std::function<Step()> &fn);

// ---- reply decoding -----------------------------------------------------
using Fields = FieldMap;                             // to_fields(): lib/redis_reply.h
long long script_code(const Reply &r);               // element 0 of a script reply; throws Error
const Reply &script_item(const Reply &r, size_t i);  // throws Error when absent

// ---- strict JSON input --------------------------------------------------
enum class Kind { String, Bool, Int, Object, Array };
struct FieldSpec {
    std::string_view name;
    Kind kind;
    bool required;
};
// Unknown field → 422, wrong type → 400, missing required field → 422.
std::optional<Step> check_fields(const json &body, std::initializer_list<FieldSpec> spec);
// Optional string field with a length cap → 422 when too long / empty.
std::optional<Step> check_text(const json &body, std::string_view name, size_t max_len,
                               bool allow_empty);

// ---- misc ----------------------------------------------------------------
std::string new_id(char first);  // e.g. "p3f9a0c12b4d7": valid_id()
std::string base64url(const Bytes &b);
std::string fetch_query(const Ctx &c, std::string_view name);  // "" when absent
bool has_query(const Ctx &c, std::string_view name);
std::string endpoint_problem(const Config &cfg, std::string_view endpoint, std::string *normalized);
json masked_key(const Provider &p, const KeyRecord &r);
// True when `host` (URL host, any case) is listed in byok_allow_endpoint.
bool endpoint_host_allowed(const Config &cfg, std::string_view host);
// Execution-server record (admin_servers.cpp): re-seals its secrets under
// the active master key. nullopt = nothing to do (no secrets, or already
// under the active kid); throws Error when the record is malformed, names an
// unknown kid or does not decrypt.
// The master-key id of a server record's sealed secrets, "" when it has
// none; throws Error when the record is malformed.
std::string server_record_kid(std::string_view sid, std::string_view raw);
std::optional<std::string> reseal_server_record(const KeyRing &ring, std::string_view pid,
                                                std::string_view sid, std::string_view raw);
// The decrypted `secrets` of an execution-server record (JSON object text),
// opened with the record's own binding. Throws Error.
SecretString open_server_record(const KeyRing &ring, std::string_view pid, std::string_view sid,
                                std::string_view raw);

// ---- handlers -----------------------------------------------------------
Step providers_list(const CtxPtr &c);
Step projects_create(const CtxPtr &c, json &body);
Step projects_list(const CtxPtr &c);
Step project_get(const CtxPtr &c, const std::string &pid);
Step project_patch(const CtxPtr &c, const std::string &pid, json &body);
Step project_delete(const CtxPtr &c, const std::string &pid);
Step apikeys_create(const CtxPtr &c, const std::string &pid, json &body);
Step apikeys_list(const CtxPtr &c, const std::string &pid);
Step apikey_revoke(const CtxPtr &c, const std::string &pid, const std::string &id);
Step keys_list(const CtxPtr &c, const std::string &pid);
Step keyring_get(const CtxPtr &c);
Step key_get(const CtxPtr &c, const std::string &pid, const Provider &p);
Step key_put(const CtxPtr &c, const std::string &pid, const Provider &p, json &body);
Step key_add(const CtxPtr &c, const std::string &pid, const Provider &p, json &body);
// key_id "" = every key of the provider (the single-key routes act on the set).
Step key_patch(const CtxPtr &c, const std::string &pid, const Provider &p, json &body,
               const std::string &key_id);
Step key_delete(const CtxPtr &c, const std::string &pid, const Provider &p,
                const std::string &key_id);
Step key_test(const CtxPtr &c, const std::string &pid, const Provider &p, json &body,
              const std::string &key_id);
Step project_stats(const CtxPtr &c, const std::string &pid);
Step servers_list(const CtxPtr &c, const std::string &pid);
Step server_default(const CtxPtr &c, const std::string &pid);
Step server_get(const CtxPtr &c, const std::string &pid, const std::string &sid);
Step server_create(const CtxPtr &c, const std::string &pid, json &body);
Step server_put(const CtxPtr &c, const std::string &pid, const std::string &sid, json &body);
Step server_patch(const CtxPtr &c, const std::string &pid, const std::string &sid, json &body);
Step server_delete(const CtxPtr &c, const std::string &pid, const std::string &sid);
Step server_test(const CtxPtr &c, const std::string &pid, const std::string &sid, json &body);
Step audit_list(const CtxPtr &c);
Step whoami(const CtxPtr &c);
Step rotate(const CtxPtr &c, json &body);

// ---- usage (admin_usage.cpp) ----------------------------------------------
struct UsageTotals {
    int64_t requests = 0, input = 0, output = 0, cached = 0, cost_micro = 0, unknown = 0;
    void add(Metric m, int64_t n);
    json to_json() const;  // requests, input_tokens, ..., cost_usd
};
Step project_usage(const CtxPtr &c, const std::string &pid);
Step usage_all(const CtxPtr &c);
// The token/cost counter keys of the last `days` days (today first), and
// the stats summary of their HGETALL replies: usage_30d and savings_30d.
std::vector<std::string> meter_keys(const Ctx &c, const std::string &pid, int days);
void summarize_30d(const std::vector<const Reply *> &days, json *usage, json *savings);

}  // namespace byok::admin::detail
