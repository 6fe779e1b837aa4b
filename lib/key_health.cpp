#include "lib/key_health.h"

#include <algorithm>
#include <cstdlib>

#include "lib/admin_internal.h"
#include "lib/layout.h"
#include "lib/record.h"

namespace byok {

namespace {

constexpr std::string_view kNames[] = {"healthy", "invalid", "exhausted", "cooling", "breaker"};
constexpr std::string_view kMessagePrefix = "~health ";

// "1s", "6m0s", "1m30.5s", "20ms", "2h", or a bare number of seconds, as ms.
std::optional<int64_t> duration_ms(std::string_view s) {
    if (s.empty() || s.size() > 32) return std::nullopt;
    std::string text(s);
    const char *p = text.c_str();
    char *end = nullptr;
    double total = 0;
    bool any = false;
    while (*p) {
        double v = std::strtod(p, &end);
        if (end == p || v < 0) return std::nullopt;
        p = end;
        any = true;
        if (*p == '\0') {
            if (total != 0) return std::nullopt;  // "1m30" is ambiguous
            total = v * 1000;
            break;
        }
        if (p[0] == 'm' && p[1] == 's') {
            total += v;
            p += 2;
        } else if (*p == 'h') {
            total += v * 3600000;
            p++;
        } else if (*p == 'm') {
            total += v * 60000;
            p++;
        } else if (*p == 's') {
            total += v * 1000;
            p++;
        } else {
            return std::nullopt;
        }
    }
    if (!any || total > 1e12) return std::nullopt;
    return static_cast<int64_t>(total);
}

}  // namespace

std::string_view health_name(HealthState s) { return kNames[static_cast<int>(s)]; }

std::optional<HealthState> parse_health_name(std::string_view s) {
    for (size_t i = 0; i < std::size(kNames); ++i)
        if (kNames[i] == s) return static_cast<HealthState>(i);
    return std::nullopt;
}

Outcome classify_upstream(int status, bool quota_exhausted) {
    if (status >= 200 && status < 300) return Outcome::Success;
    if (status == 401 || status == 403) return Outcome::Unauthorized;
    if (status == 402) return Outcome::Exhausted;
    if (status == 429) return quota_exhausted ? Outcome::Exhausted : Outcome::RateLimited;
    if (status == 0 || status >= 500) return Outcome::Failure;
    return Outcome::Neutral;
}

int64_t cooling_until(int64_t now_ms, std::string_view retry_after,
                      const std::vector<std::string_view> &reset_headers,
                      const HealthPolicy &policy) {
    std::optional<int64_t> wait;
    if (!retry_after.empty()) {
        bool digits = std::all_of(retry_after.begin(), retry_after.end(), ::isdigit);
        if (digits && retry_after.size() <= 9) wait = std::stoll(std::string(retry_after)) * 1000;
    }
    if (!wait) {
        for (auto h : reset_headers) {
            std::optional<int64_t> ms = duration_ms(h);
            if (!ms) {
                if (auto at = parse_rfc3339(h)) ms = std::max<int64_t>(0, *at * 1000 - now_ms);
            }
            if (ms && (!wait || *ms < *wait)) wait = ms;
        }
    }
    int64_t ms = wait.value_or(policy.cooling_ms);
    ms = std::clamp<int64_t>(ms, 1000, policy.max_cooling_ms);
    return now_ms + ms;
}

bool apply_outcome(KeyHealth &h, Outcome o, int64_t now_ms, int64_t until_ms,
                   const HealthPolicy &policy) {
    HealthState before = effective_state(h, now_ms);
    switch (o) {
        case Outcome::Neutral:
            return false;
        case Outcome::Success:
            h.fails = 0;
            h.window_start_ms = 0;
            if (before == HealthState::Healthy && h.state == HealthState::Healthy) return false;
            // An answer on this key proves it works again (a cooldown ran
            // out, or another node's verdict was too pessimistic).
            h.state = HealthState::Healthy;
            h.until_ms = 0;
            return true;
        case Outcome::Unauthorized:
            if (h.state == HealthState::Invalid) return false;
            h.state = HealthState::Invalid;
            h.until_ms = 0;
            return true;
        case Outcome::Exhausted:
            h.state = HealthState::Exhausted;
            h.until_ms = now_ms + policy.exhausted_ms;
            return before != HealthState::Exhausted;
        case Outcome::RateLimited:
            if (h.state == HealthState::Invalid) return false;
            h.state = HealthState::Cooling;
            h.until_ms = until_ms;
            return true;
        case Outcome::Failure:
            if (h.state == HealthState::Invalid) return false;
            if (h.fails == 0 || now_ms - h.window_start_ms > policy.fail_window_ms) {
                h.fails = 0;
                h.window_start_ms = now_ms;
            }
            if (++h.fails < policy.max_fails) return false;
            h.fails = 0;
            h.window_start_ms = 0;
            h.state = HealthState::Breaker;
            h.until_ms = now_ms + policy.breaker_ms;
            return true;
    }
    return false;
}

HealthState effective_state(const KeyHealth &h, int64_t now_ms) {
    if (h.state == HealthState::Healthy || h.state == HealthState::Invalid) return h.state;
    return now_ms < h.until_ms ? h.state : HealthState::Healthy;
}

std::string encode_health(const KeyHealth &h) {
    return std::string(health_name(h.state)) + " " + std::to_string(h.until_ms);
}

std::optional<KeyHealth> decode_health(std::string_view s) {
    size_t sp = s.find(' ');
    if (sp == std::string_view::npos) return std::nullopt;
    auto state = parse_health_name(s.substr(0, sp));
    std::string_view until = s.substr(sp + 1);
    if (!state || until.empty() || until.size() > 18 ||
        !std::all_of(until.begin(), until.end(), ::isdigit))
        return std::nullopt;
    KeyHealth h;
    h.state = *state;
    h.until_ms = std::stoll(std::string(until));
    return h;
}

std::string health_message(std::string_view pid, std::string_view key_id, const KeyHealth &h) {
    return std::string(kMessagePrefix) + std::string(pid) + " " + std::string(key_id) + " " +
           encode_health(h);
}

std::optional<HealthMessage> parse_health_message(std::string_view s) {
    if (s.substr(0, kMessagePrefix.size()) != kMessagePrefix) return std::nullopt;
    s.remove_prefix(kMessagePrefix.size());
    size_t a = s.find(' ');
    if (a == std::string_view::npos) return std::nullopt;
    size_t b = s.find(' ', a + 1);
    if (b == std::string_view::npos) return std::nullopt;
    HealthMessage m;
    m.pid = std::string(s.substr(0, a));
    m.key_id = std::string(s.substr(a + 1, b - a - 1));
    auto h = decode_health(s.substr(b + 1));
    if (m.pid.empty() || !valid_key_id(m.key_id) || !h) return std::nullopt;
    m.health = *h;
    return m;
}

std::vector<std::vector<std::string>> health_write_commands(const Layout &l, std::string_view pid,
                                                            std::string_view provider,
                                                            std::string_view key_id,
                                                            const KeyHealth &h,
                                                            std::string_view at) {
    bool audited = h.state == HealthState::Invalid;
    std::string target = std::string(provider) + "/" + std::string(key_id);
    std::vector<std::vector<std::string>> out{admin::detail::mutation_argv(
        l, admin::detail::kScriptKeyHealth, pid, "gateway", at, l.invalidate_channel(),
        {l.key_health(pid)},
        {std::string(key_id), h.state == HealthState::Healthy ? "" : encode_health(h),
         health_message(pid, key_id, h), target, audited ? "1" : "0"})};
    if (audited && l.cluster())
        out.push_back(admin::detail::global_audit_copy(
            l, admin::detail::audit_fields("gateway", "key.invalid", pid, target, at), ""));
    return out;
}

namespace {

// The leading decimal digits of `v` (1 to 9 of them), or -1; *rest is what
// follows them.
int64_t leading_number(std::string_view v, std::string_view *rest) {
    size_t digits = 0;
    while (digits < v.size() && v[digits] >= '0' && v[digits] <= '9') digits++;
    *rest = v.substr(digits);
    if (digits == 0 || digits > 9) return -1;
    return std::stoll(std::string(v.substr(0, digits)));
}

}  // namespace

HealthPolicy parse_health_policy(const std::vector<std::string_view> &args) {
    HealthPolicy p;
    for (std::string_view a : args) {
        size_t eq = a.find('=');
        std::string_view name = a.substr(0, eq), value = eq == a.npos ? "" : a.substr(eq + 1);
        int64_t *time = name == "exhausted"      ? &p.exhausted_ms
                        : name == "cooling"      ? &p.cooling_ms
                        : name == "fail_timeout" ? &p.fail_window_ms
                        : name == "breaker"      ? &p.breaker_ms
                                                 : nullptr;
        if (time != nullptr) {
            // the same reader as the providers' reset headers ("30s", "5m", "1h")
            int64_t ms = duration_ms(value).value_or(0);
            if (ms <= 0) throw Error("invalid time in \"" + std::string(a) + "\"");
            *time = ms;
        } else if (name == "max_fails") {
            std::string_view rest;
            int64_t n = leading_number(value, &rest);
            if (n < 1 || n > 1000 || !rest.empty())
                throw Error("invalid number in \"" + std::string(a) + "\"");
            p.max_fails = static_cast<uint32_t>(n);
        } else {
            throw Error("unknown parameter \"" + std::string(a) + "\"");
        }
    }
    if (p.max_cooling_ms < p.cooling_ms) p.max_cooling_ms = p.cooling_ms;
    return p;
}

}  // namespace byok
