// SHA256_Init/Update/Final are deprecated in OpenSSL 3 but kept: see sha256().
#define OPENSSL_SUPPRESS_DEPRECATED
#include "lib/crypto.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace byok {

namespace {

constexpr size_t kSaltLen = 16;
constexpr size_t kNonceLen = 12;
constexpr size_t kTagLen = 16;
constexpr char kHkdfInfo[] = "byok provider key v1";

bool valid_kid(std::string_view kid) {
    if (kid.empty() || kid.size() > 64) return false;
    for (char c : kid) {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

// Algorithms are fetched once per process: fetching is the expensive part of
// an EVP operation and decryption runs on the request path. HKDF is spelled
// out over a keyless HMAC-SHA256 template context (duplicated per use)
// because EVP_KDF "HKDF" looks the digest up by name on every call.
struct Algorithms {
    EVP_MAC *hmac = nullptr;
    EVP_MAC_CTX *hmac_sha256 = nullptr;  // template: digest set, no key
    EVP_CIPHER *gcm = nullptr;
    Algorithms() {
        hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
        gcm = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
        if (hmac != nullptr) hmac_sha256 = EVP_MAC_CTX_new(hmac);
        if (hmac_sha256 != nullptr) {
            char digest[] = "SHA256";
            OSSL_PARAM params[] = {
                OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                OSSL_PARAM_construct_end()};
            if (EVP_MAC_CTX_set_params(hmac_sha256, params) != 1) {
                EVP_MAC_CTX_free(hmac_sha256);
                hmac_sha256 = nullptr;
            }
        }
    }
    ~Algorithms() {
        EVP_MAC_CTX_free(hmac_sha256);
        EVP_MAC_free(hmac);
        EVP_CIPHER_free(gcm);
    }
};

const Algorithms &algorithms() {
    static const Algorithms algs;
    if (algs.hmac_sha256 == nullptr || algs.gcm == nullptr) {
        throw Error("OpenSSL lacks HMAC-SHA256 or AES-256-GCM");
    }
    return algs;
}

struct MacCtxFree {
    void operator()(EVP_MAC_CTX *c) const { EVP_MAC_CTX_free(c); }
};
struct CipherCtxFree {
    void operator()(EVP_CIPHER_CTX *c) const { EVP_CIPHER_CTX_free(c); }
};

// HMAC-SHA256(key, a || b) into out[32].
void hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *a, size_t a_len,
                 const uint8_t *b, size_t b_len, uint8_t out[32]) {
    std::unique_ptr<EVP_MAC_CTX, MacCtxFree> ctx(EVP_MAC_CTX_dup(algorithms().hmac_sha256));
    size_t len = 0;
    if (!ctx || EVP_MAC_init(ctx.get(), key, key_len, nullptr) != 1 ||
        EVP_MAC_update(ctx.get(), a, a_len) != 1 ||
        (b_len > 0 && EVP_MAC_update(ctx.get(), b, b_len) != 1) ||
        EVP_MAC_final(ctx.get(), out, &len, 32) != 1 || len != 32) {
        throw Error("HMAC-SHA256 failed");
    }
}

// Derived data key, wiped when it goes out of scope.
struct DataKey {
    uint8_t k[32];
    ~DataKey() { wipe(k, sizeof k); }
};

void derive(const MasterKey &mk, const uint8_t *salt, size_t salt_len, DataKey &out) {
    hkdf_sha256(mk.key.data(), mk.key.size(), salt, salt_len, kHkdfInfo, out.k);
}

[[noreturn]] void fail_open() {
    throw Error("record does not decrypt (tampered, moved or wrong key)");
}

}  // namespace

void hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                 std::string_view info, uint8_t out[32]) {
    // RFC 5869 with L = 32: PRK = HMAC(salt, IKM); OKM = HMAC(PRK, info || 0x01).
    uint8_t prk[32];
    const uint8_t one = 0x01;
    std::string t(info);
    t.push_back(static_cast<char>(one));
    try {
        hmac_sha256(salt, salt_len, ikm, ikm_len, nullptr, 0, prk);
        hmac_sha256(prk, sizeof prk, reinterpret_cast<const uint8_t *>(t.data()), t.size(), nullptr,
                    0, out);
    } catch (...) {
        wipe(prk, sizeof prk);
        throw;
    }
    wipe(prk, sizeof prk);
}

