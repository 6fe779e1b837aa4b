// The web console's serving rules (issue 15).
#include <criterion/criterion.h>

#include <string>

#include "lib/console.h"

using namespace byok;
using namespace byok::console;

namespace {

const Asset kTable[] = {
    {"index.html", "text/html; charset=utf-8", false, "<meta content=\"@BYOK_API@\">"},
    {"app.0123456789.js", "text/javascript; charset=utf-8", true, "export {};"},
};

std::string header(std::string_view name) {
    for (const auto &h : security_headers())
        if (h.name == name) return h.value;
    return "";
}

}  // namespace

Test(console, i15_index_is_the_default_and_names_match_whole) {
    cr_assert_eq(find(kTable, 2, ""), &kTable[0]);
    cr_assert_eq(find(kTable, 2, "index.html"), &kTable[0]);
    cr_assert_eq(find(kTable, 2, "app.0123456789.js"), &kTable[1]);
    for (const char *bad : {"app.js", "../index.html", "index.html/", "./index.html", "INDEX.HTML",
                            "app.0123456789.js?x", "x/index.html"})
        cr_assert_null(find(kTable, 2, bad), "%s", bad);
}

Test(console, i15_hashed_assets_are_immutable_index_is_no_cache) {
    cr_assert_eq(std::string(cache_control(kTable[0])), "no-cache");
    cr_assert_eq(std::string(cache_control(kTable[1])), "public, max-age=31536000, immutable");
}

Test(console, i15_security_headers_forbid_inline_code_and_framing) {
    std::string csp = header("Content-Security-Policy");
    cr_assert(csp.find("default-src 'self'") != std::string::npos);
    cr_assert(csp.find("frame-ancestors 'none'") != std::string::npos);
    cr_assert(csp.find("unsafe-inline") == std::string::npos);
    cr_assert(csp.find("unsafe-eval") == std::string::npos);
    cr_assert_eq(header("X-Frame-Options"), "DENY");
    cr_assert_eq(header("Referrer-Policy"), "no-referrer");
    cr_assert_eq(header("X-Content-Type-Options"), "nosniff");
}

Test(console, i15_api_path_is_checked_and_rendered_into_the_index) {
    cr_assert_eq(api_problem("/admin/v1/"), "");
    cr_assert_eq(api_problem("/gw-admin/api_v2/"), "");
    for (const char *bad : {"", "admin/v1/", "/admin/v1", "https://evil/admin/", "//evil/",
                            "/a/../b/", "/a\"><script>/", "/a b/", "/a?x/"})
        cr_assert_neq(api_problem(bad), "", "%s", bad);
    cr_assert_eq(render_index(kTable[0].body, "/admin/v1/"), "<meta content=\"/admin/v1/\">");
    cr_assert_eq(render_index("no placeholder", "/x/"), "no placeholder");
}
