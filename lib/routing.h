// Provider resolution and credential choice (SPEC §4) as a pure function.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lib/catalog.h"
#include "lib/project.h"
#include "lib/small_vec.h"

namespace byok {

enum class Route { Byok, System, Fallback, Denied };
std::string_view route_name(Route r);  // "byok" | "system" | "fallback" | "denied"

// Of all the provider's keys (issue 14: several): Usable when one may serve;
// else why not — all inactive, all expired, all unhealthy (invalid,
// exhausted, cooling, breaker), or none decrypts.
enum class KeyState { Usable, Inactive, DecryptError, Expired, Unhealthy };

// The per-provider rows of a RouteInput. Their ids are views of the
// snapshot and the configuration, which outlive the request's input; issue
// 18: filled per request without allocating.
using KeyStateRows = SmallVec<std::pair<std::string_view, KeyState>, 8>;
using RetryRows = SmallVec<std::pair<std::string_view, int64_t>, 4>;
using ProviderIds = SmallVec<std::string_view, 8>;

struct RouteInput {
    const Catalog *catalog = nullptr;
    Tier tier = Tier::Free;
    Policy policy = Policy::Auto;
    // State of each provider key the project stores (absent = no key).
    KeyStateRows project_keys;
    // Unhealthy providers: seconds until the soonest of their keys may serve
    // again (0 = none will on its own: all invalid).
    RetryRows keys_retry_in_s;
    ProviderIds system_keys;             // provider ids with an operator key
    std::string_view fallback_provider;  // "" = fallback off (a view of the configuration)
    bool fallback_on_rate_limit = true;  // project setting; false: a 429 reaches the client
    // The request.
    std::string_view native_provider;  // "<id>" of /<id>/..., empty on /v1/...
    std::string_view header_provider;  // x-byok-provider, empty when absent
    std::string_view model;            // body "model", empty when none
    // A /v1 request without a JSON body (GET /v1/models, an upload to
    // /v1/files): unless a multipart "model" field names one, it names no
    // model, so it goes to the project's default_provider (setting), else
    // the first catalog provider the project has a usable key for, else the
    // usual rules (the fallback provider).
    bool bodiless = false;
    std::string_view default_provider;
    // The client retries on its own (x-stainless-retry-count > 0, or an
    // Idempotency-Key seen within the last minute): a retry of ours on top
    // would multiply the calls.
    bool client_retrying = false;
};

struct RouteDecision {
    Route route = Route::Denied;
    const Provider *provider = nullptr;  // the requested provider P
    const Provider *target = nullptr;    // the provider actually called
    // why not byok: no_key|tier|inactive|expired|key_unhealthy|decrypt_error|upstream_*
    std::string reason;
    std::string model;  // model to send upstream ("" = leave body alone)
    bool model_changed = false;
    // Denied only: HTTP status and OpenAI-style error code/message. Every
    // denial is a configuration problem the client cannot retry away, so a
    // 4xx (SDKs retry 5xx by default): 400 bad request, 403 not allowed or
    // no credential, 404 unknown native provider, 422 stored key unusable.
    int status = 0;
    int64_t retry_after_s = 0;  // > 0: a Retry-After for the denial
    std::string error_code;
    std::string error_message;
};

RouteDecision decide_route(const RouteInput &in);

// Retry after the direct call failed before any response byte
// (`upstream_reason` = "upstream_<status>" or "upstream_error"). Only under
// policy auto, only on the unified endpoint, only when the first route was
// byok or system and a fallback provider other than the target exists.
// Not when the client is retrying itself, nor on "upstream_429" when the
// project turned fallback_on_rate_limit off.
std::optional<RouteDecision> decide_retry(const RouteInput &in, const RouteDecision &first,
                                          std::string_view upstream_reason);

// Which failures of the first call the glue must catch so that decide_retry
// can act on them; the rest go to the client as the provider sent them.
enum class RetryOn { Nothing, ServerErrors, ServerErrorsAnd429 };
RetryOn retry_on(const RouteInput &in, const RouteDecision &first);

// The answer to a unified GET /v1/models that routes nowhere (no
// x-byok-provider, fallback off or without a system key, so `d` is Denied
// unknown_model): instead of that 400, the model globs of the providers the
// project has usable keys for, as the catalog lists them, in the OpenAI list
// shape {"object":"list","data":[{"id","object":"model","owned_by":<id>}]}.
// nullopt for any other request. `rest` is the path after /v1 (query allowed).
std::optional<std::string> models_list_answer(const RouteInput &in, const RouteDecision &d,
                                              std::string_view method, std::string_view rest);

}  // namespace byok