void sha256(std::string_view data, uint8_t out[32]) {
    // The low-level calls on a stack context (issue 18): every hit hashes its
    // gateway key, and even a reused EVP context frees and allocates the
    // provider's state on each init, ~0.7k instructions over the hash itself.
    // SHA-256 is not a secret-keyed operation, so bypassing the provider
    // changes no security property; the context is wiped (it saw the key).
    SHA256_CTX c;
    if (SHA256_Init(&c) != 1 || SHA256_Update(&c, data.data(), data.size()) != 1 ||
        SHA256_Final(out, &c) != 1) {
        wipe(&c, sizeof c);
        throw Error("sha256 failed");
    }
    wipe(&c, sizeof c);
}

std::string sha256_hex(std::string_view data) {
    uint8_t md[32];
    sha256(data, md);
    return hex_encode(md, sizeof md);
}

KeyRing::~KeyRing() {
    for (auto &k : keys_) wipe(k.key.data(), k.key.size());
}

KeyRing KeyRing::parse(std::string_view text, const std::string &origin) {
    KeyRing ring;
    // Reserve up front: a reallocation would free key bytes without wiping them.
    ring.keys_.reserve(static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) + 1);
    size_t line_no = 0;
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t eol = text.find('\n', pos);
        if (eol == std::string_view::npos) eol = text.size();
        std::string_view line = text.substr(pos, eol - pos);
        pos = eol + 1;
        line_no++;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        size_t b = line.find_first_not_of(" \t");
        if (b == std::string_view::npos || line[b] == '#') continue;
        line = line.substr(b, line.find_last_not_of(" \t") - b + 1);

        std::string where = origin + ":" + std::to_string(line_no) + ": ";
        size_t sp = line.find_first_of(" \t");
        if (sp == std::string_view::npos) {
            throw Error(where + "expected '<kid> <base64 of 32 bytes>'");
        }
        std::string_view kid = line.substr(0, sp);
        std::string_view b64 = line.substr(line.find_first_not_of(" \t", sp));
        if (b64.find_first_of(" \t") != std::string_view::npos) {
            throw Error(where + "expected '<kid> <base64 of 32 bytes>'");
        }
        if (!valid_kid(kid)) {
            throw Error(where + "key id must match [A-Za-z0-9._-]{1,64}");
        }
        Bytes raw;
        try {
            raw = base64_decode(b64);
        } catch (const Error &) {
            throw Error(where + "expected '<kid> <base64 of 32 bytes>'");
        }
        if (raw.size() != 32) {
            wipe(raw.data(), raw.size());
            throw Error(where + "expected '<kid> <base64 of 32 bytes>'");
        }
        if (ring.find(kid) != nullptr) {
            wipe(raw.data(), raw.size());
            throw Error(where + "duplicate key id '" + std::string(kid) + "'");
        }
        ring.keys_.emplace_back();
        MasterKey &mk = ring.keys_.back();
        mk.kid = std::string(kid);
        std::memcpy(mk.key.data(), raw.data(), 32);
        wipe(raw.data(), raw.size());
    }
    if (ring.keys_.empty()) throw Error(origin + ": no master keys");
    return ring;
}

KeyRing KeyRing::load_file(const std::string &path, const std::vector<uint32_t> &owners) {
    SecretString text = read_secret_file(path, owners);
    return parse(text.view(), path);
}

const MasterKey &KeyRing::active() const {
    if (keys_.empty()) throw Error("master key ring is empty");
    return keys_.front();
}

const MasterKey *KeyRing::find(std::string_view kid) const {
    for (const auto &k : keys_) {
        if (k.kid == kid) return &k;
    }
    return nullptr;
}

Binding &Binding::bind(std::string_view name, std::string_view value) {
    if (count == fields.size()) throw Error("too many bound fields");
    fields[count++] = BoundField{name, value};
    return *this;
}

