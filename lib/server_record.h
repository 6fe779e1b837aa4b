// Execution-server records (SPEC §8): the stored JSON codec, the API view,
// and the sealing of a server's connection secrets (AAD subject
// "server:<sid>" plus every connection field that decides where they are
// sent: ServerBinding).
//
// Stored record (JSON in byok:{<pid>}:servers, field = server id):
//   v, id, name, server_type, connection_config (non-secret fields only),
//   secrets {v, kid, salt, nonce, ct, fields} (absent when none; the
//   plaintext is the JSON object of the secret fields), workspace_path,
//   is_default, is_active, created_at, updated_at, last_tested_at,
//   test_status, test_message (fixed per outcome), test_http_status,
//   test_excerpt (what the target said, redacted), config_rev (random;
//   changes whenever what a connection test depends on changes).
#pragma once

#include <array>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "lib/admin_internal.h"

namespace byok::admin::detail {

inline constexpr const char *kServerTypes[] = {"ssh", "local", "docker", "kubernetes"};
inline constexpr const char *kSecretFields[] = {"private_key", "password", "token", "kubeconfig"};
// The fields that decide where a server's secret is sent (and to whom it
// is proven: the pinned host key). A PATCH changing one needs the secret
// again (or an admin token), and all are bound into the secrets' AAD.
inline constexpr const char *kTargetFields[] = {
    "host", "port", "username", "host_key_fingerprint", "endpoint", "api_url"};

using SecretMap = std::map<std::string, SecretString, std::less<>>;
using SecretsPtr = std::shared_ptr<const SecretMap>;
using Names = std::set<std::string, std::less<>>;

struct ServerRecord {
    std::string id, name, type;
    json config = json::object();  // non-secret connection fields
    std::optional<Sealed> secrets;
    std::vector<std::string> secret_fields;  // names of the sealed fields
    std::string workspace_path;
    bool is_default = false, is_active = true;
    std::string created_at, updated_at, last_tested_at, test_status, test_message;
    int test_http_status = 0;
    std::string test_excerpt;
    std::string config_rev;
};

bool known_type(std::string_view t);
bool is_secret_field(std::string_view f);
std::string new_rev();  // a fresh config_rev
Step server_missing();  // 404 server_not_found

// `sid` is the hash field the record is stored under: the record's id.
// Throws Error naming the bad field.
ServerRecord parse_server(std::string_view raw, std::string_view sid);
std::string serialize_server(const ServerRecord &r);
json server_view(const ServerRecord &r);
json or_null(const std::string &s);  // "" → null  // the API's view: secrets only as names

// Wipes every string in `j` (the parser's copies of secrets).
void wipe_strings(json &j);
Sealed seal_secrets(const KeyRing &ring, const Binding &b, const SecretMap &m);
SecretMap open_secrets(const KeyRing &ring, const Binding &b, const Sealed &sealed);
Names names_of(const SecretMap &m);

// What a server's secrets are bound to (record version 2): the project, the
// subject "server:<sid>", the type and every connection field that decides
// where the secrets are sent. A record retargeted straight in Redis (another
// host, port, user, endpoint or an emptied pinned fingerprint) no longer
// decrypts. Owns the strings its Binding views.
class ServerBinding {
  public:
    ServerBinding(std::string_view pid, std::string_view sid, std::string_view type, const json &cc)
        : pid_(pid), subject_(server_subject(sid)), type_(type) {
        b_.pid = pid_;
        b_.subject = subject_;
        b_.bind("server_type", type_);
        for (size_t i = 0; i < values_.size(); i++) {
            auto it = cc.find(kTargetFields[i]);
            if (it != cc.end() && it->is_string())
                values_[i] = it->get<std::string>();
            else if (it != cc.end() && it->is_number_integer())
                values_[i] = std::to_string(it->get<long long>());
            b_.bind(kTargetFields[i], values_[i]);
        }
    }
    ServerBinding(const ServerRecord &r, std::string_view pid)
        : ServerBinding(pid, r.id, r.type, r.config) {}
    ServerBinding(const ServerBinding &) = delete;
    ServerBinding &operator=(const ServerBinding &) = delete;
    const Binding &get() const { return b_; }
    bool same_target(const ServerBinding &o) const {
        return type_ == o.type_ && values_ == o.values_;
    }

  private:
    std::string pid_, subject_, type_;
    std::array<std::string, std::size(kTargetFields)> values_;
    Binding b_;
};

}  // namespace byok::admin::detail
