// Request-body model extraction and rewrite (lib/body.h). When a model is
// found, the rewritten body must still be a valid object whose top-level
// model is the new value, with everything outside the span unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "lib/body.h"
#include "lib/util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string_view in(reinterpret_cast<const char *>(data), size);
    std::optional<byok::ModelSpan> span;
    try {
        span = byok::find_model(in);
    } catch (const byok::Error &) {
        return 0;
    }
    if (!span) return 0;
    if (span->begin >= span->end || span->end > in.size() || in[span->begin] != '"' ||
        in[span->end - 1] != '"')
        abort();

    // A few replacements: the prefix-stripped form the gateway sends, and
    // values that need escaping.
    const std::string candidates[] = {
        "gpt-4o",
        span->model.substr(span->model.find('/') == std::string::npos ? 0
                                                                      : span->model.find('/') + 1),
        std::string("q\"uote\\back\nnl\x01\x7f\xc3\xa9", 17),
        "",
    };
    for (const std::string &m : candidates) {
        std::string out = byok::replace_model(in, *span, m);
        if (out.compare(0, span->begin, in.substr(0, span->begin)) != 0) abort();
        if (std::string_view(out).substr(out.size() - (in.size() - span->end)) !=
            in.substr(span->end))
            abort();
        std::optional<byok::ModelSpan> again;
        try {
            again = byok::find_model(out);
        } catch (const byok::Error &) {
            abort();  // the rewrite broke the JSON
        }
        if (!again || again->model != m) abort();
    }
    return 0;
}