namespace {

// Calls `feed(piece)` with the associated data of version `v`, in order.
// No allocation: length prefixes are formatted into a stack buffer.
template <typename Feed>
void each_aad_piece(int v, const Binding &b, std::string_view kid, Feed &&feed) {
    if (v == 1) {
        feed("byok/v1|");
        feed(b.pid);
        feed("|");
        feed(b.subject);
        feed("|");
        feed(kid);
        return;
    }
    if (v != 2) throw Error("unsupported record version");
    auto item = [&](std::string_view s) {
        char len[24];
        int n = std::snprintf(len, sizeof len, "|%zu:", s.size());
        feed(std::string_view(len, static_cast<size_t>(n)));
        feed(s);
    };
    feed("byok/v2");
    item(b.pid);
    item(b.subject);
    item(kid);
    for (size_t i = 0; i < b.count; i++) {
        item(b.fields[i].name);
        item(b.fields[i].value);
    }
}

// Feeds the associated data to a GCM context; false on an OpenSSL error.
bool aad_update(EVP_CIPHER_CTX *ctx, bool encrypt, int v, const Binding &b, std::string_view kid) {
    bool ok = true;
    each_aad_piece(v, b, kid, [&](std::string_view piece) {
        if (!ok || piece.empty()) return;
        int len = 0;
        const auto *p = reinterpret_cast<const uint8_t *>(piece.data());
        int n = static_cast<int>(piece.size());
        ok = (encrypt ? EVP_EncryptUpdate(ctx, nullptr, &len, p, n)
                      : EVP_DecryptUpdate(ctx, nullptr, &len, p, n)) == 1;
    });
    return ok;
}

}  // namespace

std::string record_aad(int v, const Binding &b, std::string_view kid) {
    std::string aad;
    each_aad_piece(v, b, kid, [&](std::string_view piece) { aad.append(piece); });
    return aad;
}

Sealed seal(const KeyRing &ring, std::string_view plaintext, const Binding &b) {
    const MasterKey &mk = ring.active();
    Sealed s;
    s.v = kSealVersion;
    s.kid = mk.kid;
    s.salt = random_bytes(kSaltLen);
    s.nonce = random_bytes(kNonceLen);
    DataKey dk;
    derive(mk, s.salt.data(), s.salt.size(), dk);

    std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
    if (!ctx) throw Error("cipher context allocation failed");
    s.ct.resize(plaintext.size() + kTagLen);
    int len = 0;
    if (EVP_EncryptInit_ex2(ctx.get(), algorithms().gcm, dk.k, s.nonce.data(), nullptr) != 1 ||
        !aad_update(ctx.get(), true, s.v, b, mk.kid) ||
        EVP_EncryptUpdate(ctx.get(), s.ct.data(), &len,
                          reinterpret_cast<const uint8_t *>(plaintext.data()),
                          static_cast<int>(plaintext.size())) != 1) {
        throw Error("encryption failed");
    }
    int total = len;
    if (EVP_EncryptFinal_ex(ctx.get(), s.ct.data() + total, &len) != 1) {
        throw Error("encryption failed");
    }
    total += len;
    if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagLen, s.ct.data() + total) != 1) {
        throw Error("encryption failed");
    }
    return s;
}

SecretString open_sealed(const KeyRing &ring, int v, std::string_view kid, const uint8_t *salt,
                         size_t salt_len, const uint8_t *nonce, size_t nonce_len, const uint8_t *ct,
                         size_t ct_len, const Binding &b) {
    const MasterKey *mk = ring.find(kid);
    if (mk == nullptr) throw Error("unknown master key id '" + one_line(kid, 64) + "'");
    if (salt_len != kSaltLen || nonce_len != kNonceLen || ct_len < kTagLen || (v != 1 && v != 2))
        fail_open();

    DataKey dk;
    derive(*mk, salt, salt_len, dk);
    size_t pt_len = ct_len - kTagLen;

    SecretString out;
    std::string &pt = out.mutable_str();
    pt.resize(pt_len + 16);  // room for the final block; GCM writes none
    std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
    if (!ctx) throw Error("cipher context allocation failed");
    int len = 0;
    uint8_t *p = reinterpret_cast<uint8_t *>(&pt[0]);
    if (EVP_DecryptInit_ex2(ctx.get(), algorithms().gcm, dk.k, nonce, nullptr) != 1 ||
        !aad_update(ctx.get(), false, v, b, kid) ||
        EVP_DecryptUpdate(ctx.get(), p, &len, ct, static_cast<int>(pt_len)) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagLen,
                            const_cast<uint8_t *>(ct + pt_len)) != 1) {
        fail_open();  // `out` wipes whatever was written
    }
    int total = len;
    if (EVP_DecryptFinal_ex(ctx.get(), p + total, &len) != 1) fail_open();
    total += len;
    // Shrink without reallocating; clear() later wipes the whole capacity.
    pt.resize(static_cast<size_t>(total));
    return out;
}

SecretString open_sealed(const KeyRing &ring, const Sealed &sealed, const Binding &b) {
    return open_sealed(ring, sealed.v, sealed.kid, sealed.salt.data(), sealed.salt.size(),
                       sealed.nonce.data(), sealed.nonce.size(), sealed.ct.data(), sealed.ct.size(),
                       b);
}

}  // namespace byok
