// Response-body usage scanner (lib/usage_scanner.h): whatever the bytes,
// feeding them in two pieces split anywhere gives the one-shot answer, and
// the SSE dropper only ever removes whole usage-only events.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "lib/usage_scanner.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t cut = data[0] % size;
    std::string_view in(reinterpret_cast<const char *>(data) + 1, size - 1);
    cut = cut > in.size() ? in.size() : cut;

    byok::TokenUsage whole = byok::UsageScanner::scan(in);
    byok::UsageScanner split;
    split.feed(in.substr(0, cut));
    split.feed(in.substr(cut));
    byok::TokenUsage got = split.result();
    if (got.known != whole.known || got.input != whole.input || got.output != whole.output ||
        got.cached != whole.cached || got.cache_write != whole.cache_write)
        abort();
    if (got.cached > got.input) abort();
    {
        byok::UsageScanner once;
        once.feed(in);
        byok::UsageScanner two;
        two.feed(in.substr(0, cut));
        two.feed(in.substr(cut));
        if (once.model() != two.model() || once.model().size() > byok::UsageScanner::kMaxModel)
            abort();
        // Three pieces: a usage object or model value read in place in one
        // scan is gathered across pieces in the other (issue 18).
        size_t cut2 = cut + (in.size() - cut) / 2;
        byok::UsageScanner three;
        three.feed(in.substr(0, cut));
        three.feed(in.substr(cut, cut2 - cut));
        three.feed(in.substr(cut2));
        byok::TokenUsage t = three.result();
        if (three.model() != once.model() || t.known != whole.known || t.input != whole.input ||
            t.output != whole.output || t.cached != whole.cached ||
            t.cache_write != whole.cache_write)
            abort();
    }

    std::string a, b;
    byok::SseUsageDropper one, two;
    one.feed(in, &a);
    one.finish(&a);
    two.feed(in.substr(0, cut), &b);
    two.feed(in.substr(cut), &b);
    two.finish(&b);
    if (a != b || a.size() > in.size()) abort();
    if (!one.dropped() && a != in) abort();
    return 0;
}
