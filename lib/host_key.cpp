#include "lib/host_key.h"

namespace byok {

namespace {

std::string_view bare_sha256(std::string_view fp) {
    if (fp.substr(0, 7) == "SHA256:") fp.remove_prefix(7);
    while (!fp.empty() && fp.back() == '=') fp.remove_suffix(1);
    return fp;
}

}  // namespace

bool same_host_key(std::string_view pinned, std::string_view presented) {
    return bare_sha256(pinned) == bare_sha256(presented);
}

}  // namespace byok
