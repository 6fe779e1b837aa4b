// Redaction works on a "skeleton": the lower-cased letters and digits of a
// text, each remembering where it came from. Case changes, separators
// inserted between characters, and the two base64 alphabets all vanish in
// the skeleton, so one window search per encoded form of the secret covers
// them; a hit marks the original bytes it spans.
#include "lib/redact.h"

#include <algorithm>
#include <map>
#include <unordered_set>

#include "lib/util.h"

namespace byok {

namespace {

constexpr size_t kWindow = 12;    // a run this long of any form is the secret
constexpr size_t kMinSecret = 4;  // shorter secrets would redact half the text
constexpr size_t kTokenRun = 24;  // token-like runs redacted whoever's they are
const std::string_view kMark = "[redacted]";

bool is_alnum(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
char to_lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : char(c); }

struct Skeleton {
    std::string chars;
    std::vector<size_t> at;  // index into the original text of each char
};

Skeleton skeleton_of(std::string_view s) {
    Skeleton k;
    for (size_t i = 0; i < s.size(); ++i) {
        auto c = static_cast<unsigned char>(s[i]);
        if (!is_alnum(c)) continue;
        k.chars.push_back(to_lower(c));
        k.at.push_back(i);
    }
    return k;
}

// The base64 characters that depend only on `secret` when it starts `shift`
// bytes into the encoded data (an echo of "user:secret" and the like).
std::string base64_middle(std::string_view secret, size_t shift) {
    std::string data(shift, '\0');
    data.append(secret);
    std::string enc = base64_encode(reinterpret_cast<const uint8_t *>(data.data()), data.size());
    size_t first = (8 * shift + 5) / 6, end = (8 * data.size()) / 6;
    return end > first ? enc.substr(first, end - first) : std::string();
}

// The skeletons of every form a target might echo `secret` in.
std::vector<std::string> forms_of(std::string_view secret) {
    std::vector<std::string> out;
    std::string plain = skeleton_of(secret).chars;
    out.push_back(plain);
    out.emplace_back(plain.rbegin(), plain.rend());
    out.push_back(
        skeleton_of(hex_encode(reinterpret_cast<const uint8_t *>(secret.data()), secret.size()))
            .chars);
    for (size_t shift = 0; shift < 3; ++shift)
        out.push_back(skeleton_of(base64_middle(secret, shift)).chars);
    return out;
}

void mark_range(std::vector<bool> &marked, size_t from, size_t to) {
    for (size_t i = from; i < to && i < marked.size(); ++i) marked[i] = true;
}

void mark_secret_forms(std::string_view text, const std::vector<std::string_view> &secrets,
                       std::vector<bool> &marked) {
    // Windows of every form, grouped by length (short secrets: the whole form).
    std::vector<std::string> forms;
    for (std::string_view s : secrets) {
        if (s.size() < kMinSecret) continue;
        for (auto &f : forms_of(s))
            if (f.size() >= kMinSecret) forms.push_back(std::move(f));
    }
    std::map<size_t, std::unordered_set<std::string_view>> windows;
    for (const auto &f : forms) {
        size_t w = std::min(kWindow, f.size());
        auto &set = windows[w];
        for (size_t i = 0; i + w <= f.size(); ++i) set.insert(std::string_view(f).substr(i, w));
    }
    Skeleton t = skeleton_of(text);
    std::string_view tc = t.chars;
    for (const auto &[w, set] : windows)
        for (size_t i = 0; i + w <= tc.size(); ++i)
            if (set.count(tc.substr(i, w))) mark_range(marked, t.at[i], t.at[i + w - 1] + 1);
    // Secrets made of punctuation have no skeleton: their exact bytes.
    for (std::string_view s : secrets) {
        if (s.size() < kMinSecret) continue;
        for (size_t pos = text.find(s); pos != std::string_view::npos; pos = text.find(s, pos + 1))
            mark_range(marked, pos, pos + s.size());
    }
}

bool token_char(unsigned char c) {
    return is_alnum(c) || c == '+' || c == '/' || c == '=' || c == '_' || c == '-';
}

void mark_tokens(std::string_view text, std::vector<bool> &marked) {
    for (size_t i = 0; i < text.size();) {
        if (!token_char(static_cast<unsigned char>(text[i]))) {
            ++i;
            continue;
        }
        size_t j = i;
        bool letter = false, digit = false;
        for (; j < text.size() && token_char(static_cast<unsigned char>(text[j])); ++j) {
            auto c = static_cast<unsigned char>(text[j]);
            digit = digit || (c >= '0' && c <= '9');
            letter = letter || (is_alnum(c) && !(c >= '0' && c <= '9'));
        }
        if (j - i >= kTokenRun && letter && digit) mark_range(marked, i, j);
        i = j;
    }
}

}  // namespace

std::string redact_excerpt(std::string_view text, const std::vector<std::string_view> &secrets,
                           size_t max) {
    std::vector<bool> marked(text.size(), false);
    mark_secret_forms(text, secrets, marked);
    mark_tokens(text, marked);

    // Marked runs become the mark; then the one display policy (lib/text.h).
    std::string out;
    for (size_t i = 0; i < text.size();) {
        if (marked[i]) {
            out.append(kMark);
            while (i < text.size() && marked[i]) ++i;
            continue;
        }
        out.push_back(text[i++]);
    }
    return one_line(out, max);
}

}  // namespace byok
