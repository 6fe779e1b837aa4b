#include <criterion/criterion.h>

#include <string>
#include <vector>

#include "lib/cluster_route.h"
#include "lib/cluster_slot.h"

using namespace byok;
using namespace byok::cluster;

namespace {
using Args = std::vector<std::string_view>;

Reply integer(long long n) {
    Reply r;
    r.type = Reply::Type::Integer;
    r.integer = n;
    return r;
}
Reply str(std::string s) {
    Reply r;
    r.type = Reply::Type::String;
    r.str = std::move(s);
    return r;
}
Reply array(std::vector<Reply> e) {
    Reply r;
    r.type = Reply::Type::Array;
    r.elements = std::move(e);
    return r;
}
}  // namespace

// The reference values of the cluster specification.
Test(cluster_route, i16_key_slot_is_crc16_of_the_hash_tag) {
    cr_assert_eq(crc16_xmodem("123456789"), 0x31C3);
    cr_assert_eq(key_slot("foo"), 12182);
    cr_assert_eq(key_slot("{user1000}.following"), key_slot("user1000"));
    cr_assert_eq(key_slot("byok:project:{p1}"), key_slot("byok:{p1}:keys"));
    cr_assert_eq(key_slot("a{}b"), crc16_xmodem("a{}b") % 16384);  // empty tag: whole key
}

Test(cluster_route, i16_commands_route_by_their_first_key) {
    cr_assert_eq(*routing_key(Args{"EVAL", "script", "2", "k1", "k2", "a"}), "k1");
    cr_assert_eq(*routing_key(Args{"evalsha", "abc", "1", "k1"}), "k1");
    cr_assert(!routing_key(Args{"EVAL", "script", "0", "a"}));
    cr_assert(!routing_key(Args{"EVAL", "script", "x", "a"}));
    cr_assert(!routing_key(Args{"EVAL", "script", "1"}));
    cr_assert_eq(*routing_key(Args{"HGETALL", "byok:project:{p}"}), "byok:project:{p}");
    cr_assert_eq(*routing_key(Args{"XADD", "s", "*", "f", "v"}), "s");
    for (const char *keyless : {"PING", "PUBLISH", "WAIT", "ROLE", "INFO", "SCRIPT", "cluster"})
        cr_assert(!routing_key(Args{keyless, "a", "b"}), "%s", keyless);
    cr_assert(!routing_key(Args{}));
    cr_assert(!routing_key(Args{"GET"}));
}

Test(cluster_route, i16_first_command_of_a_resp_buffer) {
    std::string two = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n";
    auto c = first_command(two);
    cr_assert(c);
    cr_assert_eq(c->size, 20u);
    cr_assert_eq(c->argv.size(), 2u);
    cr_assert_eq(c->argv[1], "k");
    auto next = first_command(std::string_view(two).substr(c->size));
    cr_assert(next && next->argv[0] == "PING" && next->size == two.size() - c->size);
    // A binary argument holding CRLF is read by its length.
    auto bin = first_command("*1\r\n$4\r\na\r\nb\r\n");
    cr_assert(bin && bin->argv[0] == "a\r\nb");
    for (std::string bad : {"", "*0\r\n", "*2\r\n$3\r\nGET\r\n", "*1\r\n$3\r\nGE\r\n",
                            "*1\r\n$3\r\nGETX\r\n", "+OK\r\n", "*1\r\n:3\r\n", "*x\r\n"})
        cr_assert(!first_command(bad), "%s", bad.c_str());
}

Test(cluster_route, i16_redirects) {
    Redirect m = parse_redirect("MOVED 3999 127.0.0.1:6381");
    cr_assert(m.kind == Redirect::Kind::Moved);
    cr_assert_eq(m.slot, 3999);
    cr_assert_eq(m.host, "127.0.0.1");
    cr_assert_eq(m.port, "6381");
    Redirect a = parse_redirect("ASK 1 [::1]:7000");
    cr_assert(a.kind == Redirect::Kind::Ask && a.host == "::1" && a.port == "7000");
    cr_assert(parse_redirect("TRYAGAIN Multiple keys request during rehashing of slot").kind ==
              Redirect::Kind::TryAgain);
    cr_assert(parse_redirect("CLUSTERDOWN The cluster is down").kind ==
              Redirect::Kind::ClusterDown);
    for (const char *bad : {"MOVED 16384 127.0.0.1:1", "MOVED x 127.0.0.1:1", "MOVED 1 127.0.0.1",
                            "MOVED 1 :1", "MOVED 1 h:1 extra", "ERR wrong", "MOVED", "ASK 1"})
        cr_assert(parse_redirect(bad).kind == Redirect::Kind::None, "%s", bad);
}

Test(cluster_route, i16_slot_map_from_cluster_slots) {
    Reply r = array({array({integer(0), integer(5460), array({str("127.0.0.1"), integer(7000)}),
                            array({str("127.0.0.1"), integer(7003)})}),
                     array({integer(5461), integer(16383), array({str(""), integer(7001)})})});
    auto slots = parse_slots(r, "10.0.0.9");
    cr_assert(slots && slots->size() == 2);
    cr_assert_eq((*slots)[0].last, 5460);
    cr_assert_eq((*slots)[0].port, "7000");
    cr_assert_eq((*slots)[1].host, "10.0.0.9");  // "" = the node asked
    Reply out_of_range =
        array({array({integer(0), integer(16384), array({str("h"), integer(1)})})});
    cr_assert(!parse_slots(out_of_range, "h"));
    cr_assert(
        !parse_slots(array({array({integer(9), integer(3), array({str("h"), integer(1)})})}), "h"));
    cr_assert(!parse_slots(str("x"), "h"));
    cr_assert(parse_slots(array({}), "h")->empty());
}
