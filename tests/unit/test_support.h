// Helpers shared by the Criterion unit tests.
#pragma once

#include <openssl/evp.h>

#include <string>

#include "lib/catalog.h"
#include "lib/crypto.h"
#include "lib/gateway.h"
#include "lib/record.h"
#include "lib/util.h"

namespace byok::test {

// The one-key ring the unit tests seal with ("k1", bytes 0..31).
inline const KeyRing &test_ring() {
    static const KeyRing r =
        KeyRing::parse("k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", "t");
    return r;
}

// The built-in catalog, built once (a GatewayConfig holds views of it).
inline const Catalog &builtin_catalog() {
    static const Catalog c = Catalog::builtin();
    return c;
}

// A gateway configuration over the built-in catalog and test_ring(), with
// no system key.
inline GatewayConfig gateway_config() {
    GatewayConfig cfg;
    cfg.catalog = &builtin_catalog();
    cfg.ring = &test_ring();
    cfg.system_key = [](std::string_view) -> const SecretString * { return nullptr; };
    return cfg;
}

// Project "acme"'s OpenAI key record `id`, sealed with test_ring().
inline KeyRecord openai_key(const std::string &secret, const std::string &id, int weight = 1) {
    KeyRecord r;
    r.sealed = seal(test_ring(), secret, key_binding("acme", "openai", ""));
    r.id = id;
    r.weight = weight;
    r.key_hint = "sk-...";
    r.created_at = r.updated_at = "2026-11-22T04:31:00Z";
    return r;
}

// The message of the byok::Error that f() throws, or "<no error>".
template <class F>
std::string error_of(F f) {
    try {
        f();
    } catch (const Error &e) {
        return e.what();
    }
    return "<no error>";
}

// A version-1 record as the first release sealed it (AAD
// "byok/v1|<pid>|<subject>|<kid>", no bound fields), written out here with
// OpenSSL directly so the compatibility check does not trust seal().
inline Sealed seal_v1(const KeyRing &ring, std::string_view plaintext, std::string_view pid,
                      std::string_view subject) {
    const MasterKey &mk = ring.active();
    Sealed s;
    s.v = 1;
    s.kid = mk.kid;
    s.salt = random_bytes(16);
    s.nonce = random_bytes(12);
    uint8_t dk[32];
    hkdf_sha256(mk.key.data(), mk.key.size(), s.salt.data(), s.salt.size(), "byok provider key v1",
                dk);
    std::string aad = "byok/v1|" + std::string(pid) + "|" + std::string(subject) + "|" + mk.kid;
    s.ct.resize(plaintext.size() + 16);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, total = 0;
    EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, dk, s.nonce.data());
    EVP_EncryptUpdate(ctx, nullptr, &len, reinterpret_cast<const uint8_t *>(aad.data()),
                      static_cast<int>(aad.size()));
    EVP_EncryptUpdate(ctx, s.ct.data(), &len, reinterpret_cast<const uint8_t *>(plaintext.data()),
                      static_cast<int>(plaintext.size()));
    total = len;
    EVP_EncryptFinal_ex(ctx, s.ct.data() + total, &len);
    total += len;
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, s.ct.data() + total);
    EVP_CIPHER_CTX_free(ctx);
    wipe(dk, sizeof dk);
    return s;
}

}  // namespace byok::test
