// Execution-server configuration rules (SPEC §8): the per-type fields of
// connection_config, the secrets each auth method uses, the body of POST /
// PUT (Draft) and the merge of a PATCH into a stored record.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "lib/server_record.h"

namespace byok::admin::detail {

inline constexpr size_t kMaxPath = 4096;

std::string cc_field(std::string_view f);                     // "field 'connection_config.<f>'"
Step invalid(const std::string &what, std::string_view why);  // 422 invalid_value

// Moves the secret fields of an input connection_config into wiped memory
// (also when the request fails later) and scrubs the parser's copies.
std::optional<Step> take_secrets(json &body, SecretMap &out);
// Validates the non-secret fields of `cc` (normalizing them in place) and
// the secrets given for `type`; only fields that are present.
std::optional<Step> check_config(const Config &cfg, std::string_view type, json &cc,
                                 const SecretMap &secrets);
void fill_defaults(std::string_view type, json &cc);
std::string cc_string(const json &cc, const char *name);  // "" when absent or not a string
// The secret fields the final configuration uses.
Names wanted_secrets(std::string_view type, const json &cc, const Names &available);
// Secrets given in the request that the auth method does not use.
std::optional<Step> check_unused(std::string_view type, const json &cc, const SecretMap &given);
// Required fields once everything is merged.
std::optional<Step> check_complete(std::string_view type, const json &cc, const Names &secrets,
                                   const std::string &workspace);
std::optional<Step> check_type(const json &body);
// "SHA256:" + unpadded base64 of 32 bytes (43 chars; a trailing '=' is
// accepted and dropped). Fills `norm`.
bool valid_fingerprint(std::string_view fp, std::string *norm);

// Validated body of POST / PUT.
struct Draft {
    std::string name, type, workspace_path;
    json config = json::object();
    std::optional<bool> is_default, is_active;
    std::optional<Sealed> sealed;
    std::vector<std::string> secret_fields;
};

std::optional<Step> read_draft(const CtxPtr &c, const std::string &pid, const std::string &sid,
                               json &body, Draft &d);

struct Patch {
    std::optional<std::string> name, type, workspace_path;
    std::optional<json> config;  // non-secret fields given
    std::optional<bool> is_default, is_active;
    std::shared_ptr<SecretMap> secrets = std::make_shared<SecretMap>();
};

// The stored record `old` with the PATCH `p` applied, or the error to send.
std::variant<ServerRecord, Step> apply_patch(const Config &cfg, const std::string &pid,
                                             const std::string &sid, const std::string &at,
                                             bool admin, const Patch &p, const std::string &old);

}  // namespace byok::admin::detail
