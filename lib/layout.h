// The one place that knows the Redis key layout (SPEC §6).
#pragma once

#include <string>
#include <string_view>

namespace byok {

// Usage and meter day keys expire this many days after their last write
// (the glue's EXPIRE in ngx_byok_usage.cpp is derived from it); a project's deletion
// names the keys of that window instead of scanning the keyspace.
constexpr int kUsageRetentionDays = 90;

class Layout {
  public:
    explicit Layout(std::string prefix = "byok:") : p_(std::move(prefix)) {}
    const std::string &prefix() const { return p_; }
    // The store is a Redis Cluster (byok_redis cluster=): no script may touch
    // keys of two hash slots, so what a standalone script does with global
    // keys next to a project's `{pid}` keys happens in per-slot steps.
    bool cluster() const { return cluster_; }
    void set_cluster(bool on) { cluster_ = on; }

    std::string project(std::string_view pid) const { return p_ + "project:{" + s(pid) + "}"; }
    std::string projects() const { return p_ + "projects"; }
    std::string apikey(std::string_view sha256_hex) const { return p_ + "apikey:" + s(sha256_hex); }
    std::string apikeys(std::string_view pid) const { return tagged(pid, "apikeys"); }
    std::string keys(std::string_view pid) const { return tagged(pid, "keys"); }
    std::string servers(std::string_view pid) const { return tagged(pid, "servers"); }
    // Provider-key health (key id -> lib/key_health.h wire form) and last use
    // (provider key id, or "gw:<gateway key id>" -> unix seconds).
    std::string key_health(std::string_view pid) const { return tagged(pid, "key_health"); }
    std::string last_used(std::string_view pid) const { return tagged(pid, "last_used"); }
    std::string usage(std::string_view pid, std::string_view yyyymmdd) const {
        return tagged(pid, "usage:") + s(yyyymmdd);
    }
    // Token and cost counters (field format: lib/metering.h).
    std::string meter(std::string_view pid, std::string_view yyyymmdd) const {
        return tagged(pid, "meter:") + s(yyyymmdd);
    }
    std::string meter_all(std::string_view yyyymmdd) const { return p_ + "meter:" + s(yyyymmdd); }
    std::string usage_events() const { return p_ + "usage:events"; }
    // Project-limit counters (lib/limits.h): `what` requests|tokens|cost,
    // `window` the minute, day or month they count.
    std::string limit(std::string_view pid, std::string_view what, std::string_view window) const {
        return tagged(pid, "limit:") + s(what) + ":" + s(window);
    }
    std::string audit() const { return p_ + "audit"; }
    // The project's own audit stream (same entries as audit(), same ids).
    // admin_scripts.cpp spells it from audit() inside Lua: keep them in step.
    std::string project_audit(std::string_view pid) const { return tagged(pid, "audit"); }
    std::string invalidate_channel() const { return p_ + "invalidate"; }

  private:
    static std::string s(std::string_view v) { return std::string(v); }
    std::string tagged(std::string_view pid, std::string_view what) const {
        return p_ + "{" + s(pid) + "}:" + s(what);
    }
    std::string p_;
    bool cluster_ = false;
};

// Project ids: [a-z0-9][a-z0-9_-]{0,63}. Server ids and gateway-key ids use
// the same rule.
bool valid_id(std::string_view id);

}  // namespace byok
