#include "lib/util.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

namespace byok {

SecretString::SecretString(std::string_view s) : data_(s) {}

SecretString read_secret_file(const std::string &path, const std::vector<uint32_t> &owners) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
    struct FdCloser {
        int fd;
        ~FdCloser() { close(fd); }
    } closer{fd};
    struct stat st {};
    if (fstat(fd, &st) != 0) throw Error(path + ": cannot stat: " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw Error(path + ": not a regular file");
    if ((st.st_mode & 077) != 0) {
        throw Error(path + " is accessible by group or other users (chmod 600 " + path + ")");
    }
    if (st.st_uid != 0 && std::find(owners.begin(), owners.end(), st.st_uid) == owners.end()) {
        throw Error(path + " is owned by uid " + std::to_string(st.st_uid) +
                    ", neither root nor the nginx user (chown root " + path + ")");
    }
    if (st.st_size > 1024 * 1024) throw Error(path + ": too large for a secret file");

    SecretString text;
    std::string &buf = text.mutable_str();
    buf.resize(static_cast<size_t>(st.st_size) + 1);
    size_t got = 0;
    for (;;) {
        if (got == buf.size()) buf.resize(buf.size() * 2);
        ssize_t n = read(fd, &buf[got], buf.size() - got);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw Error(path + ": read failed: " + std::strerror(errno));
        }
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    buf.resize(got);
    return text;
}

SecretString::SecretString(SecretString &&other) noexcept : data_(std::move(other.data_)) {
    other.clear();
}

SecretString &SecretString::operator=(SecretString &&other) noexcept {
    if (this != &other) {
        clear();
        data_.swap(other.data_);
        other.clear();
    }
    return *this;
}

SecretString::~SecretString() { clear(); }

void SecretString::clear() {
    // Wipe the whole capacity: the short-string buffer or heap block may hold
    // bytes beyond size() from earlier contents. The storage behind data()
    // is capacity() + 1 bytes; wiping it in place, without first growing the
    // string to its capacity (a zero fill, then the wipe), halves the cost of
    // a move (issue 18: moves are on the request path).
    wipe(data_.data(), data_.capacity());
    data_.clear();
}

void wipe(void *p, size_t n) {
    // glibc's explicit_bzero is its vectorised memset behind a compiler
    // barrier, so the stores are never elided; OPENSSL_cleanse stores a byte
    // at a time until aligned, then a word at a time (issue 18: ~9 wipes per
    // cache hit cost ~0.9k instructions through it).
    if (p != nullptr && n > 0) explicit_bzero(p, n);
}

Bytes random_bytes(size_t n) {
    Bytes b(n);
    if (n > 0 && RAND_bytes(b.data(), static_cast<int>(n)) != 1) {
        throw Error("random number generator failed");
    }
    return b;
}

namespace {

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

}  // namespace

std::string base64_encode(const uint8_t *p, size_t n) {
    std::string out;
    out.reserve((n + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t(p[i]) << 16) | (uint32_t(p[i + 1]) << 8) | p[i + 2];
        out.push_back(kB64[(v >> 18) & 63]);
        out.push_back(kB64[(v >> 12) & 63]);
        out.push_back(kB64[(v >> 6) & 63]);
        out.push_back(kB64[v & 63]);
    }
    if (n - i == 1) {
        uint32_t v = uint32_t(p[i]) << 16;
        out.push_back(kB64[(v >> 18) & 63]);
        out.push_back(kB64[(v >> 12) & 63]);
        out.append("==");
    } else if (n - i == 2) {
        uint32_t v = (uint32_t(p[i]) << 16) | (uint32_t(p[i + 1]) << 8);
        out.push_back(kB64[(v >> 18) & 63]);
        out.push_back(kB64[(v >> 12) & 63]);
        out.push_back(kB64[(v >> 6) & 63]);
        out.push_back('=');
    }
    return out;
}

Bytes base64_decode(std::string_view s) {
    if (s.size() % 4 != 0) throw Error("invalid base64");
    size_t pad = 0;
    if (!s.empty() && s.back() == '=') pad = (s[s.size() - 2] == '=') ? 2 : 1;
    Bytes out;
    out.reserve(s.size() / 4 * 3);
    for (size_t i = 0; i < s.size(); i += 4) {
        bool last = i + 4 == s.size();
        int v[4];
        for (int j = 0; j < 4; j++) {
            unsigned char c = static_cast<unsigned char>(s[i + j]);
            if (c == '=' && last && j >= 4 - static_cast<int>(pad)) {
                v[j] = 0;
                continue;
            }
            v[j] = b64_value(c);
            if (v[j] < 0) {
                wipe(out.data(), out.size());
                throw Error("invalid base64");
            }
        }
        uint32_t w = (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) |
                     uint32_t(v[3]);
        out.push_back(static_cast<uint8_t>(w >> 16));
        if (!(last && pad == 2)) out.push_back(static_cast<uint8_t>(w >> 8));
        if (!(last && pad >= 1)) out.push_back(static_cast<uint8_t>(w));
        // Canonical form only: the bits dropped by padding must be zero.
        if (last && ((pad == 1 && (w & 0xff) != 0) || (pad == 2 && (w & 0xffff) != 0))) {
            wipe(out.data(), out.size());
            throw Error("invalid base64");
        }
    }
    return out;
}

std::string hex_encode(const uint8_t *p, size_t n) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out(n * 2, '0');
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = kHex[p[i] >> 4];
        out[2 * i + 1] = kHex[p[i] & 15];
    }
    return out;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        // Still touch the data so the timing does not depend on where it differs.
        (void)CRYPTO_memcmp(a.data(), a.data(), a.size());
        return false;
    }
    if (a.empty()) return true;
    return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

