// The per-project usage counters (SPEC: Usage): one hash per project and UTC
// day, one field per provider and route, counted by the gateway's log phase
// and read by GET /projects/{pid}/stats. The one place that spells the field.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "lib/layout.h"
#include "lib/routing.h"

namespace byok {

// The hash of `pid`'s counters for the UTC day of `now` (seconds).
std::string usage_key(const Layout &layout, std::string_view pid, int64_t now);
// The same for the day `yyyymmdd` (the gateway formats it once a second).
std::string usage_key(const Layout &layout, std::string_view pid, std::string_view yyyymmdd);
// "<provider>:<route>".
std::string usage_field(std::string_view provider, Route route);
// The same from the route's name (route_name()), as a metering row holds it.
std::string usage_field(std::string_view provider, std::string_view route);
// The provider and route of a field, nullopt for anything else. Provider
// ids hold no ':', but the split is at the last one all the same.
std::optional<std::pair<std::string, std::string>> parse_usage_field(std::string_view field);

}  // namespace byok
