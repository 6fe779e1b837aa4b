#include "lib/client_api.h"

#include <array>
#include <iterator>

#include "lib/text.h"
#include "lib/util.h"

namespace byok {

ApiFamily api_family(std::string_view native_provider) {
    if (native_provider == "anthropic") return ApiFamily::Anthropic;
    if (native_provider == "google") return ApiFamily::Google;
    return ApiFamily::OpenAI;
}

namespace {

// Anthropic's error `type` and Google's `status` for an HTTP status, as
// their SDKs map them to error classes.
std::string_view anthropic_type(int status) {
    switch (status) {  // Anthropic's own names; the rest as everywhere else
        case 413:
            return "request_too_large";
        case 429:
            return "rate_limit_error";
        case 529:
            return "overloaded_error";
        default:
            return error_type(status);
    }
}

std::string_view google_status(int status) {
    switch (status) {
        case 400:
        case 413:
        case 422:
            return "INVALID_ARGUMENT";
        case 401:
            return "UNAUTHENTICATED";
        case 403:
            return "PERMISSION_DENIED";
        case 404:
            return "NOT_FOUND";
        case 429:
            return "RESOURCE_EXHAUSTED";
        case 502:
        case 503:
            return "UNAVAILABLE";
        case 504:
            return "DEADLINE_EXCEEDED";
        default:
            return status < 500 ? "FAILED_PRECONDITION" : "INTERNAL";
    }
}

}  // namespace

std::string_view bearer_token(std::string_view authorization) {
    std::string_view auth = trim_ows(authorization);
    if (auth.size() < 7 || !is_ows(auth[6])) return {};
    if (!iequals(auth.substr(0, 6), "bearer")) return {};
    return trim_ows(auth.substr(7));
}

bool looks_like_gateway_key(std::string_view key) {
    return key.size() >= 8 && key.size() <= 256 && key.substr(0, 5) == "byok_" &&
           safe_header_value(key);
}

GatewayKeyLookup find_gateway_key(const ClientCredentials &c, ApiFamily api) {
    std::string_view key = bearer_token(c.authorization);
    bool found = !key.empty();
    for (std::string_view v : {c.x_api_key, c.api_key}) {
        if (found) break;
        found = !v.empty();
        key = v;
    }
    if (api == ApiFamily::Google) {
        for (std::string_view v : {c.x_goog_api_key, c.query_key}) {
            if (found) break;
            found = !v.empty();
            key = v;
        }
    }
    while (!key.empty() && key.front() == ' ') key.remove_prefix(1);
    if (!looks_like_gateway_key(key)) return {{}, "missing or invalid gateway API key"};
    return {key, {}};
}

namespace {

// `name` percent-decoded (malformed escapes kept as they are), lower-cased:
// providers may match parameter names either way (`Key=`, `KEY=`, `%6bey=`).
std::string decoded_lower_name(std::string_view name) {
    auto hex = [](char c) {
        if (c >= '0' && c <= '9') return c - '0';
        c = static_cast<char>(c | 0x20);
        return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    std::string out;
    for (size_t i = 0; i < name.size(); i++) {
        char c = name[i];
        if (c == '%' && i + 2 < name.size() && hex(name[i + 1]) >= 0 && hex(name[i + 2]) >= 0) {
            c = static_cast<char>(hex(name[i + 1]) * 16 + hex(name[i + 2]));
            i += 2;
        }
        out.push_back(ascii_lower(c));
    }
    return out;
}

}  // namespace

namespace {

// RequestHeader's names, lower case, in enum order.
constexpr std::string_view kRequestHeaderNames[] = {
    "authorization",           "x-api-key",           "api-key",
    "x-goog-api-key",          "proxy-authorization", "x-byok-provider",
    "x-stainless-retry-count", "content-type"};
static_assert(std::size(kRequestHeaderNames) == static_cast<size_t>(RequestHeader::Other));
constexpr std::string_view ClientCredentials::*kCredentialSlots[] = {
    &ClientCredentials::authorization, &ClientCredentials::x_api_key, &ClientCredentials::api_key,
    &ClientCredentials::x_goog_api_key};

constexpr size_t longest_name() {
    size_t n = 0;
    for (std::string_view s : kRequestHeaderNames) n = s.size() > n ? s.size() : n;
    return n;
}
constexpr size_t kLongestName = longest_name();

// The index of the one name of each length (-1: none, -2: more than one),
// so request_header compares a name with one entry at most.
constexpr std::array<int8_t, kLongestName + 1> names_by_length() {
    std::array<int8_t, kLongestName + 1> t{};
    for (auto &i : t) i = -1;
    for (size_t i = 0; i < std::size(kRequestHeaderNames); ++i) {
        size_t n = kRequestHeaderNames[i].size();
        t[n] = t[n] == -1 ? static_cast<int8_t>(i) : -2;
    }
    return t;
}
constexpr std::array<int8_t, kLongestName + 1> kNameOfLength = names_by_length();
constexpr bool lengths_differ() {
    for (int8_t i : kNameOfLength)
        if (i == -2) return false;
    return true;
}
static_assert(lengths_differ(), "request header names must differ in length");

}  // namespace

RequestHeader request_header(std::string_view name) {
    if (name.size() > kLongestName) return RequestHeader::Other;
    int i = kNameOfLength[name.size()];
    return i >= 0 && iequals(name, kRequestHeaderNames[i]) ? static_cast<RequestHeader>(i)
                                                           : RequestHeader::Other;
}

std::string_view *credential_slot(ClientCredentials &c, RequestHeader h) {
    auto i = static_cast<size_t>(h);
    return i < std::size(kCredentialSlots) ? &(c.*kCredentialSlots[i]) : nullptr;
}

std::string_view *credential_slot(ClientCredentials &c, std::string_view name) {
    return credential_slot(c, request_header(name));
}

bool is_credential_header(std::string_view name) {
    return is_credential_header(request_header(name));
}

std::string strip_key_param(std::string_view args, std::string_view *key) {
    std::string out;
    size_t i = 0;
    while (i < args.size()) {
        size_t amp = args.find('&', i);
        if (amp == std::string_view::npos) amp = args.size();
        std::string_view part = args.substr(i, amp - i);
        i = amp + 1;
        if (part.empty()) continue;
        size_t eq = part.find('=');
        if (decoded_lower_name(part.substr(0, eq)) == "key") {
            if (key != nullptr && key->empty() && eq != std::string_view::npos &&
                eq + 1 < part.size())
                *key = part.substr(eq + 1);
            continue;
        }
        if (!out.empty()) out += '&';
        out.append(part);
    }
    return out;
}

bool client_is_retrying(std::string_view retry_count) {
    while (!retry_count.empty() && retry_count.front() == ' ') retry_count.remove_prefix(1);
    bool digits = !retry_count.empty() && retry_count.size() <= 9;
    for (char ch : retry_count) digits = digits && ch >= '0' && ch <= '9';
    return digits && retry_count.find_first_not_of('0') != std::string_view::npos;
}

std::string gateway_error_body(ApiFamily api, int status, std::string_view code,
                               std::string_view message, std::string_view type) {
    std::string out;
    switch (api) {
        case ApiFamily::OpenAI:
            return json_error(code, message, type);
        case ApiFamily::Anthropic:
            out.append("{\"type\":\"error\",\"error\":{\"type\":");
            append_json_string(out, anthropic_type(status));
            out.append(",\"message\":");
            append_json_string(out, message);
            out.append("}}");
            return out;
        case ApiFamily::Google:
            out.append("{\"error\":{\"code\":").append(std::to_string(status));
            out.append(",\"message\":");
            append_json_string(out, message);
            out.append(",\"status\":");
            append_json_string(out, google_status(status));
            out.append("}}");
            return out;
    }
    return json_error(code, message, type);
}

}  // namespace byok
