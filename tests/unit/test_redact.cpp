// The one redaction routine (issue 10 item 12): every echoed form of a
// secret is removed, row by row.
#include <criterion/criterion.h>

#include <algorithm>
#include <string>
#include <vector>

#include "lib/redact.h"
#include "lib/util.h"

using namespace byok;

namespace {

const std::string kKey = "sk-proj-Abc123XyZ789qrsTUV456";
const std::string kToken = "k8s-token-canary-0123456789";

std::string b64(const std::string &s) {
    return base64_encode(reinterpret_cast<const uint8_t *>(s.data()), s.size());
}
std::string b64url(std::string s) {
    s = b64(s);
    for (auto &c : s) c = c == '+' ? '-' : c == '/' ? '_' : c;
    while (!s.empty() && s.back() == '=') s.pop_back();
    return s;
}
std::string upper(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), ::toupper);
    return s;
}
std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), ::tolower);
    return s;
}
std::string reversed(std::string s) { return std::string(s.rbegin(), s.rend()); }
std::string spaced(const std::string &s, char sep) {
    std::string out;
    for (char c : s) {
        if (!out.empty()) out.push_back(sep);
        out.push_back(c);
    }
    return out;
}
std::string hex(const std::string &s) {
    return hex_encode(reinterpret_cast<const uint8_t *>(s.data()), s.size());
}

// Some 12-character run of the secret's letters and digits.
bool leaks(const std::string &out, const std::string &secret) {
    std::string alnum, o;
    for (char c : secret)
        if (isalnum(static_cast<unsigned char>(c))) alnum.push_back(tolower(c));
    for (char c : out)
        if (isalnum(static_cast<unsigned char>(c))) o.push_back(tolower(c));
    for (size_t i = 0; i + 12 <= alnum.size(); ++i)
        if (o.find(alnum.substr(i, 12)) != std::string::npos) return true;
    return false;
}

}  // namespace

Test(redact, i10_12_every_echoed_form_is_removed) {
    struct Row {
        const char *what;
        std::string text;
    };
    const std::vector<Row> rows = {
        {"exact", "Incorrect API key provided: " + kKey + "."},
        {"upper", "KEY " + upper(kKey) + " REFUSED"},
        {"lower", "key " + lower(kKey) + " refused"},
        {"base64", "Basic " + b64(kKey)},
        {"base64 of user:key", "Basic " + b64("user:" + kKey)},
        {"base64 shifted by 2", "x" + b64("ab" + kKey) + "y"},
        {"base64url", "token=" + b64url(kKey)},
        {"hex", "hex " + hex(kKey)},
        {"upper hex", "HEX " + upper(hex(kKey))},
        {"split by spaces", "k: " + spaced(kKey, ' ')},
        {"split by dots", "k: " + spaced(kKey, '.')},
        {"split in halves", "first " + kKey.substr(0, 14) + " then " + kKey.substr(14)},
        {"reversed", "yek " + reversed(kKey)},
        {"cut at the end", "bad key " + kKey.substr(0, 18)},
        {"kubernetes gitVersion", R"({"gitVersion":")" + kToken + R"("})"},
    };
    for (const auto &row : rows) {
        std::string out = redact_excerpt(row.text, {kKey, kToken});
        cr_assert(!leaks(out, kKey) && !leaks(out, kToken), "%s: %s", row.what, out.c_str());
        cr_assert(out.find("[redacted]") != std::string::npos, "%s: nothing redacted in %s",
                  row.what, out.c_str());
    }
}

Test(redact, i10_12_percent_encoded_secret_is_removed) {
    std::string pct;
    for (size_t i = 0; i < kKey.size(); ++i) pct += "%" + upper(hex(kKey.substr(i, 1)));
    std::string out = redact_excerpt("GET /?k=" + pct, {kKey});
    cr_assert(out.find(pct.substr(0, 12)) == std::string::npos, "%s", out.c_str());
}

Test(redact, i10_12_long_tokens_are_removed_whoever_owns_them) {
    std::string jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl";
    std::string out = redact_excerpt("token " + jwt + " is invalid", {});
    cr_assert(out.find("eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ") == std::string::npos, "%s",
              out.c_str());
    cr_assert(out.find("is invalid") != std::string::npos);
}

Test(redact, i10_12_ordinary_text_is_kept_and_bounded) {
    struct Row {
        std::string in, out;
    };
    const std::vector<Row> rows = {
        {"Kubernetes v1.29.3", "Kubernetes v1.29.3"},
        {"  model\tnot\r\nfound  ", "model not found"},
        {"the provider answered 500", "the provider answered 500"},
        {"short pw abc", "short pw abc"},  // secrets under 4 characters are not matched
    };
    for (const auto &row : rows)
        cr_assert_eq(redact_excerpt(row.in, {kKey, "ab"}), row.out, "%s", row.in.c_str());
    std::string long_text;
    for (int i = 0; i < 100; ++i) long_text += "é word ";
    std::string out = redact_excerpt(long_text, {});
    cr_assert_leq(out.size(), kExcerptMax);
    // Never cuts inside a UTF-8 sequence.
    cr_assert_neq(static_cast<unsigned char>(out.back()) & 0xC0, 0x80);
    cr_assert_eq(redact_excerpt("", {kKey}), "");
}

Test(redact, i10_12_multi_line_secret_line_by_line) {
    std::string pem =
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
        "QyNTUxOQAAACDcanaryprivatekeymaterial0123\n"
        "-----END OPENSSH PRIVATE KEY-----\n";
    std::string out = redact_excerpt("parse error near canaryprivatekeymat", {pem});
    cr_assert(out.find("canaryprivatekeymat") == std::string::npos, "%s", out.c_str());
}
