// The one redaction routine for text that came back from a tenant-chosen
// target (provider key tests, execution-server tests) and is shown or
// stored. A hostile target may echo the secret it was sent in any shape, so
// matching the exact bytes is not enough.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace byok {

constexpr size_t kExcerptMax = 200;

// `text` made safe to store and show: every recognisable form of each
// secret is replaced by "[redacted]" — exact, any letter case, split by
// whitespace or punctuation, reversed, base64 (standard or url-safe, any
// alignment), hex, or any 12-character run of one of these — and so is any
// long token-like run (24+ characters of [A-Za-z0-9+/=_-] with a letter and
// a digit), whoever's it is. Control characters become spaces, runs of
// spaces collapse, and the result is cut to `max` bytes without splitting a
// UTF-8 sequence.
std::string redact_excerpt(std::string_view text, const std::vector<std::string_view> &secrets,
                           size_t max = kExcerptMax);

}  // namespace byok
