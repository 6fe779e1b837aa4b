#include "lib/usage.h"

#include "lib/util.h"

namespace byok {

std::string usage_key(const Layout &layout, std::string_view pid, int64_t now) {
    return usage_key(layout, pid, yyyymmdd_utc(now));
}

std::string usage_key(const Layout &layout, std::string_view pid, std::string_view yyyymmdd) {
    return layout.usage(pid, yyyymmdd);
}

std::string usage_field(std::string_view provider, Route route) {
    return usage_field(provider, route_name(route));
}

std::string usage_field(std::string_view provider, std::string_view route) {
    std::string field(provider);
    return field.append(":").append(route);
}

std::optional<std::pair<std::string, std::string>> parse_usage_field(std::string_view field) {
    size_t colon = field.rfind(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == field.size())
        return std::nullopt;
    return std::make_pair(std::string(field.substr(0, colon)),
                          std::string(field.substr(colon + 1)));
}

}  // namespace byok
