// What the fuzz targets of the two incremental model scanners (JSON bodies,
// lib/body.h; multipart bodies, lib/multipart.h) check alike, written once:
// fed in pieces, a scanner answers exactly what the one-shot scan answers,
// and a rewrite changes the model span only. Each target brings its own
// scanner (a factory) and its own checks of the rewritten body.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>

#include "lib/util.h"

namespace fuzz {

// "none", "error: <message>" or "<model>|<begin>|<end>": what a scanner from
// `make()` answers when `in` is fed cut at `cuts` (clamped into order and
// into the input), then finished.
template <class Make>
std::string outcome(const Make &make, std::string_view in, const size_t *cuts, size_t ncuts) {
    try {
        auto s = make();
        size_t at = 0;
        for (size_t i = 0; i < ncuts; i++) {
            size_t cut = cuts[i] < at ? at : cuts[i] > in.size() ? in.size() : cuts[i];
            s.feed(in.substr(at, cut - at));
            at = cut;
        }
        s.feed(in.substr(at));
        auto m = s.finish();
        if (!m) return "none";
        return m->model + "|" + std::to_string(m->begin) + "|" + std::to_string(m->end);
    } catch (const byok::Error &e) {
        return std::string("error: ") + e.what();
    }
}

// Aborts unless every piecewise scan of `in` answers what the one-shot scan
// answers: two cuts where the input's own bytes `seed0`/`seed1` say, one
// cut in the middle, and byte by byte over the first 64 bytes.
template <class Make>
void check_piecewise(const Make &make, std::string_view in, uint8_t seed0, uint8_t seed1) {
    size_t n = in.size();
    size_t cuts[3] = {seed0 % (n + 1), seed1 % (n + 1), n / 2};
    if (cuts[1] < cuts[0]) std::swap(cuts[0], cuts[1]);
    std::string whole = outcome(make, in, nullptr, 0);
    if (outcome(make, in, cuts, 2) != whole || outcome(make, in, cuts + 2, 1) != whole) abort();
    size_t every[64];
    size_t k = n < 64 ? n : 64;
    for (size_t i = 0; i < k; i++) every[i] = i + 1;
    if (outcome(make, in, every, k) != whole) abort();
}

// Aborts unless `out` is `in` with only the bytes [begin, end) replaced.
inline void check_spliced(std::string_view in, size_t begin, size_t end, std::string_view out) {
    if (out.size() < begin + (in.size() - end) || out.substr(0, begin) != in.substr(0, begin) ||
        out.substr(out.size() - (in.size() - end)) != in.substr(end))
        abort();
}

}  // namespace fuzz
