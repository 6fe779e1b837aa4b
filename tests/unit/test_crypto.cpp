#include <criterion/criterion.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <string>

#include "lib/crypto.h"
#include "tests/unit/test_support.h"

using namespace byok;

namespace {

using byok::test::error_of;

bool contains(const std::string &s, const std::string &part) {
    return s.find(part) != std::string::npos;
}

// Two keys: k2 active, k1 older but still able to decrypt.
const char kRingText[] =
    "# master keys\n"
    "k2 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    "\n"
    "k1 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n";

KeyRing ring() { return KeyRing::parse(kRingText, "test"); }

std::string temp_file(const std::string &name, const std::string &content, mode_t mode) {
    std::string path = "/tmp/byok-unit-" + std::to_string(getpid()) + "-" + name;
    std::ofstream(path) << content;
    chmod(path.c_str(), mode);
    return path;
}

}  // namespace

Test(crypto, round_trip) {
    KeyRing r = ring();
    Sealed s = seal(r, "sk-test-1234567890", Binding{"acme", "openai"});
    cr_assert_eq(s.kid, "k2");
    cr_assert_eq(s.salt.size(), 16u);
    cr_assert_eq(s.nonce.size(), 12u);
    cr_assert_eq(s.ct.size(), 18u + 16u);
    cr_assert_eq(open_sealed(r, s, Binding{"acme", "openai"}).view(), "sk-test-1234567890");
    // Empty plaintext still authenticates.
    Sealed e = seal(r, "", Binding{"acme", "openai"});
    cr_assert(open_sealed(r, e, Binding{"acme", "openai"}).empty());
}

Test(crypto, aad_format) {
    cr_assert_eq(record_aad(1, Binding{"acme", "openai"}, "k1"), "byok/v1|acme|openai|k1");
    cr_assert_eq(record_aad(1, Binding{"acme", server_subject("s1")}, "k1"),
                 "byok/v1|acme|server:s1|k1");
    // v1 ignores bound fields: that is the hole version 2 closes.
    Binding b{"acme", "custom"};
    b.bind("endpoint", "https://x.example");
    cr_assert_eq(record_aad(1, b, "k1"), "byok/v1|acme|custom|k1");
}

Test(crypto, i10_08_v2_aad_is_length_prefixed_and_binds_target_fields) {
    Binding b{"acme", "custom"};
    b.bind("endpoint", "https://x.example/v1");
    cr_assert_eq(record_aad(2, b, "k1"),
                 "byok/v2|4:acme|6:custom|2:k1|8:endpoint|20:https://x.example/v1");
    // Separators inside values cannot make two bindings collide.
    Binding a1{"a|1", "b"}, a2{"a", "1|b"};
    cr_assert_neq(record_aad(2, a1, "k"), record_aad(2, a2, "k"));
    Binding e1{"p", "s"}, e2{"p", "s"};
    e1.bind("x", "1|2:y");
    e2.bind("x", "1").bind("y", "");
    cr_assert_neq(record_aad(2, e1, "k"), record_aad(2, e2, "k"));
}

Test(crypto, i10_08_changed_target_field_does_not_decrypt) {
    KeyRing r = ring();
    Binding good{"acme", "custom"};
    good.bind("endpoint", "https://llm.example/v1");
    Sealed s = seal(r, "sk-custom-secret-1234", good);
    cr_assert_eq(s.v, 2);
    cr_assert_eq(open_sealed(r, s, good).view(), "sk-custom-secret-1234");
    Binding moved{"acme", "custom"};
    moved.bind("endpoint", "https://attacker.example/v1");
    cr_assert_eq(error_of([&] { open_sealed(r, s, moved); }),
                 "record does not decrypt (tampered, moved or wrong key)");
    // Claiming version 1 (whose AAD ignores the endpoint) does not help.
    Sealed downgraded = s;
    downgraded.v = 1;
    cr_assert_eq(error_of([&] { open_sealed(r, downgraded, moved); }),
                 "record does not decrypt (tampered, moved or wrong key)");
}

