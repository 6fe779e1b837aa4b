// Byte search for the usage scanner (lib/usage_scanner.cpp): the positions
// of a few byte values, 16 or 64 bytes at a time where SSE2 exists (every
// x86-64), and the quote parity of a 64-byte window. Kept apart so the
// scanner's file holds the JSON reading alone.
#pragma once

#include <cstddef>
#include <cstdint>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace byok::byte_scan {

#if defined(__SSE2__)
// Bit i set when byte i of the 16 at p is one of Cs.
template <char... Cs>
inline unsigned match16(const char *p) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    __m128i hit = _mm_setzero_si128();
    ((hit = _mm_or_si128(hit, _mm_cmpeq_epi8(v, _mm_set1_epi8(Cs)))), ...);
    return static_cast<unsigned>(_mm_movemask_epi8(hit));
}

// The same for the 64 bytes at p (bit i: byte i).
template <char... Cs>
inline uint64_t match64(const char *p) {
    return static_cast<uint64_t>(match16<Cs...>(p)) |
           static_cast<uint64_t>(match16<Cs...>(p + 16)) << 16 |
           static_cast<uint64_t>(match16<Cs...>(p + 32)) << 32 |
           static_cast<uint64_t>(match16<Cs...>(p + 48)) << 48;
}

// The quotes and the escapes/newlines of `len` (up to 64) bytes from p,
// bit i for byte p + i (at the piece's end the 64 bytes that end at `end`
// are read, as find_any does); false for a piece shorter than a window.
struct Window {
    uint64_t quotes = 0, breaks = 0;
    size_t len = 0;
    bool load(const char *p, const char *end, const char *begin) {
        if (end - p >= 64) {
            len = 64;
            quotes = match64<'"'>(p);
            breaks = match64<'\\', '\n'>(p);
            return true;
        }
        // Under 16 bytes left (the "}" after usage): find_any's block is cheaper.
        if (end - p < 16 || end - begin < 64) return false;
        len = static_cast<size_t>(end - p);
        const unsigned drop = static_cast<unsigned>(64 - len);
        quotes = match64<'"'>(end - 64) >> drop;
        breaks = match64<'\\', '\n'>(end - 64) >> drop;
        return true;
    }
};

// Bit i: the XOR of bits 0..i of x.
inline uint64_t prefix_xor(uint64_t x) {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    return x ^ x << 32;
}
#endif

// The first byte of [p, end) that is one of Cs, or end: sixteen bytes at a
// time where SSE2 exists (every x86-64); the last few bytes too, by
// reading the 16 that end at `end` when the piece that starts at `begin`
// has that many. The scanner spends its time here: everything between such
// bytes is skipped unread.
template <char... Cs>
inline const char *find_any(const char *p, const char *end, const char *begin) {
#if defined(__SSE2__)
    while (end - p >= 16) {
        unsigned mask = match16<Cs...>(p);
        if (mask != 0) return p + __builtin_ctz(mask);
        p += 16;
    }
    if (p < end && end - begin >= 16) {
        unsigned mask = match16<Cs...>(end - 16) >> (16 - (end - p));
        return mask != 0 ? p + __builtin_ctz(mask) : end;
    }
#endif
    while (p < end && ((*p != Cs) && ...)) p++;
    return p;
}

}  // namespace byok::byte_scan
