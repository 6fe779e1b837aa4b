// Provider catalog loader (lib/catalog.h): any YAML either throws
// byok::Error or yields providers with parsed URLs and the lookups work.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "lib/catalog.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string text(reinterpret_cast<const char *>(data), size);
    byok::Catalog cat;
    try {
        cat = byok::Catalog::parse_yaml(text, "fuzz.yaml");
    } catch (const byok::Error &) {
        return 0;
    }
    for (const byok::Provider &p : cat.providers()) {
        if (cat.find(p.id) == nullptr) abort();
        (void)p.base_url.origin();
        (void)p.openai_base.authority();
        for (const std::string &g : p.models) (void)cat.match_model(g);
        (void)byok::key_hint(p, p.key_prefix + "abcdefgh1234");
        (void)byok::upstream_headers(p, "k");
    }
    (void)cat.match_model("gpt-4o");
    return 0;
}