Test(crypto, i10_08_v1_records_still_decrypt) {
    KeyRing r = ring();
    Sealed old = byok::test::seal_v1(r, "sk-from-the-first-release", "acme", "openai");
    Binding b{"acme", "openai"};
    b.bind("endpoint", "");
    cr_assert_eq(open_sealed(r, old, b).view(), "sk-from-the-first-release");
    cr_assert_eq(error_of([&] {
                     open_sealed(r, old, Binding{"acme", "anthropic"});
                 }),
                 "record does not decrypt (tampered, moved or wrong key)");
}

Test(crypto, ciphertext_is_not_plaintext) {
    KeyRing r = ring();
    Sealed s = seal(r, "sk-plaintext-marker", Binding{"acme", "openai"});
    std::string ct(s.ct.begin(), s.ct.end());
    cr_assert_not(contains(ct, "plaintext-marker"));
}

Test(crypto, moved_record_does_not_decrypt) {
    KeyRing r = ring();
    Sealed s = seal(r, "sk-test-1234567890", Binding{"acme", "openai"});
    const std::string msg = "record does not decrypt (tampered, moved or wrong key)";
    cr_assert_eq(error_of([&] { open_sealed(r, s, Binding{"other", "openai"}); }), msg);
    cr_assert_eq(error_of([&] { open_sealed(r, s, Binding{"acme", "anthropic"}); }), msg);
    cr_assert_eq(error_of([&] {
                     open_sealed(r, s, Binding{"acme", server_subject("openai")});
                 }),
                 msg);
    Sealed srv = seal(r, "ssh-password", Binding{"acme", server_subject("s1")});
    cr_assert_eq(open_sealed(r, srv, Binding{"acme", server_subject("s1")}).view(), "ssh-password");
    cr_assert_eq(error_of([&] {
                     open_sealed(r, srv, Binding{"acme", server_subject("s2")});
                 }),
                 msg);
}

Test(crypto, every_flipped_byte_fails) {
    KeyRing r = ring();
    Sealed s = seal(r, "sk-test-1234567890", Binding{"acme", "openai"});
    const std::string msg = "record does not decrypt (tampered, moved or wrong key)";
    for (Bytes Sealed::*field : {&Sealed::salt, &Sealed::nonce, &Sealed::ct}) {
        for (size_t i = 0; i < (s.*field).size(); i++) {
            for (uint8_t mask : {0x01, 0x80}) {
                Sealed t = s;
                (t.*field)[i] ^= mask;
                cr_assert_eq(error_of([&] {
                                 open_sealed(r, t, Binding{"acme", "openai"});
                             }),
                             msg, "byte %zu mask %u", i, mask);
            }
        }
    }
    // Truncated or extended fields fail too.
    Sealed t = s;
    t.ct.pop_back();
    cr_assert_eq(error_of([&] { open_sealed(r, t, Binding{"acme", "openai"}); }), msg);
    t = s;
    t.ct.push_back(0);
    cr_assert_eq(error_of([&] { open_sealed(r, t, Binding{"acme", "openai"}); }), msg);
    t = s;
    t.nonce.pop_back();
    cr_assert_eq(error_of([&] { open_sealed(r, t, Binding{"acme", "openai"}); }), msg);
    t = s;
    t.ct.resize(15);
    cr_assert_eq(error_of([&] { open_sealed(r, t, Binding{"acme", "openai"}); }), msg);
}

Test(crypto, kid_is_bound) {
    KeyRing r = ring();
    Sealed s = seal(r, "sk-test-1234567890", Binding{"acme", "openai"});
    s.kid = "k1";  // known key, but not the one that sealed it
    cr_assert_eq(error_of([&] {
                     open_sealed(r, s, Binding{"acme", "openai"});
                 }),
                 "record does not decrypt (tampered, moved or wrong key)");
}

Test(crypto, unknown_kid_is_a_clear_error) {
    KeyRing r = ring();
    Sealed s = seal(r, "sk-test-1234567890", Binding{"acme", "openai"});
    s.kid = "k9";
    cr_assert_eq(error_of([&] {
                     open_sealed(r, s, Binding{"acme", "openai"});
                 }),
                 "unknown master key id 'k9'");
}

