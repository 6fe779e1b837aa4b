// How the gateway meets unmodified provider SDKs (issue 17): which request
// values may carry the gateway key, and the error shape each SDK parses.
#pragma once

#include <string>
#include <string_view>

namespace byok {

// The API a request speaks. Native /anthropic/... and /google/... paths
// speak their provider's API; every other path (and /v1) speaks OpenAI's.
enum class ApiFamily { OpenAI, Anthropic, Google };
ApiFamily api_family(std::string_view native_provider);

// Values that may hold the gateway key, as the glue found them (empty =
// absent). The glue strips all of them before proxying.
struct ClientCredentials {
    std::string_view authorization;   // whole header value ("Bearer <key>")
    std::string_view x_api_key;       // OpenAI-compatible and Anthropic SDKs
    std::string_view api_key;         // Azure-style clients
    std::string_view x_goog_api_key;  // Google SDKs
    std::string_view query_key;       // `key=` query parameter (Google curl examples)
};

// The one list of request headers the gateway reads or strips (names in
// any case): the four that may carry the gateway key (in ClientCredentials
// order), a proxy's credential, the provider choice, the SDK's retry count
// and the body's type. Every client header passes here twice a request
// (read, then stripped): one length lookup and at most one compare.
enum class RequestHeader {
    Authorization,
    XApiKey,
    ApiKey,
    XGoogApiKey,
    ProxyAuthorization,
    ByokProvider,  // x-byok-provider
    RetryCount,    // x-stainless-retry-count
    ContentType,
    Other
};
RequestHeader request_header(std::string_view name);
// The credential headers are the first five; they and x-byok-provider (a
// gateway control) are never forwarded to a provider.
inline bool is_credential_header(RequestHeader h) { return h <= RequestHeader::ProxyAuthorization; }
inline bool never_forwarded(RequestHeader h) { return h <= RequestHeader::ByokProvider; }
// `credential_slot` is the field of `c` a header fills, nullptr for any
// other header; `is_credential_header` is true for those and for
// proxy-authorization.
std::string_view *credential_slot(ClientCredentials &c, RequestHeader h);
std::string_view *credential_slot(ClientCredentials &c, std::string_view name);
bool is_credential_header(std::string_view name);

// The gateway key, or an error message for the 401. Sources in order, the
// first one present wins: Authorization: Bearer, x-api-key, api-key, and on
// the Google API only x-goog-api-key then `key=` (elsewhere those two are
// ignored, so a stray Google key is never mistaken for ours). The key must
// look like a gateway key (byok_..., 8..256 printable bytes).
// "Bearer <token>" (scheme case-insensitive, then a space or a tab;
// surrounding blanks trimmed) → the token, else empty. The one Bearer
// parser: gateway keys here, admin tokens and gateway keys in lib/admin.
std::string_view bearer_token(std::string_view authorization);
// The shape of a gateway key: "byok_" and 8..256 printable bytes in all
// (minted keys are "byok_" + 43 base64url characters).
bool looks_like_gateway_key(std::string_view key);

struct GatewayKeyLookup {
    std::string_view key;    // empty on error
    std::string_view error;  // empty on success
};
GatewayKeyLookup find_gateway_key(const ClientCredentials &c, ApiFamily api);

// A query string without its `key` parameters — names compared after
// percent-decoding and case-insensitively (`Key=`, `KEY=`, `%6bey=`), other
// parameters keep their bytes and order. The first key's value is stored in
// `*key` when given (undecoded: gateway keys need no percent-encoding).
std::string strip_key_param(std::string_view args, std::string_view *key);

// x-stainless-retry-count (OpenAI, Anthropic and other Stainless SDKs): a
// count above 0 means the SDK is retrying by itself.
bool client_is_retrying(std::string_view retry_count);

// The gateway's own error body in the shape the client's SDK parses:
//   OpenAI    {"error":{"message":m,"type":type,"code":code}}
//   Anthropic {"type":"error","error":{"type":<from status>,"message":m}}
//   Google    {"error":{"code":status,"message":m,"status":<from status>}}
std::string gateway_error_body(ApiFamily api, int status, std::string_view code,
                               std::string_view message, std::string_view type);

}  // namespace byok
