// SSH host-key pinning of execution servers (SPEC: servers): the one rule
// for comparing the pinned fingerprint with the one the server presents.
#pragma once

#include <string_view>

namespace byok {

// SHA-256 fingerprints compared without the "SHA256:" prefix and base64
// '=' padding, which tools print differently (ssh-keygen, libssh).
bool same_host_key(std::string_view pinned, std::string_view presented);

}  // namespace byok