Test(crypto, older_key_still_decrypts) {
    KeyRing only_k1 = KeyRing::parse("k1 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n", "old");
    Sealed s = seal(only_k1, "sk-old", Binding{"acme", "openai"});
    cr_assert_eq(s.kid, "k1");
    KeyRing r = ring();
    cr_assert_eq(r.active().kid, "k2");
    cr_assert_eq(open_sealed(r, s, Binding{"acme", "openai"}).view(), "sk-old");
    // Hot-path overload with raw views.
    SecretString p =
        open_sealed(r, s.v, s.kid, s.salt.data(), s.salt.size(), s.nonce.data(), s.nonce.size(),
                    s.ct.data(), s.ct.size(), Binding{"acme", "openai"});
    cr_assert_eq(p.view(), "sk-old");
}

Test(crypto, distinct_nonces_and_salts_over_100k_encryptions, .timeout = 60) {
    KeyRing r = ring();
    std::set<std::string> nonces, salts;
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        Sealed s = seal(r, "sk-same-plaintext", Binding{"acme", "openai"});
        nonces.emplace(s.nonce.begin(), s.nonce.end());
        salts.emplace(s.salt.begin(), s.salt.end());
    }
    cr_assert_eq(nonces.size(), static_cast<size_t>(n));
    cr_assert_eq(salts.size(), static_cast<size_t>(n));
}

Test(keyring, parse_rules) {
    KeyRing r = ring();
    cr_assert_eq(r.keys().size(), 2u);
    cr_assert_eq(r.active().kid, "k2");
    cr_assert_not_null(r.find("k1"));
    cr_assert_null(r.find("k3"));
    cr_assert_eq(r.find("k2")->key[1], 1);
    // CRLF, tabs and surrounding blanks are tolerated.
    KeyRing crlf =
        KeyRing::parse("  a.b_c-D\tAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=  \r\n", "o");
    cr_assert_eq(crlf.active().kid, "a.b_c-D");
}

Test(keyring, malformed_lines_name_origin_and_line) {
    const std::string good = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const std::string expect = "expected '<kid> <base64 of 32 bytes>'";
    struct Case {
        std::string text, err;
    } cases[] = {
        {"k1\n", "f:1: " + expect},
        {"# c\n\nk1 " + good + " extra\n", "f:3: " + expect},
        {"k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==\n", "f:1: " + expect},      // 31 bytes
        {"k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gIQ==\n", "f:1: " + expect},  // 34
        {"k1 not*base64*at*all*but*forty*four*chars*=\n", "f:1: " + expect},
        {"k/1 " + good + "\n", "f:1: key id must match [A-Za-z0-9._-]{1,64}"},
        {std::string(65, 'k') + " " + good + "\n", "f:1: key id must match [A-Za-z0-9._-]{1,64}"},
        {"k1 " + good + "\nk1 " + good + "\n", "f:2: duplicate key id 'k1'"},
        {"", "f: no master keys"},
        {"# only a comment\n\n", "f: no master keys"},
    };
    for (const auto &c : cases) {
        std::string err = error_of([&] { KeyRing::parse(c.text, "f"); });
        cr_assert_eq(err, c.err, "got: %s", err.c_str());
        cr_assert_not(contains(err, "AAECAw"), "error leaks key material");
    }
}

Test(keyring, file_permissions) {
    const std::string text = "k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";
    std::string p644 = temp_file("644.keys", text, 0644);
    cr_assert_eq(error_of([&] { KeyRing::load_file(p644); }),
                 p644 + " is accessible by group or other users (chmod 600 " + p644 + ")");
    std::string p604 = temp_file("604.keys", text, 0604);
    cr_assert(contains(error_of([&] { KeyRing::load_file(p604); }), "chmod 600"));
    std::string p600 = temp_file("600.keys", text, 0600);
    cr_assert_eq(KeyRing::load_file(p600).active().kid, "k1");
    // Issue 10 item 13: group bits are refused too.
    for (mode_t m : {0640, 0620, 0610, 0660}) {
        std::string p = temp_file("group.keys", text, m);
        cr_assert(contains(error_of([&] { KeyRing::load_file(p); }), "chmod 600"), "mode %o", m);
        unlink(p.c_str());
    }
    for (const auto &p : {p644, p604, p600}) unlink(p.c_str());
}

