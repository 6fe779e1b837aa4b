// Admin API input (lib/admin.h): fuzzed method, path, query, content type,
// credentials and body through byok::admin::handle() with a valid admin
// token most of the time. Redis calls get Nil / Unavailable / small replies
// for a few rounds, outbound HTTP and probes fail; handle() must never
// throw and must always end in a JSON response.
//
// Input layout: byte 0 = method, byte 1 = flags (auth, content type, reply
// script), then "path\nquery\nbody...".
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "lib/admin.h"

using namespace byok;
using namespace byok::admin;

namespace {

const char kToken[] = "0123456789abcdef0123456789abcdef0123456789abcdef";

struct World {
    Catalog catalog = Catalog::builtin();
    KeyRing ring = KeyRing::parse("k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", "fuzz");
    Config cfg;
    World() {
        cfg.catalog = &catalog;
        cfg.ring = &ring;
        cfg.admin_tokens = {kToken};
        cfg.allow_endpoint = {"127.0.0.1"};
        cfg.clock.now = [] { return int64_t{1700000000}; };
    }
};

Reply reply_for(unsigned script, int round) {
    Reply r;
    switch ((script >> (2 * (round % 4))) & 3) {
        case 0:
            r.type = Reply::Type::Nil;
            break;
        case 1:
            r.type = Reply::Type::Unavailable;
            break;
        case 2:
            r.type = Reply::Type::Integer;
            r.integer = 1;
            break;
        default:
            r.type = Reply::Type::Array;
            break;  // empty array
    }
    return r;
}

std::string_view take_line(std::string_view &s) {
    size_t nl = s.find('\n');
    std::string_view line = s.substr(0, nl);
    s = nl == std::string_view::npos ? std::string_view() : s.substr(nl + 1);
    return line;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static World world;
    if (size < 2) return 0;
    static const char *const kMethods[] = {"GET",    "POST", "PUT",     "PATCH",
                                           "DELETE", "HEAD", "OPTIONS", "TRACE"};
    std::string_view method = kMethods[data[0] & 7];
    unsigned flags = data[1];
    std::string_view rest(reinterpret_cast<const char *>(data) + 2, size - 2);
    std::string path(take_line(rest));
    std::string_view query = take_line(rest);

    std::string auth = std::string("Bearer ") + kToken;
    Request req;
    req.method = method;
    req.path = path;
    req.query = query;
    req.content_type = (flags & 1) ? "text/plain" : "application/json";
    req.authorization = (flags & 2) ? std::string_view("Bearer nope") : std::string_view(auth);
    req.body = rest;

    Step step;
    try {
        step = handle(world.cfg, req);
        unsigned script = flags >> 2;
        for (int round = 0; round < 6; round++) {
            if (auto *call = std::get_if<RedisCall>(&step.action)) {
                if (call->argv.empty()) abort();
                step = call->next(reply_for(script, round));
            } else if (auto *http = std::get_if<HttpCall>(&step.action)) {
                step = http->next(HttpResult{});  // connect error
            } else if (auto *probe = std::get_if<ProbeCall>(&step.action)) {
                ProbeResult pr;
                pr.stage = "connect";
                pr.message = "refused";
                step = probe->next(pr);
            } else {
                break;
            }
        }
    } catch (...) {
        abort();  // handle() and every continuation promise not to throw
    }
    if (auto *resp = std::get_if<Response>(&step.action)) {
        if (resp->status < 100 || resp->status > 599) abort();
        if (resp->status >= 400 && (resp->body.empty() || resp->body[0] != '{')) abort();
    }
    return 0;
}
