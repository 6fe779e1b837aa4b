#include "lib/text.h"

#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace byok {

bool contains_control(std::string_view s) {
    for (unsigned char c : s)
        if (is_control(c)) return true;
    return false;
}

namespace {

template <class T>
inline T load(const void *p) {
    T v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

// Equal bytes. Without a call for 4..16 bytes (header names, media types;
// session 7: the memcmp call cost more than the compare): two overlapping
// loads from either end.
inline bool same_bytes(const char *a, const char *b, size_t n) {
    if (n >= 8 && n <= 16)
        return load<uint64_t>(a) == load<uint64_t>(b) &&
               load<uint64_t>(a + n - 8) == load<uint64_t>(b + n - 8);
    if (n >= 4 && n < 8)
        return load<uint32_t>(a) == load<uint32_t>(b) &&
               load<uint32_t>(a + n - 4) == load<uint32_t>(b + n - 4);
    return std::memcmp(a, b, n) == 0;
}

}  // namespace

#if defined(__SSE2__)
namespace {

// Whether a byte of `b` is a control character other than HTAB.
inline bool bad_header_bytes(__m128i b) {
    const __m128i max_ctl = _mm_set1_epi8(0x1f), tab = _mm_set1_epi8('\t'),
                  del = _mm_set1_epi8(0x7f);
    // b <= 0x1f unsigned: min(b, 0x1f) == b.
    __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(b, max_ctl), b);
    __m128i bad =
        _mm_or_si128(_mm_andnot_si128(_mm_cmpeq_epi8(b, tab), ctl), _mm_cmpeq_epi8(b, del));
    return _mm_movemask_epi8(bad) != 0;
}

}  // namespace
#endif

// Every header value of a request passes here (issue 18: the byte loop was
// ~25 instructions a byte); SSE2 (every x86-64) checks 16 bytes at a time.
// No byte loop for what is left after the full blocks, nor for a value
// shorter than a block (a model name; session 7: that loop cost ~8
// instructions a byte): the last 16 bytes are checked again as one block,
// and 4..15 bytes as one block of two overlapping loads from either end.
bool safe_header_value(std::string_view v) {
    const auto *p = reinterpret_cast<const unsigned char *>(v.data());
    const unsigned char *end = p + v.size();
#if defined(__SSE2__)
    if (v.size() >= 16) {
        for (; end - p > 16; p += 16)
            if (bad_header_bytes(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))))
                return false;
        return !bad_header_bytes(_mm_loadu_si128(reinterpret_cast<const __m128i *>(end - 16)));
    }
    if (v.size() >= 8)
        return !bad_header_bytes(_mm_set_epi64x(load<long long>(end - 8), load<long long>(p)));
    if (v.size() >= 4) {
        int head = load<int>(p), tail = load<int>(end - 4);
        return !bad_header_bytes(_mm_set_epi32(tail, head, tail, head));
    }
#endif
    for (; p < end; ++p)
        if (is_control(*p) && *p != '\t') return false;
    return true;
}

bool is_token(std::string_view s) {
    if (s.empty()) return false;
    for (unsigned char c : s)
        if (!is_token_char(c)) return false;
    return true;
}

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
    return s;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    // Equal bytes need no folding (issue 18: every header name passes here,
    // and nginx hands them over lower-cased, like the names they meet): one
    // compare; else only a letter against its other case may still match.
    // Different names of one length mostly differ at once (content-length
    // and x-goog-api-key): the first byte before the rest.
    if (a.empty()) return true;
    if (ascii_lower(a[0]) != ascii_lower(b[0])) return false;
    if (same_bytes(a.data(), b.data(), a.size())) return true;
    for (size_t i = 1; i < a.size(); ++i) {
        if (a[i] == b[i]) continue;
        if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    }
    return true;
}

void append_json_string(std::string &out, std::string_view s) {
    static constexpr char kHex[] = "0123456789abcdef";
    out.push_back('"');
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(static_cast<char>(c));
        } else if (is_control(c)) {
            out.append("\\u00");
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    out.push_back('"');
}

std::string json_string(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 2);
    append_json_string(out, s);
    return out;
}

std::string_view utf8_prefix(std::string_view s, size_t max) {
    if (s.size() <= max) return s;
    size_t n = max;
    // Step back over continuation bytes so the byte at `n` starts a character.
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    return s.substr(0, n);
}

std::string one_line(std::string_view s, size_t max) {
    std::string out;
    out.reserve(s.size() < max ? s.size() : max);
    for (unsigned char c : s) {
        if (is_control(c) || c == ' ') {
            if (!out.empty() && out.back() != ' ') out.push_back(' ');
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    out.resize(utf8_prefix(out, max).size());
    return out;
}

}  // namespace byok
