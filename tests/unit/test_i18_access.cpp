// Issue 18, the access handler's decision without copies: the route input's
// rows are views kept inline (SmallVec), the request's rest is a view of its
// URI, the body scanner keeps the top-level key inline and reuses the body
// kind the request parse found.
#include <criterion/criterion.h>

#include <memory>

#include "lib/body.h"
#include "lib/gateway.h"
#include "lib/multipart.h"
#include "lib/record.h"
#include "lib/small_vec.h"
#include "lib/text.h"

#include "tests/unit/test_support.h"

using namespace byok;

namespace {

GatewaySnapshot snapshot() {
    return build_snapshot(
        {{"project", "acme"}, {"id", "g1"}, {"revoked", "0"}},
        {{"name", "Acme"}, {"tier", "pro"}, {"fallback", "auto"}},
        {{"openai", serialize_key_set({test::openai_key("sk-live-0001", "k_000000000001"),
                                       test::openai_key("sk-live-0002", "k_000000000002")})}});
}

GatewayConfig config() {
    static const Catalog cat = Catalog::builtin();
    GatewayConfig cfg;
    cfg.catalog = &cat;
    cfg.ring = &test::test_ring();
    cfg.system_key_providers = {"openrouter", "groq"};
    cfg.system_key = [](std::string_view) -> const SecretString * { return nullptr; };
    cfg.fallback_provider = "openrouter";
    return cfg;
}

GatewayRequest parse(std::string_view uri) {
    GatewayRequestIn in;
    in.uri = uri;
    in.creds.authorization = "Bearer byok_0123456789abcdef";
    in.content_type = "application/json";
    return parse_gateway_request(in);
}

bool inside(std::string_view part, std::string_view whole) {
    return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

}  // namespace

Test(i18_access, i18_access_01_small_vec_keeps_order_inline_and_beyond) {
    SmallVec<int, 3> v{1, 2};
    cr_assert_eq(v.size(), 2u);
    for (int i = 3; i <= 10; i++) v.push_back(i);  // past the inline capacity
    cr_assert_eq(v.size(), 10u);
    int want = 1;
    for (int x : v) cr_assert_eq(x, want++);
    SmallVec<int, 3> copy = v;
    v.clear();
    cr_assert(v.empty());
    v.emplace_back(7);
    cr_assert_eq(v[0], 7);
    cr_assert_eq(copy.size(), 10u);
    cr_assert_eq(copy[9], 10);
    copy = v;  // back to inline storage
    cr_assert_eq(copy.size(), 1u);
    cr_assert_eq(*copy.begin(), 7);
}

Test(i18_access, i18_access_01_route_rows_are_views_of_the_snapshot_and_the_config) {
    const GatewayConfig cfg = config();
    GatewaySnapshot snap = snapshot();
    RouteInput in;
    KeyAttempts att;
    RoutePlan p =
        plan_route(cfg, snap, parse("/v1/chat/completions"), "POST", true, "gpt-4o", &in, &att);
    cr_assert(p.action == RoutePlan::Action::Proxy);
    cr_assert_eq(p.key.view(), "sk-live-0001");
    cr_assert_eq(in.project_keys.size(), 1u, "one row per provider");
    cr_assert_eq(in.project_keys[0].first.data(), snap.keys[0].provider.data(), "no copy");
    cr_assert_eq(in.system_keys.size(), 2u);
    cr_assert_eq(in.system_keys[0].data(), cfg.system_key_providers[0].data(), "no copy");
    cr_assert_eq(att.tried.size(), 1u);
    cr_assert_eq(att.tried[0].data(), snap.keys[0].id.data(), "no copy");
    // The sibling is the other key, found through the views.
    auto sib = plan_sibling(cfg, snap, p.decision, &att);
    cr_assert(sib.has_value());
    cr_assert_eq(sib->key.view(), "sk-live-0002");
    cr_assert_eq(att.tried.size(), 2u);
}

Test(i18_access, i18_access_01_a_row_list_longer_than_its_inline_part_still_decides) {
    RouteInput in;
    static const Catalog cat = Catalog::builtin();
    in.catalog = &cat;
    in.tier = Tier::Pro;
    const char *ids[] = {"groq",     "mistral", "together", "perplexity", "cohere",
                         "deepseek", "google",  "ollama",   "anthropic",  "openai"};
    for (const char *id : ids) in.project_keys.emplace_back(id, KeyState::Inactive);
    in.project_keys[9].second = KeyState::Usable;  // beyond the inline rows
    in.model = "gpt-4o";
    RouteDecision d = decide_route(in);
    cr_assert(d.route == Route::Byok);
    cr_assert_eq(d.target->id, "openai");
}

Test(i18_access, i18_access_03_rest_is_a_view_of_the_uri) {
    std::string uri = "/v1/chat/completions?limit=2&after=x";
    GatewayRequest req = parse(uri);
    cr_assert(!req.error);
    cr_assert_eq(req.rest, "/chat/completions?limit=2&after=x");
    cr_assert(inside(req.rest, uri), "a view, not a copy");
    cr_assert(!req.rest_built);
    std::string bare = "/openai/v1/models";
    req = parse(bare);
    cr_assert_eq(req.rest, "/v1/models");
    cr_assert(inside(req.rest, bare));
    cr_assert_eq(parse("/v1").rest, "/");
    cr_assert_eq(parse("/v1?x=1").rest, "/?x=1");
    cr_assert_eq(parse("/v1/models?").rest, "/models");
}

Test(i18_access, i18_access_03_a_rest_without_key_survives_moves_of_the_request) {
    std::unique_ptr<GatewayRequest> first = std::make_unique<GatewayRequest>(
        parse("/openai/v1/models?key=byok_0123456789abcdef&limit=2"));
    cr_assert_eq(*first->clean_uri, "/openai/v1/models?limit=2");
    GatewayRequest moved = std::move(*first);
    GatewayRequest copied = moved;
    first.reset();
    moved = GatewayRequest();
    cr_assert_eq(copied.rest, "/v1/models?limit=2");
    cr_assert_not(copied.rest.find("key=") != std::string_view::npos);
}

Test(i18_access, i18_access_02_top_level_keys_are_read_inline_at_every_split) {
    // Keys near the kept length: "stream_options" (14), a longer key that
    // starts like it, an escaped "model", and a 15+ byte key starting "model".
    const std::string body =
        "{\"stream_optionsX\":1,\"modelxxxxxxxxxxxxxx\":\"no\",\"str\\u0065am\":true,"
        "\"m\\u006fdel\":\"gpt-\\u00e9\",\"messages\":[{\"model\":\"nested\"}]}";
    auto whole = find_model(body);
    cr_assert(whole.has_value());
    cr_assert_eq(whole->model, "gpt-\xc3\xa9");
    for (size_t cut = 0; cut <= body.size(); cut++) {
        ModelScanner s;
        s.feed(std::string_view(body).substr(0, cut));
        s.feed(std::string_view(body).substr(cut));
        auto m = s.finish();
        cr_assert(m.has_value(), "cut %zu", cut);
        cr_assert_eq(m->model, whole->model, "cut %zu", cut);
        cr_assert_eq(m->begin, whole->begin, "cut %zu", cut);
        cr_assert_eq(m->end, whole->end, "cut %zu", cut);
        cr_assert(s.stream_facts().stream, "cut %zu: the escaped \"stream\" counts", cut);
        cr_assert_not(s.stream_facts().stream_options, "cut %zu: a longer key is another", cut);
    }
    ModelScanner s;
    s.feed("{\"stream_options\":{},\"model\":\"a\"}");
    cr_assert(s.finish().has_value());
    cr_assert(s.stream_facts().stream_options);
}

Test(i18_access, i18_access_02_duplicate_model_is_still_refused_past_the_first) {
    // The whole body is read: a second top-level "model" after the first,
    // even with everything the request needs known, is refused.
    cr_assert_throw(find_model("{\"model\":\"a\",\"x\":1,\"model\":\"b\"}"), Error);
    cr_assert_throw(find_model("{\"model\":\"a\",\"x\":[1,}"), Error);
}

Test(i18_access, i18_access_02_body_scanner_with_a_known_kind_reads_the_same) {
    const std::string ct = "multipart/form-data; boundary=XyZ";
    const std::string body =
        "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ--\r\n";
    BodyScanner a(ct), b(body_kind(ct), ct);
    cr_assert(a.kind() == b.kind());
    a.feed(body);
    b.feed(body);
    auto ma = a.finish(), mb = b.finish();
    cr_assert(ma && mb);
    cr_assert_eq(ma->model, mb->model);
    cr_assert_eq(ma->begin, mb->begin);
    cr_assert_eq(ma->end, mb->end);
}

Test(i18_access, i18_access_03_iequals_folds_letters_only) {
    cr_assert(iequals("Content-Type", "content-type"));
    cr_assert(iequals("X-BYOK-Provider", "x-byok-provider"));
    cr_assert_not(iequals("@", "`"), "0x40/0x60 are not letters");
    cr_assert_not(iequals("[", "{"));
    cr_assert_not(iequals("content-typf", "content-type"));
    cr_assert_not(iequals("abc", "abcd"));
}
