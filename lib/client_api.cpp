#include "lib/client_api.h"

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

// The credential headers, lower case: the four that may carry the gateway
// key (in ClientCredentials order), then a proxy's, which the gateway reads
// nothing from but never forwards.
constexpr std::string_view kCredentialNames[] = {"authorization", "x-api-key", "api-key",
                                                 "x-goog-api-key", "proxy-authorization"};
constexpr std::string_view ClientCredentials::*kCredentialSlots[] = {
    &ClientCredentials::authorization, &ClientCredentials::x_api_key, &ClientCredentials::api_key,
    &ClientCredentials::x_goog_api_key};

// credential_index compares a name with the one entry of its length only.
constexpr bool lengths_differ() {
    for (size_t i = 0; i < std::size(kCredentialNames); ++i)
        for (size_t j = i + 1; j < std::size(kCredentialNames); ++j)
            if (kCredentialNames[i].size() == kCredentialNames[j].size()) return false;
    return true;
}
static_assert(lengths_differ(), "credential header names must differ in length");

// Index of `name` in kCredentialNames, -1 for any other header. Every client
// header passes here twice per request (issue 18): the length picks the one
// candidate, so most headers cost one switch.
int credential_index(std::string_view name) {
    int i;
    switch (name.size()) {
        case kCredentialNames[0].size():
            i = 0;
            break;
        case kCredentialNames[1].size():
            i = 1;
            break;
        case kCredentialNames[2].size():
            i = 2;
            break;
        case kCredentialNames[3].size():
            i = 3;
            break;
        case kCredentialNames[4].size():
            i = 4;
            break;
        default:
            return -1;
    }
    return iequals(name, kCredentialNames[i]) ? i : -1;
}

}  // namespace

std::string_view *credential_slot(ClientCredentials &c, std::string_view name) {
    int i = credential_index(name);
    return i >= 0 && i < (int)std::size(kCredentialSlots) ? &(c.*kCredentialSlots[i]) : nullptr;
}

bool is_credential_header(std::string_view name) { return credential_index(name) >= 0; }

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
