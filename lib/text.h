// The text rules every other file applies to untrusted bytes: which
// characters count as control characters, how a string is written into
// JSON, and how text from outside is made fit to show. Each rule is written
// here once; callers name the rule instead of spelling out byte ranges.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace byok {

// C0 controls and DEL. Never allowed in a value we store, show or send:
// they break header framing (CR, LF, NUL), hide text in terminals and logs
// (ESC, DEL) or truncate C strings. Bytes >= 0x80 are not controls here
// (UTF-8 text passes).
constexpr bool is_control(unsigned char c) { return c < 0x20 || c == 0x7f; }

// The value rule (labels, names, passwords, header values): no control
// character; spaces and UTF-8 are fine.
bool contains_control(std::string_view s);

// The header-value rule (SPEC §10) for any client value copied upstream:
// the value rule, with HTAB allowed as RFC 9110 does.
bool safe_header_value(std::string_view v);

// The token rule (ids, user names, API keys): visible ASCII only, so no
// space, no control and no byte >= 0x80 — nothing that can split a command
// line, a header or a log field, or look like another character.
constexpr bool is_token_char(unsigned char c) { return c > 0x20 && c < 0x7f; }
bool is_token(std::string_view s);  // non-empty and every byte is_token_char

// The case rule for protocol words (header names, media types, auth schemes,
// multipart parameters): ASCII letters fold, every other byte compares as
// is. Not std::tolower, whose answer depends on the process locale.
constexpr char ascii_lower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}
bool iequals(std::string_view a, std::string_view b);  // equal under ascii_lower

// HTTP's optional whitespace (RFC 9110 OWS): space and tab. Other
// whitespace (CR, LF) is never OWS.
constexpr bool is_ows(char c) { return c == ' ' || c == '\t'; }
std::string_view trim_ows(std::string_view s);  // `s` without OWS at either end
// JSON's insignificant whitespace (RFC 8259): space, tab, CR, LF.
constexpr bool is_json_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Appends `s` as a quoted JSON string: quotes, backslashes and every
// control character (DEL included: valid raw in JSON, but invisible in a
// log line or terminal that shows the body, so \u007f is the safe choice)
// escaped. The one JSON string escaper.
void append_json_string(std::string &out, std::string_view s);
std::string json_string(std::string_view s);  // the same, as a new string

// The longest prefix of `s` of at most `max` bytes that does not end inside
// a UTF-8 sequence (a cut never leaves a broken character behind).
std::string_view utf8_prefix(std::string_view s, size_t max);

// Untrusted text made fit to show on one line (an error message, a stored
// excerpt): every control character and space run becomes one space,
// leading and trailing spaces go, and the result is cut with utf8_prefix.
// The one display policy; lib/redact.h removes secrets before it.
std::string one_line(std::string_view s, size_t max);

}  // namespace byok