namespace {

struct tm utc(int64_t unix_seconds) {
    time_t t = static_cast<time_t>(unix_seconds);
    struct tm tm {};
    if (gmtime_r(&t, &tm) == nullptr) throw Error("timestamp out of range");
    return tm;
}

}  // namespace

std::string iso8601_utc(int64_t unix_seconds) {
    struct tm tm = utc(unix_seconds);
    char buf[32];
    size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return std::string(buf, n);
}

std::string yyyymmdd_utc(int64_t unix_seconds) {
    struct tm tm = utc(unix_seconds);
    char buf[16];
    size_t n = strftime(buf, sizeof buf, "%Y%m%d", &tm);
    return std::string(buf, n);
}

std::string json_error(std::string_view code, std::string_view message, std::string_view type) {
    std::string out;
    out.reserve(48 + code.size() + message.size() + type.size());
    out.append("{\"error\":{\"message\":");
    append_json_string(out, message);
    out.append(",\"type\":");
    append_json_string(out, type);
    out.append(",\"code\":");
    append_json_string(out, code);
    out.append("}}");
    return out;
}

std::string_view error_type(int status) {
    switch (status) {
        case 401:
            return "authentication_error";
        case 403:
            return "permission_error";
        case 404:
            return "not_found_error";
        default:
            return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

namespace {

struct StatusError {
    int status;
    const char *code;
    const char *message;
};

// What nginx itself answers with on gateway and admin locations (a header
// too large, 494, reaches error_page as 400: nginx rewrites it). 502/504
// are what it says when it cannot reach a provider (a provider's own 5xx
// passes through untouched).
constexpr StatusError kStatusErrors[] = {
    {400, "bad_request", "the request could not be parsed"},
    {401, "unauthorized", "missing or invalid credentials"},
    {403, "forbidden", "access denied"},
    {404, "not_found", "no such route"},
    {405, "method_not_allowed", "method not allowed"},
    {408, "request_timeout", "the request was not received in time"},
    {413, "payload_too_large", "request body is larger than the limit"},
    {414, "uri_too_long", "request URI is too long"},
    {429, "rate_limited", "too many requests"},
    {500, "internal_error", "internal error"},
    {502, "upstream_unreachable", "the provider could not be reached"},
    {503, "unavailable", "service temporarily unavailable"},
    {504, "upstream_timeout", "the provider did not answer in time"},
};

}  // namespace

std::string status_error_json(int status) {
    for (const auto &e : kStatusErrors)
        if (e.status == status) return json_error(e.code, e.message, error_type(status));
    std::string code = "http_" + std::to_string(status);
    return json_error(code, "HTTP error " + std::to_string(status), error_type(status));
}

}  // namespace byok
