// Small shared helpers: errors, secret buffers, encodings, hashing.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "lib/text.h"  // the text rules (safe_header_value, append_json_string) come with util

namespace byok {

using Bytes = std::vector<uint8_t>;

// Every recoverable failure in lib/ is a byok::Error with a message that is
// safe to log and to show to an operator: it never contains a secret.
class Error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// A string holding a secret (plaintext provider key, token, master key
// material). Wiped (byok::wipe) on destruction and on clear().
// Move-only so copies of the secret do not spread.
class SecretString {
  public:
    SecretString() = default;
    explicit SecretString(std::string_view s);
    SecretString(SecretString &&other) noexcept;
    SecretString &operator=(SecretString &&other) noexcept;
    SecretString(const SecretString &) = delete;
    SecretString &operator=(const SecretString &) = delete;
    ~SecretString();

    std::string_view view() const { return {data_.data(), data_.size()}; }
    const char *data() const { return data_.data(); }
    size_t size() const { return data_.size(); }
    bool empty() const { return data_.empty(); }
    void clear();
    // Exchanges the two secrets without a copy or a wipe: each is wiped when
    // its new holder clears or goes (issue 18: cheaper than a move, which
    // wipes both sides).
    void swap(SecretString &other) noexcept { data_.swap(other.data_); }
    // Takes `from`'s secret into this holder, which must be empty: a heap
    // block by its pointer (a block this holder had goes to `from`), a short
    // secret by a copy; no wipe (session 7: cheaper still than swap, an
    // out-of-line call). What `from` keeps is wiped by its clear or
    // destructor.
    void take(SecretString &from) noexcept { data_ = std::move(from.data_); }
    std::string &mutable_str() { return data_; }  // for writing in place

  private:
    std::string data_;
};

// Reads a file that holds secrets (master key ring, admin tokens, system
// keys). Refuses anything but a regular file, any group or other permission
// bit (mode & 077) and an owner other than root or one of `owners` (the
// worker user, the user nginx runs as). Errors name the path and the fix,
// never the content.
SecretString read_secret_file(const std::string &path, const std::vector<uint32_t> &owners = {});

// Wipes memory with stores the compiler may not optimise away
// (explicit_bzero).
void wipe(void *p, size_t n);

Bytes random_bytes(size_t n);  // RAND_bytes; throws Error on failure

std::string base64_encode(const uint8_t *p, size_t n);
inline std::string base64_encode(const Bytes &b) { return base64_encode(b.data(), b.size()); }
// Strict standard base64 (with padding); throws Error("invalid base64").
Bytes base64_decode(std::string_view s);

std::string hex_encode(const uint8_t *p, size_t n);

// Constant-time comparison (CRYPTO_memcmp); lengths may differ.
bool constant_time_equal(std::string_view a, std::string_view b);

// RFC 3339 UTC timestamp with seconds, e.g. "2026-11-22T04:31:00Z".
std::string iso8601_utc(int64_t unix_seconds);
// "20261122" for the usage-counter keys.
std::string yyyymmdd_utc(int64_t unix_seconds);

// JSON error body shared by the gateway and the admin API:
// {"error":{"message":...,"type":...,"code":...}}. Strings are escaped.
std::string json_error(std::string_view code, std::string_view message,
                       std::string_view type = "invalid_request_error");

// OpenAI error "type" for an HTTP status: authentication_error (401),
// permission_error (403), not_found_error (404), api_error (5xx), else
// invalid_request_error. Used by every JSON error the module writes.
std::string_view error_type(int status);

// The JSON error for a status nginx produced itself (an error_page sent it
// to `byok_error;`): code and message from one table, e.g. 413 →
// payload_too_large "request body is larger than the limit", 502 →
// upstream_unreachable; an unlisted status gets code "http_<status>".
std::string status_error_json(int status);

}  // namespace byok
