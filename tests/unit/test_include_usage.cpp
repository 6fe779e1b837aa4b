// Issue 13 stretch: the include_usage injection planned from the facts the
// body scan (ModelScanner) reports in its single pass, so bodies of any size
// are handled without a second read or a copy.
#include <criterion/criterion.h>

#include <string>

#include "lib/body.h"
#include "lib/metering.h"

using namespace byok;

namespace {

StreamFacts facts_split(const std::string &body, size_t at) {
    ModelScanner s;
    s.feed(std::string_view(body).substr(0, at));
    s.feed(std::string_view(body).substr(at));
    s.finish();
    return s.stream_facts();
}

StreamFacts facts(const std::string &body) { return facts_split(body, body.size()); }

}  // namespace

Test(include_usage, i13_04_scanner_reports_stream_at_every_split) {
    std::string body = R"(  {"model":"gpt-4o","str\u0065am" : true,"messages":[{"stream":false}]})";
    for (size_t at = 0; at <= body.size(); at++) {
        StreamFacts f = facts_split(body, at);
        cr_assert(f.stream, "split at %zu", at);
        cr_assert(!f.stream_options, "split at %zu", at);
        cr_assert_eq(f.object_start, 3u, "split at %zu", at);
    }
}

Test(include_usage, i13_04_scanner_stream_rules) {
    cr_assert(!facts(R"({"stream":false})").stream);
    cr_assert(!facts(R"({"stream":"true"})").stream);
    cr_assert(!facts(R"({"messages":[{"stream":true}]})").stream);  // not top level
    cr_assert(!facts(R"({"x":{"stream":true}})").stream);
    cr_assert(facts(R"({"stream":false,"stream":true})").stream);  // the last one wins
    cr_assert(!facts(R"({"stream":true,"stream":null})").stream);
    cr_assert(facts(R"({"stream":true,"stream_options":null})").stream_options);
    cr_assert(!facts(R"({"stream":true,"stream_optionsx":{}})").stream_options);
    cr_assert(!facts(R"({"stream":true,"x":{"stream_options":{}}})").stream_options);
    // The longer key window still tells "model" from longer keys.
    cr_assert(!find_model(R"({"modelx":"a"})").has_value());
    cr_assert_eq(find_model(R"({"stream_options_long_key":1,"model":"m"})")->model, "m");
}

Test(include_usage, i13_04_bodies_over_64_kib_are_planned) {
    std::string big(200 * 1024, 'x');
    std::string body = R"({"model":"gpt-4o","messages":[{"role":"user","content":")" + big +
                       R"("}],"stream":true})";
    auto e = plan_include_usage(true, "/chat/completions", facts(body));
    cr_assert(e.has_value());
    cr_assert_eq(e->offset, 1u);
    cr_assert_eq(e->bytes, R"("stream_options":{"include_usage":true},)");
    // The one-piece form agrees with the facts form.
    auto same = plan_include_usage(true, "/chat/completions", std::string_view(body));
    cr_assert(same.has_value() && same->offset == e->offset && same->bytes == e->bytes);
    cr_assert(!plan_include_usage(true, "/chat/completions",
                                  facts(R"({"stream":true,"stream_options":{}})")));
    cr_assert(!plan_include_usage(false, "/chat/completions", facts(body)));  // native path
    cr_assert(!plan_include_usage(true, "/chat/completions", std::string_view("{broken")));
}
