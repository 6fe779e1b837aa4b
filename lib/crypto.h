// Master key ring and the record encryption scheme of SPEC §6:
// data key = HKDF-SHA256(master[kid], salt, "byok provider key v1"),
// AES-256-GCM with a random 96-bit nonce, AAD "byok/v1|<pid>|<subject>|<kid>"
// where subject is the provider id or "server:<sid>".
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "lib/util.h"

namespace byok {

struct MasterKey {
    std::string kid;
    std::array<uint8_t, 32> key{};
};

class KeyRing {
  public:
    // Reads `<kid> <base64 of 32 bytes>` lines (blank lines and '#' comments)
    // with read_secret_file's rules (mode & 077 == 0, owned by root or one of
    // `owners`). Refuses empty or malformed files; errors name the path and
    // the line number, never the key material.
    static KeyRing load_file(const std::string &path, const std::vector<uint32_t> &owners = {});
    // Same rules without the file checks; `origin` names the source in errors.
    static KeyRing parse(std::string_view text, const std::string &origin);

    KeyRing() = default;
    KeyRing(KeyRing &&) noexcept = default;
    KeyRing &operator=(KeyRing &&) noexcept = default;
    ~KeyRing();

    const MasterKey &active() const;                    // first line; throws if empty
    const MasterKey *find(std::string_view kid) const;  // nullptr when unknown
    const std::vector<MasterKey> &keys() const { return keys_; }

  private:
    std::vector<MasterKey> keys_;
};

// Encrypted blob as stored in a record. `ct` is ciphertext || 16-byte tag.
struct Sealed {
    std::string kid;
    Bytes salt;   // 16 bytes
    Bytes nonce;  // 12 bytes
    Bytes ct;
};

std::string record_aad(std::string_view pid, std::string_view subject, std::string_view kid);
inline std::string server_subject(std::string_view sid) { return "server:" + std::string(sid); }

// Encrypts under the ring's active key with fresh salt and nonce.
Sealed seal(const KeyRing &ring, std::string_view plaintext, std::string_view pid,
            std::string_view subject);

// RFC 5869 HKDF-SHA256 with a 32-byte output (the data-key derivation).
void hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                 std::string_view info, uint8_t out[32]);

// SHA-256 with the digest fetched once per process (gateway-key lookups).
void sha256(std::string_view data, uint8_t out[32]);

// Decrypts with the key named by sealed.kid. Throws Error("unknown master key
// id '<kid>'") or Error("record does not decrypt (tampered, moved or wrong
// key)"); never returns partial plaintext.
SecretString open_sealed(const KeyRing &ring, const Sealed &sealed, std::string_view pid,
                         std::string_view subject);

// Same, with views into already-decoded binary fields (hot path: no copies).
SecretString open_sealed(const KeyRing &ring, std::string_view kid, const uint8_t *salt,
                         size_t salt_len, const uint8_t *nonce, size_t nonce_len, const uint8_t *ct,
                         size_t ct_len, std::string_view pid, std::string_view subject);

}  // namespace byok