Test(secret_file, owner_must_be_root_or_listed) {
    std::string p =
        temp_file("owned.keys", "k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", 0600);
    if (geteuid() != 0) {
        unlink(p.c_str());
        return;  // chown needs root; CI runs as root
    }
    cr_assert_eq(chown(p.c_str(), 4242, 4242), 0);
    std::string err = error_of([&] { read_secret_file(p); });
    cr_assert_eq(
        err, p + " is owned by uid 4242, neither root nor the nginx user (chown root " + p + ")");
    cr_assert_eq(read_secret_file(p, {4242}).view().substr(0, 3), "k1 ");
    cr_assert_eq(KeyRing::load_file(p, {4242}).active().kid, "k1");
    unlink(p.c_str());
}

Test(keyring, file_errors) {
    std::string missing = "/tmp/byok-unit-does-not-exist.keys";
    std::string err = error_of([&] { KeyRing::load_file(missing); });
    cr_assert(contains(err, missing) && contains(err, "No such file"), "%s", err.c_str());
    cr_assert(contains(error_of([&] { KeyRing::load_file("/tmp"); }), "not a regular file"));
    std::string bad = temp_file("bad.keys", "k1 AAAA\n", 0600);
    cr_assert_eq(error_of([&] { KeyRing::load_file(bad); }),
                 bad + ":1: expected '<kid> <base64 of 32 bytes>'");
    std::string empty = temp_file("empty.keys", "", 0600);
    cr_assert_eq(error_of([&] { KeyRing::load_file(empty); }), empty + ": no master keys");
    unlink(bad.c_str());
    unlink(empty.c_str());
}

static std::string hex32(const uint8_t *p) { return byok::hex_encode(p, 32); }

Test(crypto, hkdf_matches_rfc5869_test_case_1) {
    // RFC 5869 A.1 (SHA-256): the first 32 bytes of the 42-byte OKM.
    std::vector<uint8_t> ikm(22, 0x0b), salt, info;
    for (uint8_t i = 0x00; i <= 0x0c; i++) salt.push_back(i);
    for (uint8_t i = 0xf0; i <= 0xf9; i++) info.push_back(i);
    uint8_t okm[32];
    byok::hkdf_sha256(ikm.data(), ikm.size(), salt.data(), salt.size(),
                      std::string_view(reinterpret_cast<const char *>(info.data()), info.size()),
                      okm);
    cr_assert_eq(hex32(okm),
                 std::string("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"));
}

Test(crypto, sha256_matches_known_digest) {
    uint8_t md[32];
    byok::sha256("abc", md);
    cr_assert_eq(hex32(md),
                 std::string("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
}

// Issue 18: the low-level hash (no EVP context per call) over the padding
// boundaries: empty, one block with and without room for the length, two
// blocks, and a gateway-key-sized input against the EVP digest.
Test(crypto, i18_sha256_low_level_matches_known_digests) {
    uint8_t md[32];
    byok::sha256("", md);
    cr_assert_eq(hex32(md),
                 std::string("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    byok::sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", md);
    cr_assert_eq(hex32(md),
                 std::string("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    for (size_t len : {55u, 56u, 63u, 64u, 65u, 119u, 120u, 200u}) {
        std::string in(len, 'k');
        for (size_t i = 0; i < len; ++i) in[i] = static_cast<char>('a' + i % 26);
        uint8_t want[32];
        unsigned int n = 0;
        cr_assert_eq(EVP_Digest(in.data(), in.size(), want, &n, EVP_sha256(), nullptr), 1);
        byok::sha256(in, md);
        cr_assert_eq(std::memcmp(md, want, 32), 0, "len %zu", len);
    }
}
