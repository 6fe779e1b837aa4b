// The web console (issue 15): which embedded asset answers a path and with
// which headers. The assets themselves are generated from console/ at build
// time (scripts/embed_console.py) and linked into the module only; lib/ sees
// them as a table so every rule here is unit-tested without nginx.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "lib/catalog.h"

namespace byok::console {

struct Asset {
    std::string_view path;          // "index.html", "app.3f9a0c12b4.js"
    std::string_view content_type;  // full header value
    bool immutable;                 // content-hashed name: cache forever
    std::string_view body;
};

// The index page carries this placeholder where byok_console's api= path goes.
inline constexpr std::string_view kApiPlaceholder = "@BYOK_API@";
inline constexpr std::string_view kIndex = "index.html";

// "" when `api` may be given to `byok_console api=`, else why not. Same-origin
// paths only ("/admin/v1/"): the CSP allows no other origin, and the value is
// written into the page, so its characters are restricted.
std::string api_problem(std::string_view api);

// index.html with the placeholder replaced by `api` (checked by api_problem).
std::string render_index(std::string_view tmpl, std::string_view api);

// The asset for `rel` (the URI after the location prefix; "" = the index),
// or nullptr. No directory traversal is possible: names are compared whole.
const Asset *find(const Asset *table, size_t count, std::string_view rel);

// Headers of every console response (assets, 404s and 405s alike).
std::vector<Header> security_headers();
// Cache-Control value for an asset.
std::string_view cache_control(const Asset &a);

}  // namespace byok::console
