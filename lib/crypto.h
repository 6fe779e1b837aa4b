// Master key ring and the record encryption scheme of SPEC §6:
// data key = HKDF-SHA256(master[kid], salt, "byok provider key v1"),
// AES-256-GCM with a random 96-bit nonce, and associated data that binds the
// record to its project, its subject (provider id or "server:<sid>"), the
// master key id and — from version 2 on — every field that decides where the
// secret is sent (see record_aad).
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
// `v` is the format version: it decides the associated data (record_aad).
struct Sealed {
    int v = 2;
    std::string kid;
    Bytes salt;   // 16 bytes
    Bytes nonce;  // 12 bytes
    Bytes ct;
};

// Version written by seal(); versions 1 and 2 are read.
constexpr int kSealVersion = 2;

// A field that decides where a sealed secret is sent (a custom endpoint, a
// server's host...). Version-2 records bind these into the associated data,
// so a record retargeted by a write straight into Redis no longer decrypts.
struct BoundField {
    std::string_view name, value;
};

// What a sealed record is bound to. Views: the strings must outlive it.
struct Binding {
    std::string_view pid, subject;
    std::array<BoundField, 8> fields{};
    size_t count = 0;
    Binding &bind(std::string_view name, std::string_view value);  // throws past 8 fields
};

// The associated data of a record of version `v`:
//   v1: "byok/v1|<pid>|<subject>|<kid>" (bound fields ignored)
//   v2: "byok/v2" then "|<decimal length>:<bytes>" for pid, subject, kid and
//       each bound field's name and value in order — length-prefixed, so no
//       value can forge a separator.
// seal() and open_sealed() feed exactly these bytes to GCM, piece by piece.
std::string record_aad(int v, const Binding &b, std::string_view kid);
inline std::string server_subject(std::string_view sid) { return "server:" + std::string(sid); }

// Encrypts under the ring's active key with fresh salt and nonce, version
// kSealVersion.
Sealed seal(const KeyRing &ring, std::string_view plaintext, const Binding &b);

// RFC 5869 HKDF-SHA256 with a 32-byte output (the data-key derivation).
void hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                 std::string_view info, uint8_t out[32]);

// SHA-256 with the digest fetched once per process (gateway-key lookups).
void sha256(std::string_view data, uint8_t out[32]);
std::string sha256_hex(std::string_view data);  // lower-case hex, 64 chars

// Decrypts with the key named by sealed.kid and the associated data of
// sealed.v. Throws Error("unknown master key id '<kid>'") or Error("record
// does not decrypt (tampered, moved or wrong key)"); never returns partial
// plaintext.
SecretString open_sealed(const KeyRing &ring, const Sealed &sealed, const Binding &b);

// Same, with views into already-decoded binary fields (hot path: no copies,
// no allocation for the associated data).
SecretString open_sealed(const KeyRing &ring, int v, std::string_view kid, const uint8_t *salt,
                         size_t salt_len, const uint8_t *nonce, size_t nonce_len, const uint8_t *ct,
                         size_t ct_len, const Binding &b);

}  // namespace byok
