// SSRF after resolution (README "Custom endpoints"): every address a
// tenant-chosen name resolves to is checked by
// byok::admin::resolved_address_problem. Both edges of every refused range,
// and the first address outside it, so that narrowing or widening a range
// by one bit fails here (issue 19).
#include <criterion/criterion.h>

#include <string>

#include "lib/admin.h"

using byok::admin::Config;
using byok::admin::resolved_address_problem;

namespace {

bool refused(const Config &cfg, const char *ip) {
    return !resolved_address_problem(cfg, "tenant.example", ip).empty();
}

void expect_refused(const char *const *ips, size_t n) {
    Config cfg;
    for (size_t i = 0; i < n; ++i) cr_expect(refused(cfg, ips[i]), "%s must be refused", ips[i]);
}

void expect_allowed(const char *const *ips, size_t n) {
    Config cfg;
    for (size_t i = 0; i < n; ++i) cr_expect(!refused(cfg, ips[i]), "%s must be allowed", ips[i]);
}

}  // namespace

#define N(a) (sizeof(a) / sizeof((a)[0]))

Test(ssrf, i19_cgnat_both_edges_and_neighbours) {
    const char *in[] = {"100.64.0.0", "100.64.0.1", "100.100.100.100", "100.127.255.255"};
    const char *out[] = {"100.63.255.255", "100.128.0.0"};
    expect_refused(in, N(in));
    expect_allowed(out, N(out));
}

Test(ssrf, i19_private_loopback_link_local_this_network) {
    const char *in[] = {"10.0.0.0",     "10.255.255.255",  "172.16.0.0",      "172.31.255.255",
                        "192.168.0.0",  "192.168.255.255", "127.0.0.1",       "127.255.255.255",
                        "169.254.0.0",  "169.254.169.254", "169.254.255.255", "0.0.0.0",
                        "0.255.255.255"};
    const char *out[] = {"9.255.255.255",   "11.0.0.0",    "172.15.255.255",  "172.32.0.0",
                         "192.167.255.255", "192.169.0.0", "126.255.255.255", "128.0.0.0",
                         "169.253.255.255", "169.255.0.0", "1.0.0.0",         "8.8.8.8"};
    expect_refused(in, N(in));
    expect_allowed(out, N(out));
}

Test(ssrf, i19_multicast_and_reserved_240) {
    const char *in[] = {"224.0.0.0", "224.0.0.1", "239.255.255.255",
                        "240.0.0.0", "250.1.2.3", "255.255.255.255"};
    const char *out[] = {"223.255.255.255"};
    expect_refused(in, N(in));
    expect_allowed(out, N(out));
}

Test(ssrf, i19_ipv6_loopback_unspecified_ula_link_local_multicast) {
    const char *in[] = {"::1",     "::",      "fc00::1", "fdff:ffff::1",
                        "fe80::1", "febf::1", "ff02::1", "ff00::"};
    const char *out[] = {"2001:4860:4860::8888", "fec0::1", "fbff::1", "::2:0:0:1"};
    expect_refused(in, N(in));
    expect_allowed(out, N(out));
}

Test(ssrf, i19_ipv4_mapped_forms) {
    // ::ffff:a.b.c.d in dotted and in hex form: the embedded IPv4 decides.
    const char *in[] = {"::ffff:127.0.0.1", "::ffff:7f00:1",     "::ffff:10.1.2.3",
                        "::ffff:a01:203",   "::ffff:100.64.0.1", "::ffff:169.254.169.254",
                        "::ffff:224.0.0.1", "::ffff:0.0.0.0",    "::FFFF:192.168.1.1"};
    const char *out[] = {"::ffff:8.8.8.8", "::ffff:808:808", "::ffff:100.128.0.0"};
    expect_refused(in, N(in));
    expect_allowed(out, N(out));
}

Test(ssrf, i19_nat64_embeds_ipv4) {
    const char *in[] = {"64:ff9b::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::10.0.0.1",
                        "64:ff9b::100.64.0.0", "64:ff9b::a9fe:a9fe"};
    const char *out[] = {"64:ff9b::8.8.8.8", "64:ff9b::808:808"};
    expect_refused(in, N(in));
    expect_allowed(out, N(out));
}

Test(ssrf, i19_ipv4_compatible_embeds_ipv4) {
    // ::/96 (deprecated IPv4-compatible) carries an IPv4 address too.
    const char *in[] = {"::127.0.0.1", "::7f00:1", "::10.0.0.1", "::100.127.255.255",
                        "::192.168.0.1"};
    const char *out[] = {"::8.8.8.8", "::808:808"};
    expect_refused(in, N(in));
    expect_allowed(out, N(out));
}

Test(ssrf, i19_not_an_address_is_refused) {
    Config cfg;
    cr_expect(refused(cfg, ""));
    cr_expect(refused(cfg, "tenant.example"));
    cr_expect(refused(cfg, "127.1"));
    cr_expect(refused(cfg, "1.2.3.4.5"));
}

Test(ssrf, i19_allow_endpoint_exceptions) {
    Config cfg;
    cfg.allow_endpoint = {"models.internal", "10.1.0.0/16", "192.168.7.7", "fd00::/8"};
    // by name (the tenant's host), by CIDR and by single address
    cr_expect(refused(cfg, "10.9.9.9"));
    cr_expect(resolved_address_problem(cfg, "models.internal", "10.9.9.9").empty());
    cr_expect(resolved_address_problem(cfg, "MODELS.internal", "127.0.0.1").empty());
    cr_expect(resolved_address_problem(cfg, "other.example", "10.1.255.255").empty());
    cr_expect(!resolved_address_problem(cfg, "other.example", "10.2.0.0").empty());
    cr_expect(resolved_address_problem(cfg, "other.example", "192.168.7.7").empty());
    cr_expect(!resolved_address_problem(cfg, "other.example", "192.168.7.8").empty());
    cr_expect(resolved_address_problem(cfg, "other.example", "fd12::1").empty());
    cr_expect(!resolved_address_problem(cfg, "other.example", "fc00::1").empty());
}
