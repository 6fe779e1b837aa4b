// Helpers shared by the admin unit tests: fixed key rings and tokens, Step
// accessors that fail the test on the wrong kind, and Redis reply builders.
#pragma once

#include <criterion/criterion.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "lib/admin.h"

namespace byok::admin::test {

inline const char *kAdminToken = "admin-token-0123456789";
inline const char *kRing1 = "k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";
inline const char *kRing21 =
    "k2 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n"
    "k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";

inline const Catalog &catalog() {
    static Catalog c = Catalog::builtin();
    return c;
}
inline const KeyRing &ring1() {
    static KeyRing r = KeyRing::parse(kRing1, "ring1");
    return r;
}
inline const KeyRing &ring21() {
    static KeyRing r = KeyRing::parse(kRing21, "ring21");
    return r;
}

inline const Response &response(const Step &s) {
    cr_assert(std::holds_alternative<Response>(s.action), "expected a Response");
    return std::get<Response>(s.action);
}
inline const RedisCall &redis_call(const Step &s) {
    cr_assert(std::holds_alternative<RedisCall>(s.action), "expected a RedisCall, got %s",
              std::holds_alternative<Response>(s.action) ? std::get<Response>(s.action).body.c_str()
                                                         : "another step");
    return std::get<RedisCall>(s.action);
}
inline const HttpCall &http_call(const Step &s) {
    cr_assert(std::holds_alternative<HttpCall>(s.action), "expected an HttpCall");
    return std::get<HttpCall>(s.action);
}
inline const ProbeCall &probe_call(const Step &s) {
    cr_assert(std::holds_alternative<ProbeCall>(s.action), "expected a ProbeCall");
    return std::get<ProbeCall>(s.action);
}

inline Step feed(const Step &s, const Reply &r) { return redis_call(s).next(r); }
inline nlohmann::json body_of(const Step &s) { return nlohmann::json::parse(response(s).body); }
inline std::string error_code(const Step &s) {
    return body_of(s)["error"]["code"].get<std::string>();
}
inline std::string error_message(const Step &s) {
    return body_of(s)["error"]["message"].get<std::string>();
}

inline Reply integer(long long n) {
    Reply r;
    r.type = Reply::Type::Integer;
    r.integer = n;
    return r;
}
inline Reply str(std::string s) {
    Reply r;
    r.type = Reply::Type::String;
    r.str = std::move(s);
    return r;
}
inline Reply arr(std::vector<Reply> e) {
    Reply r;
    r.type = Reply::Type::Array;
    r.elements = std::move(e);
    return r;
}
inline Reply hash(std::vector<std::pair<std::string, std::string>> kv) {
    std::vector<Reply> e;
    for (auto &[k, v] : kv) {
        e.push_back(str(k));
        e.push_back(str(v));
    }
    return arr(std::move(e));
}
inline Reply code(long long c) { return arr({integer(c)}); }
inline Reply unavailable() {
    Reply r;
    r.type = Reply::Type::Unavailable;
    return r;
}

}  // namespace byok::admin::test
